"""nn.RNN, nn.LSTM, nn.GRU and their cells against PyTorch, in float64 with torch's state_dict
loaded by name: outputs, final states and every gradient (input, initial states, parameters);
parameter names and initialisation; gradcheck and gradgradcheck; dropout; errors; the masking
recipe for variable-length batches. Each comparison runs under both kernel sets."""

import math

import numpy as np
import pytest

import tensorlite as tl
import tensorlite.nn.rnn as rnn
from tensorlite.testing import gradcheck, gradgradcheck

torch = pytest.importorskip("torch")

LAYERS = {"RNN": (rnn.RNN, torch.nn.RNN), "LSTM": (rnn.LSTM, torch.nn.LSTM),
          "GRU": (rnn.GRU, torch.nn.GRU)}
CELLS = {"RNNCell": (rnn.RNNCell, torch.nn.RNNCell), "LSTMCell": (rnn.LSTMCell, torch.nn.LSTMCell),
         "GRUCell": (rnn.GRUCell, torch.nn.GRUCell)}
# float64 against float64: the two differ only in the order of a few roundings
TOLERANCE = dict(rtol=1e-10, atol=1e-12)


def _pair(kind, table, *args, **kwargs):
    """(ours, torch's) in float64, ours holding torch's parameters, loaded by name."""
    ours_class, torch_class = table[kind]
    torch_module = torch_class(*args, **kwargs).double()
    ours = ours_class(*args, **kwargs, dtype=tl.float64)
    state = {k: v.detach().numpy() for k, v in torch_module.state_dict().items()}
    assert list(ours.state_dict()) == list(state)
    ours.load_state_dict(state)
    return ours, torch_module


def _compare(ours, theirs, inputs, lstm):
    """Run both on the same inputs (None = not given), backpropagate the same random weights
    of every output, and compare outputs and all gradients."""
    rng = np.random.default_rng(1)
    ours_in = [None if a is None else tl.tensor(a, requires_grad=True) for a in inputs]
    theirs_in = [None if a is None else torch.tensor(a, requires_grad=True) for a in inputs]

    def call(module, x, h, c):
        if lstm:
            out, (h_n, c_n) = module(x, None if h is None else (h, c))
            return [out, h_n, c_n]
        return list(module(x, h)) if isinstance(module(x, h), tuple) else [module(x, h)]

    ours_out = call(ours, *ours_in)
    theirs_out = call(theirs, *theirs_in)
    assert len(ours_out) == len(theirs_out)
    weights = [rng.standard_normal(tuple(t.shape)) for t in theirs_out]
    sum((t * torch.tensor(w)).sum() for t, w in zip(theirs_out, weights)).backward()
    sum((o * tl.tensor(w)).sum() for o, w in zip(ours_out, weights)).backward()
    for o, t in zip(ours_out, theirs_out):
        assert o.shape == tuple(t.shape)
        np.testing.assert_allclose(o.data, t.detach().numpy(), **TOLERANCE)
    for position, (o, t) in enumerate(zip(ours_in, theirs_in)):
        if o is not None:
            np.testing.assert_allclose(o.grad.data, t.grad.numpy(), **TOLERANCE,
                                       err_msg=f"gradient of input {position}")
    ours_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(ours_params[name].grad.data, p.grad.numpy(), **TOLERANCE,
                                   err_msg=f"gradient of {name}")


LAYER_CONFIGS = [
    dict(),
    dict(num_layers=2),
    dict(bidirectional=True),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(bias=False),
    dict(batch_first=True),
]


@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("config", LAYER_CONFIGS, ids=lambda c: ",".join(c) or "default")
def test_layer_matches_torch(kernel_set, kind, config):
    T, B, In, H = 4, 3, 5, 6
    ours, theirs = _pair(kind, LAYERS, In, H, **config)
    D = 2 if config.get("bidirectional") else 1
    L = config.get("num_layers", 1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, In) if config.get("batch_first") else (T, B, In))
    h0, c0 = (rng.standard_normal((L * D, B, H)) for _ in range(2))
    _compare(ours, theirs, [x, h0, c0 if kind == "LSTM" else None], kind == "LSTM")


