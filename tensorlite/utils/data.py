"""Datasets and mini-batch loading, as ``torch.utils.data``, in the calling process.

    from tensorlite.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    for epoch in range(epochs):
        for xb, yb in loader:          # a new order every epoch
            ...

* A dataset is any object with ``__getitem__(index)`` and ``__len__()`` (``Dataset`` is the
  optional base class); ``TensorDataset(*tensors)`` indexes several tensors of the same length
  along their first axis, ``Subset`` and ``random_split`` pick parts of one.
* ``DataLoader`` draws indices from a sampler (``SequentialSampler``, or ``RandomSampler``
  with ``shuffle=True``), groups them with ``BatchSampler`` and merges each group's samples
  with ``default_collate``: Tensors and arrays are stacked along a new first axis, numbers
  become a Tensor (int64, float64 or bool), and tuples, lists, dicts and namedtuples are
  collated field by field. As in torch, a tuple sample gives a *list* of batched fields, so
  ``for xb, yb in loader`` unpacks them.
* Shuffling draws one permutation per epoch (when iteration starts) from ``generator``: a
  ``numpy.random.Generator`` (or ``RandomState``) of your own, or by default tensorlite's
  global generator (``tl.rng()``), so ``tl.manual_seed(s)`` makes a run repeatable, as
  ``torch.manual_seed`` does.
* ``num_workers`` is accepted for torch programs; the samples are always loaded in this process,
  in the same order as with ``num_workers=0``. ``pin_memory`` and the other worker options
  change nothing here.

A ``TensorDataset`` of tensors that do not require grad, loaded with the default collate, is
batched by indexing each tensor once per batch (one gather instead of a Python loop over
samples); the batches are the same.
"""

import collections.abc
import math
import numbers

import numpy as np

from tensorlite.ops import stack
from tensorlite.tensor import Tensor, rng

__all__ = [
    "Dataset", "TensorDataset", "Subset", "random_split", "Sampler", "SequentialSampler",
    "RandomSampler", "BatchSampler", "default_collate", "DataLoader",
]


def _generator(generator, op):
    """The NumPy generator to draw from: ``generator``, or tensorlite's global one (read at
    each draw, so that ``tl.manual_seed`` after building a loader still counts)."""
    if generator is None:
        return rng()
    if isinstance(generator, (np.random.Generator, np.random.RandomState)):
        return generator
    raise TypeError(f"{op}: generator must be a numpy.random.Generator (tensorlite's "
                    f"generators are: tl.rng()), a RandomState or None, got "
                    f"{type(generator).__name__}")


def _check_generator(generator, op):
    if generator is not None:
        _generator(generator, op)
    return generator


def _positive_int(value, name, op, allow_none=False):
    if value is None and allow_none:
        return value
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{op}: {name} should be a positive integer value, but got "
                         f"{name}={value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------

