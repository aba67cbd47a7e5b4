"""Tests of tl.save / tl.load (tensorlite.serialization.save / load): exact round trips of
nested structures, training resumed from a saved model and optimizer, clear errors for what
cannot be saved and for damaged or foreign files, and atomic writes."""

import io
import json
import math
import os
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorlite as tl
from tensorlite import nn, optim
from tensorlite.serialization import SerializationError, atomic_write, load, save

# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.bool_]

arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)))
tensors = hnp.arrays(st.sampled_from([np.float32, np.float64]), hnp.array_shapes(max_dims=2, max_side=3)
                     ).flatmap(lambda a: st.booleans().map(lambda rg: tl.Tensor(a, requires_grad=rg, dtype=a.dtype)))
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8)
           | st.sampled_from([np.float32(1.5), np.int64(-3), np.bool_(True), np.float64(np.nan)]))
keys = (st.text(max_size=6) | st.integers(-5, 5) | st.sampled_from(["__array__", "__tuple__", "a/b", "obj"])
        | st.tuples(st.integers(0, 3), st.text(max_size=2)))
nests = st.recursive(
    scalars | arrays | tensors,
    lambda children: (st.lists(children, max_size=3) | st.tuples(children, children)
                      | st.dictionaries(keys, children, max_size=3)),
    max_leaves=12)


def assert_same(loaded, original, path="obj"):
    """Equal values AND equal types, all the way down (a tuple stays a tuple, an array keeps
    its dtype, a Tensor keeps requires_grad)."""
    assert type(loaded) is type(original), (path, type(loaded), type(original))
    if isinstance(original, dict):
        assert list(loaded) == list(original), path
        for k in original:
            assert_same(loaded[k], original[k], f"{path}/{k}")
    elif isinstance(original, (list, tuple)):
        assert len(loaded) == len(original), path
        for i, (a, b) in enumerate(zip(loaded, original)):
            assert_same(a, b, f"{path}/{i}")
    elif isinstance(original, tl.Tensor):
        assert loaded.requires_grad == original.requires_grad, path
        assert_same(loaded.data, original.data, path)
    elif isinstance(original, (np.ndarray, np.generic)):
        assert loaded.dtype == original.dtype and np.shape(loaded) == np.shape(original), path
        np.testing.assert_array_equal(loaded, original, err_msg=path)
    elif isinstance(original, float) and math.isnan(original):
        assert math.isnan(loaded), path
    else:
        assert loaded == original, path


@given(obj=nests)
def test_any_nest_round_trips_exactly(tmp_path_factory, obj):
    path = tmp_path_factory.mktemp("nest") / "obj.tl"
    save(obj, path)
    assert_same(load(path), obj)


def test_file_objects_and_colliding_paths():
    obj = {"a/b": np.zeros(2), "a": {"b": np.ones(2)}, "t": (tl.Tensor([1.0]), [np.arange(2)])}
    buffer = io.BytesIO()
    save(obj, buffer)
    buffer.seek(0)
    assert_same(load(buffer), obj)


def test_parameters_come_back_as_parameters():
    p = nn.Parameter(np.ones((2, 2), dtype=np.float32))
    buffer = io.BytesIO()
    save({"p": p}, buffer)
    buffer.seek(0)
    loaded = load(buffer)["p"]
    assert isinstance(loaded, nn.Parameter) and loaded.dtype == np.float32 and loaded.requires_grad


