"""Hugging Face GPT-2 interop (models/hf.py, tensorlite-convert) on tiny files the tests write."""

import json
import os

import numpy as np
import pytest

st = pytest.importorskip("safetensors.numpy")

from tensorlite.models import checkpoint as ckpt_io  # noqa: E402
from tensorlite.models import convert, hf, sample  # noqa: E402
from tensorlite.models.gpt import GPT, GPTConfig  # noqa: E402
from tensorlite.models.tokenizer import CharTokenizer  # noqa: E402

V, T, L, NH, C = 11, 8, 2, 2, 8
CHARS = "abcdefgh \n."  # 11 characters: the char vocabulary of the tiny model


def hf_config(**changes):
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": V, "n_positions": T,
        "n_ctx": T, "n_embd": C, "n_layer": L, "n_head": NH, "n_inner": None,
        "activation_function": "gelu_new", "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
        "layer_norm_epsilon": 1e-5, "scale_attn_weights": True,
    }
    config.update(changes)
    return config


def hf_tensors(rng, prefix="transformer.", with_buffers=True, with_lm_head=False, dtype=np.float32):
    """Random GPT-2 weights in the Hugging Face layout: Conv1D weights (in, out)."""
    def w(*shape):
        return rng.normal(0.0, 0.3, size=shape).astype(dtype)

    t = {"wte.weight": w(V, C), "wpe.weight": w(T, C), "ln_f.weight": 1 + w(C), "ln_f.bias": w(C)}
    for i in range(L):
        t.update({
            f"h.{i}.ln_1.weight": 1 + w(C), f"h.{i}.ln_1.bias": w(C),
            f"h.{i}.attn.c_attn.weight": w(C, 3 * C), f"h.{i}.attn.c_attn.bias": w(3 * C),
            f"h.{i}.attn.c_proj.weight": w(C, C), f"h.{i}.attn.c_proj.bias": w(C),
            f"h.{i}.ln_2.weight": 1 + w(C), f"h.{i}.ln_2.bias": w(C),
            f"h.{i}.mlp.c_fc.weight": w(C, 4 * C), f"h.{i}.mlp.c_fc.bias": w(4 * C),
            f"h.{i}.mlp.c_proj.weight": w(4 * C, C), f"h.{i}.mlp.c_proj.bias": w(C),
        })
        if with_buffers:
            t[f"h.{i}.attn.bias"] = np.tril(np.ones((T, T), dtype=dtype))[None, None]
            t[f"h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=dtype)
    t = {prefix + k: v for k, v in t.items()}
    if with_lm_head:
        t["lm_head.weight"] = t[prefix + "wte.weight"].copy()
    return t


def write_hf_dir(path, tensors, config=None, tokenizer=True):
    os.makedirs(path, exist_ok=True)
    st.save_file(tensors, os.path.join(path, hf.WEIGHTS_NAME), metadata={"format": "pt"})
    with open(os.path.join(path, hf.CONFIG_NAME), "w") as f:
        json.dump(config or hf_config(), f)
    if tokenizer:
        CharTokenizer(CHARS).save(os.path.join(path, hf.TOKENIZER_NAME))
    return path


def reference_logits(t, idx, prefix="transformer."):
    """GPT-2's forward pass written directly on the HF tensors, in float64 NumPy."""
    g = {k[len(prefix):]: v.astype(np.float64) for k, v in t.items() if k.startswith(prefix)}

    def layer_norm(x, w, b):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * w + b

    def gelu_new(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    B, n = idx.shape
    x = g["wte.weight"][idx] + g["wpe.weight"][:n]
    hs = C // NH
    for i in range(L):
        p = f"h.{i}."
        a = layer_norm(x, g[p + "ln_1.weight"], g[p + "ln_1.bias"]) @ g[p + "attn.c_attn.weight"] + g[p + "attn.c_attn.bias"]
        q, k, v = np.split(a, 3, axis=-1)
        q, k, v = (z.reshape(B, n, NH, hs).transpose(0, 2, 1, 3) for z in (q, k, v))
        att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
        att = np.where(np.tril(np.ones((n, n), dtype=bool)), att, -np.inf)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(B, n, C)
        x = x + y @ g[p + "attn.c_proj.weight"] + g[p + "attn.c_proj.bias"]
        m = layer_norm(x, g[p + "ln_2.weight"], g[p + "ln_2.bias"]) @ g[p + "mlp.c_fc.weight"] + g[p + "mlp.c_fc.bias"]
        x = x + gelu_new(m) @ g[p + "mlp.c_proj.weight"] + g[p + "mlp.c_proj.bias"]
    x = layer_norm(x, g["ln_f.weight"], g["ln_f.bias"])
    return x @ g["wte.weight"].T


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("prefix", ["transformer.", ""])
@pytest.mark.parametrize("with_lm_head", [False, True])
def test_from_pretrained_logits_match_reference(tmp_path, rng, prefix, with_lm_head):
    t = hf_tensors(rng, prefix=prefix, with_lm_head=with_lm_head)
    write_hf_dir(tmp_path / "m", t)
    model = GPT.from_pretrained(tmp_path / "m")
    assert model.config == GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=NH, n_embd=C, dropout=0.0)
    idx = rng.integers(0, V, size=(3, T))
    logits, _ = model(idx)
    np.testing.assert_allclose(logits.data, reference_logits(t, idx, prefix), atol=1e-5, rtol=0)


def test_from_pretrained_float64_file_stays_float64(tmp_path, rng):
    t = hf_tensors(rng, dtype=np.float64)
    write_hf_dir(tmp_path / "m", t)
    model = GPT.from_pretrained(tmp_path / "m")
    assert model.transformer.wte.weight.dtype == np.float64
    idx = rng.integers(0, V, size=(2, 5))
    np.testing.assert_allclose(model(idx)[0].data, reference_logits(t, idx), atol=1e-10, rtol=0)


def test_save_pretrained_then_from_pretrained_is_exact(tmp_path):
    model = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=NH, n_embd=C))
    model.save_pretrained(tmp_path / "out")
    tensors = st.load_file(str(tmp_path / "out" / hf.WEIGHTS_NAME))
    assert "lm_head.weight" not in tensors  # tied, as GPT2LMHeadModel writes it
    assert tensors["transformer.h.0.attn.c_attn.weight"].shape == (C, 3 * C)  # Conv1D (in, out)
    with open(tmp_path / "out" / hf.CONFIG_NAME) as f:
        assert json.load(f)["activation_function"] == "gelu_new"
    again = GPT.from_pretrained(tmp_path / "out", dropout=0.1)
    assert again.config.dropout == 0.1
    for name, value in model.state_dict().items():
        assert np.array_equal(again.state_dict()[name], value), name