@pytest.mark.parametrize("kind", list(LAYERS))
def test_layer_without_initial_state_and_unbatched(kernel_set, kind):
    rng = np.random.default_rng(2)
    ours, theirs = _pair(kind, LAYERS, 3, 4, num_layers=2, bidirectional=True)
    _compare(ours, theirs, [rng.standard_normal((5, 2, 3)), None, None], kind == "LSTM")
    # unbatched (T, I) with states (L D, H); batch_first does not apply
    ours, theirs = _pair(kind, LAYERS, 3, 4, num_layers=2, batch_first=True)
    h0, c0 = (rng.standard_normal((2, 4)) for _ in range(2))
    _compare(ours, theirs, [rng.standard_normal((5, 3)), h0, c0 if kind == "LSTM" else None],
             kind == "LSTM")


def test_relu_rnn_matches_torch(kernel_set):
    ours, theirs = _pair("RNN", LAYERS, 3, 5, num_layers=2, nonlinearity="relu")
    rng = np.random.default_rng(3)
    _compare(ours, theirs, [rng.standard_normal((6, 2, 3)), rng.standard_normal((2, 2, 5)),
                            None], False)


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("bias", [True, False])
def test_cell_matches_torch(kernel_set, kind, bias):
    ours, theirs = _pair(kind, CELLS, 4, 5, bias=bias)
    rng = np.random.default_rng(4)
    lstm = kind == "LSTMCell"

    def run(module, x, h, c):
        if lstm:
            return list(module(x, None if h is None else (h, c)))
        return [module(x, h)]

    for x, h, c in [(rng.standard_normal((3, 4)), rng.standard_normal((3, 5)),
                     rng.standard_normal((3, 5))),
                    (rng.standard_normal(4), rng.standard_normal(5), rng.standard_normal(5)),
                    (rng.standard_normal((2, 4)), None, None)]:
        ours_in = [None if a is None else tl.tensor(a, requires_grad=True) for a in (x, h, c)]
        theirs_in = [None if a is None else torch.tensor(a, requires_grad=True)
                     for a in (x, h, c)]
        ours_out, theirs_out = run(ours, *ours_in), run(theirs, *theirs_in)
        weights = [rng.standard_normal(tuple(t.shape)) for t in theirs_out]
        sum((t * torch.tensor(w)).sum() for t, w in zip(theirs_out, weights)).backward()
        sum((o * tl.tensor(w)).sum() for o, w in zip(ours_out, weights)).backward()
        for o, t in zip(ours_out, theirs_out):
            np.testing.assert_allclose(o.data, t.detach().numpy(), **TOLERANCE)
        for o, t in zip(ours_in, theirs_in):
            if o is not None and (lstm or o is not ours_in[2]):
                np.testing.assert_allclose(o.grad.data, t.grad.numpy(), **TOLERANCE)
        ours_params = dict(ours.named_parameters())
        for name, p in theirs.named_parameters():
            np.testing.assert_allclose(ours_params[name].grad.data, p.grad.numpy(), **TOLERANCE)
            p.grad = None
        ours.zero_grad()


def test_state_dict_keys_and_shapes_equal_torch():
    for kwargs in [dict(num_layers=3, bidirectional=True), dict(num_layers=2, bias=False)]:
        for kind in LAYERS:
            ours, theirs = LAYERS[kind][0](7, 5, **kwargs), LAYERS[kind][1](7, 5, **kwargs)
            ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
            assert list(ours_state) == list(theirs_state)
            for key, value in theirs_state.items():
                assert ours_state[key].shape == tuple(value.shape), key
                assert ours_state[key].dtype == np.float32
    for kind in CELLS:
        assert list(CELLS[kind][0](3, 4).state_dict()) == list(CELLS[kind][1](3, 4).state_dict())


def test_initialisation_is_uniform_within_one_over_sqrt_hidden():
    tl.manual_seed(0)
    for module in (rnn.LSTM(10, 400, num_layers=2), rnn.GRUCell(10, 400), rnn.RNN(10, 400)):
        bound = 1 / math.sqrt(400)
        for name, p in module.named_parameters():
            values = p.data
            assert np.abs(values).max() <= bound, name
            # spread over the whole range, not a narrower one: a uniform's extremes are near
            assert np.abs(values).max() > 0.95 * bound and abs(values.mean()) < 0.1 * bound, name


