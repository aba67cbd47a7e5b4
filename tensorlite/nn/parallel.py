"""Data parallelism: ``DistributedDataParallel``, as ``torch.nn.parallel``.

Every rank holds a full copy of the model, runs forward and backward on its own share
of the batch, and then the gradients are averaged over the ranks, so every rank takes
the same optimizer step and the copies stay identical::

    import tensorlite.distributed as dist
    from tensorlite.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group()
    model = DDP(GPT(config))                  # rank 0's weights on every rank
    optimizer = model.module.configure_optimizers(...)
    for step in range(steps):
        with model.no_sync():                 # accumulate locally, no communication
            for x, y in micro_batches[:-1]:
                _, loss = model(x, y)
                (loss / accum).backward()
                model.sync_gradients()        # does nothing inside no_sync()
        _, loss = model(x_last, y_last)
        (loss / accum).backward()
        model.sync_gradients()                # one averaging per optimizer step
        optimizer.step()
        optimizer.zero_grad()

Why an explicit ``sync_gradients()``: PyTorch starts the averaging from hooks that fire
inside ``backward()``. tensorlite's engine has no hooks, and the averaging is only worth
starting early if it overlaps with the rest of backward; ``benchmarks/bench_distributed.py``
measures it at 1 to 3 % of a step here, less than a thread taken from the computation to
drive MPI in the background would cost. So the trainer calls it after backward, outside
the engine, and ``no_sync()`` turns it off exactly where PyTorch's ``no_sync()`` turns
off the hooks.

Buckets: the gradients are copied into a few flat arrays ("buckets", one dtype each,
about ``bucket_cap_mb`` megabytes), each averaged in one ``MPI_Allreduce``; afterwards
every ``p.grad`` is a view into its bucket, so nothing is copied back. A model of a
million parameters is one call, not one per parameter. These are the same contiguous
layout an AdamW flat buffer uses, so the optimizer's gather is one straight copy.
"""

import contextlib

import numpy as np

from tensorlite import distributed as dist
from tensorlite.nn import Module

__all__ = ["DistributedDataParallel"]


class _Bucket:
    """Some parameters of one dtype, their gradients stored back to back in one flat array.

    After the gradients, one more number per parameter: 1 if this rank has a gradient for
    it, else 0. The allreduce sums these flags along with the gradients, so one message
    also tells every rank which parameters have a gradient anywhere.
    """

    def __init__(self, params):
        self.params = params
        sizes = [p.data.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.size = int(self.offsets[-1])
        self.flat = np.zeros(self.size + len(params), dtype=params[0].data.dtype)
        self.flags = self.flat[self.size:]  # (len(params),) view

    def views(self):
        """Each parameter's slice of the flat array, shaped like the parameter."""
        for i, p in enumerate(self.params):
            yield p, self.flat[self.offsets[i]:self.offsets[i + 1]].reshape(p.data.shape)

    def pack(self, attribute):
        """Copy every p.grad (or p.data) into the flat array; a missing gradient counts as
        zeros and sets the parameter's flag to 0."""
        for i, (p, view) in enumerate(self.views()):
            value = getattr(p, attribute)
            self.flags[i] = value is not None
            if value is None:
                view.fill(0)
            elif value is not view:  # after an earlier sync p.grad may already be the view
                view[...] = value

    def unpack_data(self):
        for p, view in self.views():
            p.data[...] = view

    def unpack_grads(self):
        """Every p.grad becomes a view of its averaged slice; None where no rank had one."""
        for i, (p, view) in enumerate(self.views()):
            p.grad = view if self.flags[i] > 0 else None


def _buckets(params, cap_bytes):
    """Group parameters into buckets: one dtype each, at most `cap_bytes` unless a single
    parameter is larger. Parameters are taken in reverse order, the order backward
    finishes their gradients (PyTorch does the same)."""
    by_dtype = {}
    for p in reversed(params):
        by_dtype.setdefault(p.data.dtype, []).append(p)
    buckets = []
    for same_dtype in by_dtype.values():
        current, size = [], 0
        for p in same_dtype:
            if current and size + p.data.nbytes > cap_bytes:
                buckets.append(_Bucket(current))
                current, size = [], 0
            current.append(p)
            size += p.data.nbytes
        buckets.append(_Bucket(current))
    return buckets


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training over the ranks of ``tensorlite.distributed``.

    At construction rank 0's parameters are broadcast to every rank (tensorlite modules
    hold no buffers besides parameters). Calling the wrapper calls ``module``.
    ``sync_gradients()`` averages the gradients over the ranks, in place; call it after
    ``backward()`` and before clipping or the optimizer step. Inside ``no_sync()`` it does
    nothing, so gradients accumulate locally until the last micro-batch.

    ``bucket_cap_mb``: the most megabytes one allreduce carries (PyTorch's default, 25).
    Large buckets mean few calls; the cap keeps each message well inside MPI's count limit.
    """

    def __init__(self, module, bucket_cap_mb=25):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps a Module, got {type(module).__name__}")
        if not dist.is_initialized():
            raise RuntimeError("DistributedDataParallel: the process group is not initialised; "
                               "call tensorlite.distributed.init_process_group() first")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.module = module
        self.world_size = dist.get_world_size()
        self.bucket_cap_mb = bucket_cap_mb
        self.require_backward_grad_sync = True  # PyTorch's name for the flag no_sync() clears
        params = list(module.parameters())
        if not params:
            raise ValueError("DistributedDataParallel: the module has no parameters")
        self._buckets = _buckets(params, int(bucket_cap_mb * 2**20))
        self._broadcast_parameters()

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def _broadcast_parameters(self):
        """Rank 0's values everywhere: the buckets carry parameters once, at construction."""
        for bucket in self._buckets:
            bucket.pack("data")
            dist.broadcast(bucket.flat, src=0)
            bucket.unpack_data()
            bucket.flat.fill(0)

    @contextlib.contextmanager
    def no_sync(self):
        """Inside this block ``sync_gradients()`` does nothing (gradient accumulation)."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    def sync_gradients(self):
        """Average every parameter's gradient over the ranks, in place. Returns True if it did.

        Every rank must call it the same number of times. A parameter without a gradient
        on some rank counts as zeros there; one without a gradient on every rank keeps
        ``grad = None`` (the optimizer skips it, as it would in a single process).
        """
        if not self.require_backward_grad_sync:
            return False
        for bucket in self._buckets:
            bucket.pack("grad")
            dist.all_reduce(bucket.flat, op="avg")  # gradients and has-gradient flags at once
            bucket.unpack_grads()
        return True

    def extra_repr(self):
        sizes = ", ".join(f"{b.flat.nbytes / 2**20:.1f}" for b in self._buckets)
        return f"world_size={self.world_size}, buckets=[{sizes}] MB"