class Dataset:
    """Base class of map-style datasets: subclasses define ``__getitem__(index)`` and
    ``__len__()``. Any object with those two methods works with ``DataLoader``."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} does not define __getitem__")

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} does not define __len__")


class TensorDataset(Dataset):
    """Samples are ``(t[i] for t in tensors)``: several tensors (or arrays) indexed together
    along their first axis, which must have the same length in all of them."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset: give at least one tensor")
        tensors = tuple(t if isinstance(t, Tensor) else Tensor(np.asarray(t)) for t in tensors)
        for i, t in enumerate(tensors):
            if t.ndim == 0:
                raise ValueError(f"TensorDataset: tensor {i} is a scalar (shape ()); every "
                                 f"tensor needs a first axis to index samples along")
        lengths = [t.shape[0] for t in tensors]
        if len(set(lengths)) != 1:
            raise ValueError(f"TensorDataset: size mismatch between tensors: every tensor needs "
                             f"the same first dimension, got shapes "
                             f"{[tuple(t.shape) for t in tensors]}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = indices

    def __getitem__(self, index):
        if isinstance(index, list):
            return self.dataset[[self.indices[i] for i in index]]
        return self.dataset[self.indices[index]]

    def __len__(self):
        return len(self.indices)


def random_split(dataset, lengths, generator=None):
    """Split ``dataset`` into non-overlapping ``Subset``s of the given ``lengths`` (counts that
    sum to ``len(dataset)``, or fractions that sum to 1: the remainder of rounding down is
    handed out one by one from the first subset), in a random order drawn from ``generator``
    (default: tensorlite's global generator)."""
    n = len(dataset)
    lengths = list(lengths)
    if lengths and math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        for i, fraction in enumerate(lengths):
            if not 0 <= fraction <= 1:
                raise ValueError(f"random_split: fraction at index {i} is not between 0 and 1")
        counts = [int(math.floor(n * fraction)) for fraction in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(lengths) != n:
        raise ValueError(f"random_split: sum of input lengths ({sum(lengths)}) does not equal "
                         f"the length of the input dataset ({n})")
    order = _generator(generator, "random_split").permutation(n).tolist()
    subsets, start = [], 0
    for length in lengths:
        subsets.append(Subset(dataset, order[start:start + length]))
        start += length
    return subsets


# ----------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------

class Sampler:
    """Base class of samplers: iterables of dataset indices (with ``__len__``)."""

    def __iter__(self):
        raise NotImplementedError

    def __len__(self):
        raise NotImplementedError


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler(Sampler):
    """A random order of the indices, drawn afresh each time iteration starts (a permutation;
    with ``replacement=True``, ``num_samples`` independent draws)."""

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        if not isinstance(replacement, bool):
            raise TypeError(f"RandomSampler: replacement should be a boolean value, but got "
                            f"replacement={replacement!r}")
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = _positive_int(num_samples, "num_samples", "RandomSampler",
                                          allow_none=True)
        self.generator = _check_generator(generator, "RandomSampler")

    @property
    def num_samples(self):
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        n = len(self.data_source)
        generator = _generator(self.generator, "RandomSampler")
        if self.replacement:
            return iter(generator.integers(0, n, size=self.num_samples).tolist()
                        if isinstance(generator, np.random.Generator)
                        else generator.randint(0, n, size=self.num_samples).tolist())
        rounds = -(-self.num_samples // n) if n else 0
        order = [i for _ in range(rounds) for i in generator.permutation(n).tolist()]
        return iter(order[:self.num_samples])

    def __len__(self):
        return self.num_samples


class BatchSampler(Sampler):
    """Lists of ``batch_size`` indices from ``sampler``; the last one shorter unless
    ``drop_last``, which leaves it out."""

    def __init__(self, sampler, batch_size, drop_last):
        self.batch_size = _positive_int(batch_size, "batch_size", "BatchSampler")
        if not isinstance(drop_last, bool):
            raise ValueError(f"BatchSampler: drop_last should be a boolean value, but got "
                             f"drop_last={drop_last!r}")
        self.sampler = sampler
        self.drop_last = drop_last

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return -(-len(self.sampler) // self.batch_size)


# ----------------------------------------------------------------------------------------------
# Collation
# ----------------------------------------------------------------------------------------------

def _stack_tensors(batch):
    if any(t.requires_grad for t in batch):
        return stack(list(batch), 0)  # keeps the graph
    return Tensor(np.stack([t.data for t in batch]))


def default_collate(batch):
    """Merge a list of samples into one batch, as torch's ``default_collate``.

    Tensors and NumPy arrays are stacked into a Tensor with a new first axis (shapes must
    agree); Python ints, floats and bools become an int64, float64 or bool Tensor; NumPy
    scalars a Tensor of their dtype; strings stay a list; dicts, namedtuples, tuples and lists
    are collated field by field (a tuple or list sample gives a list, as in torch).
    """
    elem = batch[0]
    if isinstance(elem, Tensor):
        shapes = {tuple(t.shape) for t in batch}
        if len(shapes) > 1:
            raise RuntimeError(f"default_collate: stack expects each tensor to be equal size, "
                               f"got shapes {sorted(shapes)}")
        return _stack_tensors(batch)
    if isinstance(elem, np.ndarray):
        if elem.dtype.kind in "SaUO":
            raise TypeError(f"default_collate: batch must contain tensors, numpy arrays, "
                            f"numbers, dicts or lists; found an array of dtype {elem.dtype}")
        shapes = {a.shape for a in batch}
        if len(shapes) > 1:
            raise RuntimeError(f"default_collate: stack expects each array to be equal size, "
                               f"got shapes {sorted(shapes)}")
        return Tensor(np.stack(batch))
    if isinstance(elem, np.generic) and elem.dtype.kind not in "SaUO":
        return Tensor(np.array(batch))
    if isinstance(elem, (bool, np.bool_)):
        return Tensor(np.array(batch, dtype=np.bool_))
    if isinstance(elem, numbers.Integral):
        return Tensor(np.array(batch, dtype=np.int64))
    if isinstance(elem, numbers.Real):
        return Tensor(np.array(batch, dtype=np.float64))
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, collections.abc.Mapping):
        return {key: default_collate([sample[key] for sample in batch]) for key in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(list(fields)) for fields in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if any(len(sample) != size for sample in batch):
            raise RuntimeError("default_collate: each element in list of batch should be of "
                               "equal size")
        return [default_collate(list(fields)) for fields in zip(*batch)]
    raise TypeError(f"default_collate: batch must contain tensors, numpy arrays, numbers, "
                    f"dicts or lists; found {type(elem).__name__}")


# ----------------------------------------------------------------------------------------------
# The loader
# ----------------------------------------------------------------------------------------------

class DataLoader:
    """Iterate over ``dataset`` in mini-batches, as ``torch.utils.data.DataLoader`` with
    ``num_workers=0``.

    ``DataLoader(dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None,
    num_workers=0, collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
    worker_init_fn=None, multiprocessing_context=None, generator=None, *,
    prefetch_factor=None, persistent_workers=False, pin_memory_device="")``

    * ``len(loader)``: the number of batches, ``ceil(len(dataset) / batch_size)`` (rounded
      down with ``drop_last=True``, which leaves out a last incomplete batch).
    * ``shuffle=True``: a new random order each epoch, drawn from ``generator`` (default:
      tensorlite's global generator, so ``tl.manual_seed`` makes it repeatable).
    * ``sampler`` (an iterable of indices) replaces the order; ``batch_sampler`` (an iterable
      of index lists) replaces the batching; ``collate_fn`` replaces ``default_collate``;
      ``batch_size=None`` yields single samples without collating.

    Everything runs in this process: ``num_workers``, ``pin_memory`` and the other worker
    options are accepted and change nothing (the batches are the same).
    """

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
                 worker_init_fn=None, multiprocessing_context=None, generator=None, *,
                 prefetch_factor=None, persistent_workers=False, pin_memory_device="",
                 in_order=True):
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(f"DataLoader: dataset must have __getitem__ and __len__ (a "
                            f"map-style dataset), got {type(dataset).__name__}")
        if not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers option should be non-negative; use "
                             f"num_workers=0 to disable multiprocessing, got {num_workers!r}")
        if timeout < 0:
            raise ValueError(f"DataLoader: timeout option should be non-negative, got {timeout}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"DataLoader: drop_last should be a boolean value, but got "
                             f"drop_last={drop_last!r}")
        _check_generator(generator, "DataLoader")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("DataLoader: batch_sampler option is mutually exclusive with "
                                 "batch_size, shuffle, sampler, and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None:
            if drop_last:
                raise ValueError("DataLoader: batch_size=None option disables auto-batching and "
                                 "is mutually exclusive with drop_last")
        else:
            batch_size = _positive_int(batch_size, "batch_size", "DataLoader")

        if sampler is None:
            sampler = (RandomSampler(dataset, generator=generator) if shuffle
                       else SequentialSampler(dataset))
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        self.pin_memory = pin_memory
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.generator = generator
        self.prefetch_factor = prefetch_factor
        self.persistent_workers = persistent_workers

    def _fast_batches(self):
        """True when batches can be gathered from the dataset's tensors directly."""
        return (type(self.dataset) is TensorDataset and self.collate_fn is default_collate
                and not any(t.requires_grad for t in self.dataset.tensors))

    def __iter__(self):
        if self.batch_sampler is None:  # batch_size=None: single samples, not collated
            for index in self.sampler:
                yield self.dataset[index]
            return
        if self._fast_batches():
            arrays = [t.data for t in self.dataset.tensors]
            for indices in self.batch_sampler:
                indices = np.asarray(indices, dtype=np.int64)
                yield [Tensor(a[indices]) for a in arrays]
            return
        for indices in self.batch_sampler:
            yield self.collate_fn([self.dataset[i] for i in indices])

    def __len__(self):
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        return len(self.sampler)
