"""tensorlite.utils.data: TensorDataset, DataLoader (batching, drop_last, shuffling, collation),
samplers and random_split, against torch.utils.data where the two can be compared."""

import collections

import numpy as np
import pytest

import tensorlite as tl
from tensorlite.utils.data import (
    BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, Subset, TensorDataset,
    default_collate, random_split,
)


def numbered(n, width=3):
    """x[i] = [i, i, ...] (float32), y[i] = i (int64): a sample's values name it."""
    x = tl.Tensor(np.repeat(np.arange(n, dtype=np.float32)[:, None], width, axis=1))
    return TensorDataset(x, tl.arange(n))


def test_tl_utils_data_is_the_module():
    import tensorlite.utils.data as data
    assert tl.utils.data is data
    assert data.DataLoader is DataLoader


# ----------------------------------------------------------------------------------------------
# TensorDataset
# ----------------------------------------------------------------------------------------------

def test_tensor_dataset_indexes_every_tensor():
    x, y = tl.randn(5, 2, 3), tl.arange(5)
    dataset = TensorDataset(x, y)
    assert len(dataset) == 5
    xi, yi = dataset[3]
    np.testing.assert_array_equal(xi.data, x.data[3])
    assert int(yi) == 3
    assert dataset.tensors[0] is x
    wrapped = TensorDataset(np.zeros((4, 2)))  # arrays are wrapped
    assert isinstance(wrapped.tensors[0], tl.Tensor) and len(wrapped) == 4


def test_tensor_dataset_errors():
    with pytest.raises(ValueError, match=r"size mismatch .* \[\(5, 2\), \(4,\)\]"):
        TensorDataset(tl.zeros(5, 2), tl.zeros(4))
    with pytest.raises(ValueError, match="at least one"):
        TensorDataset()
    with pytest.raises(ValueError, match="scalar"):
        TensorDataset(tl.tensor(1.0))


# ----------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,batch_size,drop_last,sizes", [
    (10, 4, False, [4, 4, 2]),
    (10, 4, True, [4, 4]),
    (8, 4, True, [4, 4]),
    (3, 5, False, [3]),
    (3, 5, True, []),
    (5, 1, False, [1] * 5),
])
def test_batches_in_order_with_and_without_drop_last(n, batch_size, drop_last, sizes):
    loader = DataLoader(numbered(n), batch_size=batch_size, drop_last=drop_last)
    assert len(loader) == len(sizes)
    batches = list(loader)
    assert [len(y) for _, y in batches] == sizes
    seen = np.concatenate([y.data for _, y in batches]) if batches else np.array([], np.int64)
    np.testing.assert_array_equal(seen, np.arange(sum(sizes)))
    for x, y in batches:
        assert isinstance(x, tl.Tensor) and isinstance(y, tl.Tensor)
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert tuple(x.shape) == (len(y), 3)
        np.testing.assert_array_equal(x.data[:, 0], y.data)


def test_default_batch_size_is_one():
    loader = DataLoader(numbered(3))
    assert loader.batch_size == 1 and len(loader) == 3
    x, y = next(iter(loader))
    assert tuple(x.shape) == (1, 3) and tuple(y.shape) == (1,)


def test_batches_match_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((11, 2, 3))
    y = np.arange(11)
    ours = list(DataLoader(TensorDataset(tl.Tensor(x), tl.tensor(y)), batch_size=4))
    theirs = list(torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)), batch_size=4))
    assert len(ours) == len(theirs)
    for batch, torch_batch in zip(ours, theirs):
        assert type(batch) is type(torch_batch) is list  # as torch: a list of fields
        for a, b in zip(batch, torch_batch):
            assert a.dtype == b.numpy().dtype
            np.testing.assert_array_equal(a.data, b.numpy())


# ----------------------------------------------------------------------------------------------
# Shuffling
# ----------------------------------------------------------------------------------------------

def epoch_order(loader):
    return np.concatenate([y.data for _, y in loader]).tolist()