def _lstm_sequence(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    from tensorlite.ops.rnn import LSTMLayer
    y = LSTMLayer.apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh, bidirectional=False, bias=True)
    return y  # outputs and the final cell state in one (T + 1, B, H) tensor


def _parameters(rng, gates, In, H, directions=1):
    out = []
    for _ in range(directions):
        out += [rng.standard_normal((gates * H, In)) * 0.5, rng.standard_normal((gates * H, H)) * 0.5,
                rng.standard_normal(gates * H) * 0.5, rng.standard_normal(gates * H) * 0.5]
    return out


def test_gradcheck_and_gradgradcheck_of_sequences(kernel_set):
    from tensorlite.ops.rnn import GRULayer, RNNLayer
    rng = np.random.default_rng(5)
    T, B, In, H = 3, 2, 2, 3
    x = rng.standard_normal((T, B, In))
    h0, c0 = rng.standard_normal((1, B, H)), rng.standard_normal((1, B, H))
    lstm_inputs = [x, h0, c0, *_parameters(rng, 4, In, H)]
    assert gradcheck(_lstm_sequence, lstm_inputs)
    assert gradgradcheck(_lstm_sequence, lstm_inputs)

    def gru(*args):
        return GRULayer.apply(*args, bidirectional=True, bias=True)

    gru_inputs = [x, rng.standard_normal((2, B, H)), *_parameters(rng, 3, In, H, directions=2)]
    assert gradcheck(gru, gru_inputs)
    assert gradgradcheck(gru, gru_inputs)

    def tanh_rnn(*args):
        return RNNLayer.apply(*args, bidirectional=False, bias=True, nonlinearity="tanh")

    rnn_inputs = [x, h0, *_parameters(rng, 1, In, H)]
    assert gradcheck(tanh_rnn, rnn_inputs)
    assert gradgradcheck(tanh_rnn, rnn_inputs)


@pytest.mark.parametrize("kind", list(CELLS))
def test_gradcheck_and_gradgradcheck_of_cells(kind):
    rng = np.random.default_rng(6)
    cell = CELLS[kind][0](3, 2, dtype=tl.float64)
    params = [p.data.copy() for p in cell.parameters()]
    names = [n for n, _ in cell.named_parameters()]

    def run(x, h, c, *values):
        for name, value in zip(names, values):
            setattr(cell, name, value)
        if kind == "LSTMCell":
            h, c = cell(x, (h, c))
            return h * c
        return cell(x, h)

    inputs = [rng.standard_normal((2, 3)), rng.standard_normal((2, 2)),
              rng.standard_normal((2, 2)), *params]
    assert gradcheck(run, inputs)
    assert gradgradcheck(run, inputs)


def test_dropout_between_layers_only_in_training():
    tl.manual_seed(0)
    lstm = rnn.LSTM(3, 8, num_layers=2, dropout=0.5)
    x = tl.tensor(np.random.default_rng(7).standard_normal((4, 2, 3)).astype(np.float32))
    lstm.eval()
    first, second = lstm(x)[0].data, lstm(x)[0].data
    np.testing.assert_array_equal(first, second)  # eval: deterministic, no dropout
    lstm.train()
    trained = [lstm(x)[0].data for _ in range(2)]
    assert not np.array_equal(trained[0], trained[1])
    assert not np.array_equal(trained[0], first)
    # a single layer has nothing between layers to drop: training changes nothing
    single = rnn.GRU(3, 8, dropout=0.5)
    np.testing.assert_array_equal(single(x)[0].data, single.eval()(x)[0].data)


