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
        for i, (x, y) in enumerate(my_micro_batches):
            last = i == len(my_micro_batches) - 1
            with contextlib.nullcontext() if last else model.no_sync():
                _, loss = model(x, y)
                (loss / len(my_micro_batches)).backward()
                model.sync_gradients()        # averages on the last micro-batch only
        optimizer.step()
        optimizer.zero_grad()

(Calling ``sync_gradients()`` once after the micro-batch loop does the same.)

Why an explicit ``sync_gradients()`` rather than hooks inside ``backward()`` as in
PyTorch: hooks are there to start the averaging early, overlapped with the rest of
backward, and that does not pay here. ``benchmarks/bench_distributed.py`` measures it:
with MPICH a nonblocking allreduce advances only inside MPI calls, so one started before
backward and waited for after it took as long as backward followed by a blocking one
(shakespeare-cpu, 2 ranks: 428 against 430 ms, backward alone 410 ms, on the loaded
2-core machine); MPICH's progress thread (MPIR_CVAR_ASYNC_PROGRESS=1) takes a core from
the computation and doubled backward instead. (The engine's tensor hooks also fire
before a gradient is accumulated into ``.grad``, and there is no hook at the end of
backward.) ``no_sync()`` turns ``sync_gradients()`` off exactly where PyTorch's turns off
the hooks, so code written for PyTorch maps one to one.

Buckets: the gradients are copied into a few flat arrays ("buckets", one dtype each, at
most ``bucket_cap_mb`` megabytes), each averaged in one ``MPI_Allreduce``; afterwards
every ``p.grad`` is a view into its bucket, so nothing is copied back. GPT's
shakespeare-cpu model (3.2 MB of gradients) is one call per step, gpt-mini (43 MB) two.
The layout is the one an AdamW flat buffer uses, so the optimizer gathers the averaged
gradients with one straight copy.
"""

import contextlib

import numpy as np

from tensorlite import distributed as dist
from tensorlite.nn import Module
from tensorlite.tensor import Tensor

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
            if isinstance(value, Tensor):  # p.grad
                value = value.data
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
            p.grad = Tensor._make(view, False) if self.flags[i] > 0 else None


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

    At construction rank 0's parameters and buffers are broadcast to every rank (buffers
    only then, since no tensorlite layer updates its buffers in training). Calling the
    wrapper calls ``module``.
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
        """Rank 0's values everywhere: the buckets carry parameters once, at construction.
        Buffers (masks, running statistics; any dtype) go one by one, as raw bytes."""
        for bucket in self._buckets:
            bucket.pack("data")
            dist.broadcast(bucket.flat, src=0)
            bucket.unpack_data()
            bucket.flat.fill(0)
        for buffer in self.module.buffers():
            values = np.array(buffer.data, order="C", copy=True)
            dist.broadcast(values.reshape(-1).view(np.uint8), src=0)
            if buffer.data.flags.writeable:
                buffer.data[...] = values  # in place: views of the buffer see it too
            else:
                buffer.data = values

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