def test_shuffle_sees_every_sample_once_per_epoch_in_a_new_order():
    loader = DataLoader(numbered(23), batch_size=5, shuffle=True,
                        generator=np.random.default_rng(0))
    orders = [epoch_order(loader) for _ in range(4)]
    for order in orders:
        assert sorted(order) == list(range(23))
    assert len({tuple(order) for order in orders}) == 4
    assert orders[0] != list(range(23))


def test_shuffle_with_drop_last_sees_distinct_samples():
    loader = DataLoader(numbered(23), batch_size=5, shuffle=True, drop_last=True,
                        generator=np.random.default_rng(1))
    order = epoch_order(loader)
    assert len(order) == 20 and len(set(order)) == 20


def test_shuffle_is_reproducible_with_a_seeded_generator():
    def orders(seed):
        loader = DataLoader(numbered(17), batch_size=4, shuffle=True,
                            generator=np.random.default_rng(seed))
        return [epoch_order(loader) for _ in range(3)]

    assert orders(7) == orders(7)
    assert orders(7) != orders(8)


def test_shuffle_defaults_to_the_global_generator():
    loader = DataLoader(numbered(17), batch_size=4, shuffle=True)
    tl.manual_seed(3)
    first = [epoch_order(loader) for _ in range(2)]
    tl.manual_seed(3)  # seeding after the loader was built counts
    assert [epoch_order(loader) for _ in range(2)] == first
    assert first[0] != first[1]
    tl.manual_seed(3)
    rebuilt = DataLoader(numbered(17), batch_size=4, shuffle=True)
    assert epoch_order(rebuilt) == first[0]


def test_tensorlite_generator_is_accepted():
    tl.manual_seed(11)
    order = epoch_order(DataLoader(numbered(9), batch_size=2, shuffle=True, generator=tl.rng()))
    assert sorted(order) == list(range(9))


def test_random_sampler_with_replacement():
    sampler = RandomSampler(range(5), replacement=True, num_samples=50,
                            generator=np.random.default_rng(0))
    draws = list(sampler)
    assert len(sampler) == 50 and len(draws) == 50 and set(draws) <= set(range(5))
    assert len(set(draws)) > 1


def test_random_sampler_num_samples_beyond_the_dataset():
    draws = list(RandomSampler(range(4), num_samples=10, generator=np.random.default_rng(0)))
    assert len(draws) == 10
    assert sorted(draws[:4]) == sorted(draws[4:8]) == [0, 1, 2, 3]


# ----------------------------------------------------------------------------------------------
# Generic datasets and collation
# ----------------------------------------------------------------------------------------------

class Squares(Dataset):
    """Samples of several kinds, to exercise default_collate."""

    Pair = collections.namedtuple("Pair", "a b")

    def __len__(self):
        return 7

    def __getitem__(self, i):
        return {"x": np.full((2, 2), i, dtype=np.float64), "i": i, "f": i / 2,
                "flag": i % 2 == 0, "name": f"s{i}", "pair": self.Pair(i, [i, -i]),
                "t": tl.tensor([i, i * i])}


def test_generic_dataset_is_collated_field_by_field():
    batches = list(DataLoader(Squares(), batch_size=3))
    assert len(batches) == 3
    batch = batches[0]
    assert batch["x"].dtype == np.float64 and tuple(batch["x"].shape) == (3, 2, 2)
    assert batch["i"].dtype == np.int64 and batch["i"].tolist() == [0, 1, 2]
    assert batch["f"].dtype == np.float64 and batch["f"].tolist() == [0.0, 0.5, 1.0]
    assert batch["flag"].dtype == np.bool_ and batch["flag"].tolist() == [True, False, True]
    assert batch["name"] == ["s0", "s1", "s2"]
    assert isinstance(batch["pair"], Squares.Pair)
    assert batch["pair"].a.tolist() == [0, 1, 2]
    assert [t.tolist() for t in batch["pair"].b] == [[0, 1, 2], [0, -1, -2]]
    assert batch["t"].tolist() == [[0, 0], [1, 1], [2, 4]]
    assert len(batches[-1]["i"]) == 1


