"""The digits CNN study task (benchmarks/digits_cnn/train.py): one training run reaches 97% on
the held-out 25% of scikit-learn's 8x8 digits, the command line writes its table and figures,
and without scikit-learn it says how to get it and exits 2."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(ROOT, "benchmarks", "digits_cnn", "train.py")


@pytest.fixture(scope="module")
def train_module():
    spec = importlib.util.spec_from_file_location("digits_cnn_train", TRAIN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(train_module):
    pytest.importorskip("sklearn")
    rows = []
    return train_module.train(seed=0, log=rows.append), rows


def test_one_training_run_reaches_97_percent_held_out(trained):
    result, rows = trained
    assert result["accuracy"] >= 0.97, rows
    assert len(result["labels"]) == len(result["predictions"]) == 450  # 25% of 1,797
    epochs = [row for row in rows if row.startswith("| ") and row[2].isdigit()]
    assert len(epochs) == len(result["history"])
    losses = [loss for _, loss, _, _ in result["history"]]
    assert losses[-1] < losses[0] / 10


def test_the_split_is_stratified_and_fixed(train_module):
    pytest.importorskip("sklearn")
    import numpy as np

    x_train, x_test, y_train, y_test = train_module.load_split()
    assert x_train.shape == (1347, 1, 8, 8) and x_test.shape == (450, 1, 8, 8)
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    counts = np.bincount(y_test, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 46  # each class 25% of its 174-183 images
    np.testing.assert_array_equal(train_module.load_split()[3], y_test)


def test_figures_are_written(trained, train_module, tmp_path):
    pytest.importorskip("matplotlib")
    result, _ = trained
    paths = train_module.save_figures(result, str(tmp_path / "figures"))
    assert [os.path.basename(p) for p in paths] == ["first_layer_filters.png",
                                                    "confusion_matrix.png"]
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_without_scikit_learn_it_says_how_and_exits_2(train_module, hide_package, capsys):
    hide_package("sklearn")
    assert train_module.main(["--seeds", "0", "--no-figures"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install '.[data]' from a tensorlite checkout" in err[0]