def test_save_pretrained_refuses_a_model_without_biases(tmp_path):
    model = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=1, n_head=NH, n_embd=C, bias=False))
    with pytest.raises(hf.HFFormatError, match="bias=False"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out" / hf.WEIGHTS_NAME).exists()


# ----------------------------------------------------------------------------------------
# tensorlite-convert


def run_convert(capsys, *argv):
    code = convert.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_convert_round_trip_is_bit_exact_and_samples(tmp_path, rng, capsys):
    write_hf_dir(tmp_path / "m", hf_tensors(rng))
    code, _, err = run_convert(capsys, "--from-hf", tmp_path / "m", "--out", tmp_path / "a.npz")
    assert code == 0, err
    code, _, err = run_convert(capsys, "--checkpoint", tmp_path / "a.npz", "--to-hf", tmp_path / "back")
    assert code == 0, err
    code, _, err = run_convert(capsys, "--from-hf", tmp_path / "back", "--out", tmp_path / "b.npz")
    assert code == 0, err
    a, b = ckpt_io.load(tmp_path / "a.npz"), ckpt_io.load(tmp_path / "b.npz")
    assert a.model_state.keys() == b.model_state.keys()
    for name in a.model_state:
        assert a.model_state[name].dtype == b.model_state[name].dtype
        assert a.model_state[name].tobytes() == b.model_state[name].tobytes(), name
    assert a.config == b.config and a.tokenizer == b.tokenizer == CharTokenizer(CHARS).to_dict()
    # The safetensors written back hold the same tensors as the original file.
    original = st.load_file(str(tmp_path / "m" / hf.WEIGHTS_NAME))
    written = st.load_file(str(tmp_path / "back" / hf.WEIGHTS_NAME))
    assert set(written) == {k for k in original if not hf.MASK_BUFFER.match(k[len("transformer."):])}
    for name, value in written.items():
        assert value.tobytes() == original[name].tobytes(), name

    code = sample.main(["--checkpoint", str(tmp_path / "a.npz"), "--prompt", "abc", "--num-tokens", "5"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.startswith("abc") and len(out.out.rstrip("\n")) >= 3

    # ... and it starts a fine-tuning run (the parts of --init-from in models/finetune.py).
    from tensorlite.models.finetune import init_from_checkpoint

    model, tokenizer = init_from_checkpoint(tmp_path / "a.npz", text="a cab.\n", dropout=0.1)
    assert model.config.dropout == 0.1 and tokenizer.to_dict() == a.tokenizer
    assert np.array_equal(model.transformer.h[1].mlp.c_fc.weight.data, a.model_state["transformer.h.1.mlp.c_fc.weight"])


def test_convert_refuses_to_overwrite(tmp_path, rng, capsys):
    write_hf_dir(tmp_path / "m", hf_tensors(rng))
    (tmp_path / "a.npz").write_bytes(b"keep me")
    code, _, err = run_convert(capsys, "--from-hf", tmp_path / "m", "--out", tmp_path / "a.npz")
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "a.npz").read_bytes() == b"keep me"
    assert run_convert(capsys, "--from-hf", tmp_path / "m", "--out", tmp_path / "a.npz", "--overwrite")[0] == 0
    code, _, err = run_convert(capsys, "--checkpoint", tmp_path / "a.npz", "--to-hf", tmp_path / "m")
    assert code == 2 and "config.json already exists" in err


def test_convert_needs_a_tokenizer(tmp_path, rng, capsys):
    write_hf_dir(tmp_path / "m", hf_tensors(rng), tokenizer=False)
    code, _, err = run_convert(capsys, "--from-hf", tmp_path / "m", "--out", tmp_path / "a.npz")
    assert code == 2 and "no tokenizer" in err
    assert not (tmp_path / "a.npz").exists()


def test_convert_with_gpt2_tokenizer(tmp_path, rng, capsys):
    pytest.importorskip("regex")
    from tensorlite.models.gpt2_tokenizer import GPT2Tokenizer, bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}  # 256 byte symbols, no merges
    t = hf_tensors(rng)
    config = hf_config(vocab_size=256)
    t["transformer.wte.weight"] = rng.normal(size=(256, C)).astype(np.float32)
    write_hf_dir(tmp_path / "m", t, config=config, tokenizer=False)
    GPT2Tokenizer(vocab, []).save_vocab_merges(str(tmp_path / "m"))
    code, _, err = run_convert(capsys, "--from-hf", tmp_path / "m", "--out", tmp_path / "a.npz")
    assert code == 2 and "--gpt2-tokenizer" in err
    code, _, err = run_convert(capsys, "--from-hf", tmp_path / "m", "--out", tmp_path / "a.npz", "--gpt2-tokenizer")
    assert code == 0, err
    assert ckpt_io.load(tmp_path / "a.npz").tokenizer["type"] == "gpt2"


def test_convert_usage_errors(tmp_path, capsys):
    assert run_convert(capsys, "--from-hf", tmp_path)[0] == 2
    assert run_convert(capsys, "--checkpoint", tmp_path / "x.npz")[0] == 2
    code, _, err = run_convert(capsys, "--checkpoint", tmp_path / "missing.npz", "--to-hf", tmp_path / "o")
    assert code == 2 and "not found" in err


# ----------------------------------------------------------------------------------------
# bad input: one line naming the tensor or field


def _drop(t, name):
    del t[name]
    return t


BAD_TENSORS = {
    "missing": (lambda t: _drop(t, "transformer.h.1.mlp.c_fc.bias"), None, "missing tensor 'h.1.mlp.c_fc.bias'"),
    "extra": (lambda t: {**t, "transformer.h.0.attn.rotary": np.zeros(3, np.float32)}, None,
              "unexpected tensor 'h.0.attn.rotary'"),
    "extra layer": (lambda t: {**t, "transformer.h.2.ln_1.weight": np.ones(C, np.float32)}, None,
                    "extra tensor 'h.2.ln_1.weight': config.json says n_layer = 2"),
    "wrong shape": (lambda t: {**t, "transformer.h.0.attn.c_attn.weight": np.zeros((3 * C, C), np.float32)}, None,
                    r"tensor 'h.0.attn.c_attn.weight' has shape \(24, 8\) but config.json \(n_embd\) implies \(8, 24\)"),
    "config vocab disagrees": (lambda t: t, hf_config(vocab_size=V + 1),
                               r"tensor 'wte.weight' has shape \(11, 8\) but config.json \(vocab_size, n_embd\) implies \(12, 8\)"),
    "config n_layer disagrees": (lambda t: t, hf_config(n_layer=3), "missing tensor 'h.2.ln_1.weight'"),
    "untied head": (lambda t: {**t, "lm_head.weight": np.zeros((V, C), np.float32)}, None,
                    "'lm_head.weight' differs from 'wte.weight'"),
    "both prefixes": (lambda t: {**t, "wte.weight": t["transformer.wte.weight"]}, None,
                      "'wte.weight' appears both with and without"),
    "activation": (lambda t: t, hf_config(activation_function="relu"), "activation_function 'relu' is not supported"),
    "n_inner": (lambda t: t, hf_config(n_inner=3 * C), "n_inner 24 is not supported"),
    "missing field": (lambda t: t, {k: v for k, v in hf_config().items() if k != "n_head"}, "missing field 'n_head'"),
    "model type": (lambda t: t, hf_config(model_type="llama"), "model_type 'llama' is not supported"),
    "layer norm eps": (lambda t: t, hf_config(layer_norm_epsilon=1e-6), "layer_norm_epsilon 1e-06"),
    "untied config": (lambda t: t, hf_config(tie_word_embeddings=False), "tie_word_embeddings = False"),
}


@pytest.mark.parametrize("case", sorted(BAD_TENSORS))
def test_bad_hf_directory_gives_one_line_error(tmp_path, rng, capsys, case):
    change, config, message = BAD_TENSORS[case]
    write_hf_dir(tmp_path / "m", change(hf_tensors(rng)), config=config)
    with pytest.raises(hf.HFFormatError, match=message):
        GPT.from_pretrained(tmp_path / "m")
    code, _, err = run_convert(capsys, "--from-hf", tmp_path / "m", "--out", tmp_path / "a.npz")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("tensorlite-convert: error:")
    assert not (tmp_path / "a.npz").exists()


def test_damaged_files(tmp_path, rng, capsys):
    write_hf_dir(tmp_path / "m", hf_tensors(rng))
    (tmp_path / "m" / hf.WEIGHTS_NAME).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(hf.HFFormatError, match="not a readable safetensors file"):
        GPT.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / hf.CONFIG_NAME).write_text("{")
    with pytest.raises(hf.HFFormatError, match="config.json: invalid JSON"):
        GPT.from_pretrained(tmp_path / "m")
    with pytest.raises(hf.HFFormatError, match="not a directory"):
        GPT.from_pretrained(tmp_path / "nowhere")


def test_missing_safetensors_package_is_one_line(hide_package, tmp_path):
    hide_package("safetensors")
    with pytest.raises(hf.HFFormatError, match=r"pip install '\.\[hf\]' from a tensorlite checkout"):
        hf._safetensors_numpy()