def test_save_load_and_resume_training_bit_identically(tmp_path):
    """A model with a buffer, Adam and a StepLR: train, save all three, load into fresh
    objects, and the next steps agree exactly with the uninterrupted run."""
    from tensorlite.optim.lr_scheduler import StepLR

    def build():
        tl.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
        model.register_buffer("steps_seen", np.array(0))
        opt = optim.Adam(model.parameters(), lr=0.05, weight_decay=0.01)
        return model, opt, StepLR(opt, step_size=2, gamma=0.5)

    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 1)).astype(np.float32))
            for _ in range(6)]

    def train_step(model, opt, scheduler, x, y):
        opt.zero_grad()
        loss = nn.MSELoss()(model(x), y)
        loss.backward()
        opt.step()
        scheduler.step()
        model.steps_seen = model.steps_seen.data + 1
        return loss.item()

    model, opt, scheduler = build()
    for x, y in data[:3]:
        train_step(model, opt, scheduler, x, y)
    save({"model": model.state_dict(), "optim": opt.state_dict(),
          "scheduler": scheduler.state_dict(), "epoch": 3}, tmp_path / "ckpt.npz")
    expected = [train_step(model, opt, scheduler, x, y) for x, y in data[3:]]

    model2, opt2, scheduler2 = build()
    state = load(tmp_path / "ckpt.npz")
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["optim"])
    scheduler2.load_state_dict(state["scheduler"])
    assert state["epoch"] == 3 and model2.steps_seen.item() == 3
    resumed = [train_step(model2, opt2, scheduler2, x, y) for x, y in data[3:]]
    assert resumed == expected
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("obj, where, what", [
    ({"model": {"layers": [np.zeros(1), {1, 2}]}}, "obj/model/layers/1", "set"),
    ({"f": lambda x: x}, "obj/f", "function"),
    ([np.array([None, 1], dtype=object)], "obj/0", "object array"),
    ({"m": nn.Linear(1, 1)}, "obj/m", "Linear"),
])
def test_unsupported_values_name_their_path_and_type_and_write_nothing(tmp_path, obj, where, what):
    path = tmp_path / "out.npz"
    path.write_bytes(b"previous contents")
    with pytest.raises(TypeError, match=f"{what}.*'{where}'|'{where}'.*{what}|{what} at '{where}'"):
        save(obj, path)
    assert path.read_bytes() == b"previous contents"
    assert os.listdir(tmp_path) == ["out.npz"]  # no temporary file left behind


def _write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _tree(document):
    return np.frombuffer(json.dumps(document).encode(), dtype=np.uint8)


def test_damaged_and_foreign_files_raise_serialization_error(tmp_path):
    good = tmp_path / "good.npz"
    save({"w": np.arange(1000.0), "n": 1}, good)
    content = good.read_bytes()

    cases = {}
    cases["truncated"] = content[: len(content) // 2]
    cases["garbage"] = b"\x00\x01 this is not a zip file at all" * 10
    cases["empty"] = b""
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _write_npz(tmp_path / "no_tree", w=np.zeros(2))
    _write_npz(tmp_path / "bad_json", **{"tree.json": np.frombuffer(b"{not json", dtype=np.uint8)})
    _write_npz(tmp_path / "other_format", **{"tree.json": _tree({"format": "something", "tree": 1})})
    _write_npz(tmp_path / "future", **{"tree.json": _tree({"format": "tensorlite-save", "version": 99, "tree": 1})})
    _write_npz(tmp_path / "missing_array", **{"tree.json": _tree(
        {"format": "tensorlite-save", "version": 1, "tree": {"w": {"__array__": "obj/w"}}})})

    expectations = {
        "truncated": "damaged", "garbage": "not a file written by tl.save", "empty": "cannot load",
        "plain.npy": "single .npy array", "pickled.npy": "cannot load", "no_tree": "no tree.json",
        "bad_json": "damaged", "other_format": "not a tensorlite-save file",
        "future": "version 99 is not supported", "missing_array": "damaged",
    }
    for name, message in expectations.items():
        with pytest.raises(SerializationError, match=message) as info:
            load(tmp_path / name)
        assert name in str(info.value)
    assert issubclass(SerializationError, ValueError)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "does_not_exist.npz")


def test_a_corrupted_array_inside_the_zip_is_reported(tmp_path):
    path = tmp_path / "ckpt.npz"
    save({"w": np.arange(100.0)}, path)
    # Rewrite the archive with the array's bytes cut short.
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in members.items():
            z.writestr(name, raw[:-40] if name.startswith("obj") else raw)
    with pytest.raises(SerializationError, match="damaged"):
        load(path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.npz"
    save({"version": 1}, path)

    def fail_midway(f):
        f.write(b"half a file")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail_midway)
    assert load(path) == {"version": 1}
    assert os.listdir(tmp_path) == ["state.npz"]
    save({"version": 2}, path)  # and a successful save replaces it
    assert load(path) == {"version": 2}
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # a normal file's, not mkstemp's 0600


def test_exported_as_tl_save_and_tl_load_when_available(tmp_path):
    if not hasattr(tl, "save"):
        pytest.skip("tl.save is re-exported by tensorlite/__init__.py")
    tl.save({"x": tl.Tensor([1.0, 2.0])}, tmp_path / "x.npz")
    np.testing.assert_array_equal(tl.load(tmp_path / "x.npz")["x"].data, [1.0, 2.0])