def test_default_collate_matches_torch():
    torch = pytest.importorskip("torch")
    samples = [Squares()[i] for i in range(3)]
    for sample in samples:
        sample["t"] = sample["t"].data
    ours = default_collate(samples)
    theirs = torch.utils.data.default_collate(samples)
    assert set(ours) == set(theirs)
    for key in ("x", "i", "f", "flag", "t"):
        assert ours[key].dtype == theirs[key].numpy().dtype, key
        np.testing.assert_array_equal(ours[key].data, theirs[key].numpy())
    assert ours["name"] == theirs["name"]


def test_any_object_with_getitem_and_len_is_a_dataset():
    class Plain:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.float32(i), i

    (x0, y0), (x1, y1), (x2, y2) = DataLoader(Plain(), batch_size=2)
    assert x0.dtype == np.float32 and x0.tolist() == [0.0, 1.0]
    assert y2.tolist() == [4]


def test_collate_errors_name_the_problem():
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([tl.zeros(2), tl.zeros(3)])
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="found object"):
        default_collate([object(), object()])


def test_samples_that_require_grad_stay_in_the_graph():
    w = tl.Tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    (batch,) = DataLoader(TensorDataset(w), batch_size=3)
    assert batch[0].requires_grad
    (batch[0] * 2).sum().backward()
    np.testing.assert_array_equal(np.asarray(w.grad), 2.0)


def test_custom_collate_sampler_and_batch_sampler():
    dataset = numbered(6)
    loader = DataLoader(dataset, batch_size=2, collate_fn=lambda batch: len(batch))
    assert list(loader) == [2, 2, 2]
    loader = DataLoader(dataset, batch_size=2, sampler=[5, 4, 3, 2, 1, 0])
    assert epoch_order(loader) == [5, 4, 3, 2, 1, 0]
    loader = DataLoader(dataset, batch_sampler=[[0, 1, 2], [5]])
    assert len(loader) == 2 and [len(y) for _, y in loader] == [3, 1]
    loader = DataLoader(dataset, batch_size=None)
    x, y = next(iter(loader))
    assert tuple(x.shape) == (3,) and int(y) == 0 and len(loader) == 6
    assert list(BatchSampler(SequentialSampler(range(5)), 2, True)) == [[0, 1], [2, 3]]


def test_num_workers_is_accepted_and_loads_in_process():
    loader = DataLoader(numbered(5), batch_size=2, num_workers=2, pin_memory=True)
    assert epoch_order(loader) == [0, 1, 2, 3, 4]


def test_subset_and_random_split():
    dataset = numbered(10)
    a, b = random_split(dataset, [7, 3], generator=np.random.default_rng(0))
    assert isinstance(a, Subset) and len(a) == 7 and len(b) == 3
    assert sorted(a.indices + b.indices) == list(range(10))
    assert int(a[0][1]) == a.indices[0]
    parts = random_split(dataset, [0.5, 0.3, 0.2], generator=np.random.default_rng(0))
    assert [len(p) for p in parts] == [5, 3, 2]
    with pytest.raises(ValueError, match="does not equal the length"):
        random_split(dataset, [5, 6])


# ----------------------------------------------------------------------------------------------
# Argument errors
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,error,message", [
    (dict(batch_size=0), ValueError, "batch_size should be a positive integer"),
    (dict(batch_size=-2), ValueError, "batch_size should be a positive integer"),
    (dict(batch_size=2.5), ValueError, "batch_size should be a positive integer"),
    (dict(drop_last="yes"), ValueError, "drop_last should be a boolean"),
    (dict(num_workers=-1), ValueError, "num_workers"),
    (dict(shuffle=True, sampler=[0, 1]), ValueError, "mutually exclusive with shuffle"),
    (dict(batch_sampler=[[0]], batch_size=2), ValueError, "mutually exclusive"),
    (dict(batch_size=None, drop_last=True), ValueError, "mutually exclusive with drop_last"),
    (dict(shuffle=True, generator=42), TypeError, "generator must be"),
])
def test_loader_argument_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        DataLoader(numbered(4), **kwargs)


def test_a_dataset_must_have_getitem_and_len():
    with pytest.raises(TypeError, match="__getitem__ and __len__"):
        DataLoader(iter(range(3)))