def test_bad_input_is_a_clear_value_error():
    lstm = rnn.LSTM(3, 4, num_layers=2)
    x = np.zeros((5, 2, 3), dtype=np.float32)
    cases = [
        (lambda: lstm(tl.tensor(np.zeros((5, 2, 7), np.float32))), r"LSTM.*input size 3.*\(5, 2, 7\)"),
        (lambda: lstm(tl.tensor(np.zeros(5, np.float32))), r"LSTM.*3-D.*\(5,\)"),
        (lambda: lstm(tl.tensor(x), (tl.zeros(2, 3, 4), tl.zeros(2, 2, 4))),
         r"LSTM.*h0 of shape \(2, 2, 4\).*\(2, 3, 4\)"),
        (lambda: lstm(tl.tensor(x), tl.zeros(2, 2, 4)), r"LSTM.*tuple \(h0, c0\)"),
        (lambda: rnn.GRU(3, 4)(tl.tensor(x), tl.zeros(2, 2, 4)), r"GRU.*h0 of shape \(1, 2, 4\)"),
        (lambda: rnn.RNN(3, 4, dropout=1.5), r"RNN: dropout.*\[0, 1\].*1.5"),
        (lambda: rnn.LSTM(3, 4, dropout=-0.1), r"LSTM: dropout"),
        (lambda: rnn.RNN(3, 4, nonlinearity="sigmoid"), r"nonlinearity"),
        (lambda: rnn.LSTM(3, 4, proj_size=2), r"proj_size"),
        (lambda: lstm(tl.tensor(x.astype(np.float64))), r"LSTM.*float64.*float32"),
        (lambda: rnn.LSTMCell(3, 4)(tl.tensor(np.zeros((2, 5), np.float32))),
         r"LSTMCell.*\(2, 5\)"),
        (lambda: rnn.GRUCell(3, 4)(tl.tensor(np.zeros((1, 2, 3), np.float32))),
         r"GRUCell.*2-D.*\(1, 2, 3\)"),
        (lambda: rnn.RNNCell(3, 4)(tl.tensor(np.zeros((2, 3), np.float32)), tl.zeros(3, 4)),
         r"RNNCell.*\(2, 4\).*\(3, 4\)"),
    ]
    for call, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            call()


def test_masking_recipe_for_variable_lengths():
    """The recipe in tensorlite/nn/rnn.py's docstring: pad, run, read each sequence's output
    at its own last step; equal to running each sequence alone."""
    tl.manual_seed(1)
    lstm = rnn.LSTM(3, 5, dtype=tl.float64)
    rng = np.random.default_rng(8)
    lengths = np.array([4, 2, 3])
    T, B = lengths.max(), len(lengths)
    padded = rng.standard_normal((T, B, 3))
    for b, n in enumerate(lengths):
        padded[n:, b] = 0.0  # padding: any value gives the same valid outputs
    output, _ = lstm(tl.tensor(padded))
    last = output[lengths - 1, np.arange(B)]  # (B, H)
    for b, n in enumerate(lengths):
        alone, (h_n, _) = lstm(tl.tensor(padded[:n, b]))
        np.testing.assert_allclose(last.data[b], h_n.data[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(output.data[:n, b], alone.data, rtol=1e-12, atol=1e-14)
    mask = (np.arange(T)[:, None] < lengths)[..., None]  # (T, B, 1)
    loss = ((output * mask) ** 2).sum() / mask.sum()
    loss.backward()
    assert lstm.weight_ih_l0.grad is not None


def test_float32_training_step_matches_torch_to_float32_rounding():
    """The fast path (float32, Numba kernels by default): a 2-layer LSTM's loss and gradients
    agree with torch's to float32 accuracy."""
    ours, theirs = rnn.LSTM(4, 16, num_layers=2), torch.nn.LSTM(4, 16, num_layers=2)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(9).standard_normal((12, 3, 4)).astype(np.float32)
    (ours(tl.tensor(x))[0] ** 2).sum().backward()
    (theirs(torch.tensor(x))[0] ** 2).sum().backward()
    ours_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(ours_params[name].grad.data, p.grad.numpy(), rtol=1e-4,
                                   atol=1e-5)


def test_repr_names_the_arguments():
    assert repr(rnn.LSTM(3, 4, num_layers=2, bidirectional=True)).startswith(
        "LSTM(3, 4, num_layers=2, bidirectional=True)")
    assert repr(rnn.GRUCell(3, 4, bias=False)).startswith("GRUCell(3, 4, bias=False)")


def test_exported_from_nn():
    """The layers are part of tensorlite.nn (wired in tensorlite/nn/__init__.py)."""
    for name in ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"):
        assert getattr(tl.nn, name) is getattr(rnn, name)
