"""Tests for tensorlite.models.gpt: architecture and names, gradients, training, and generation.

Tests taking the ``kernel_set`` fixture (tests/conftest.py) run once per kernel set."""

import math
import os

import numpy as np
import pytest

import tensorlite as tl
from tensorlite.models.gpt import GPT, GPTConfig, measure_peak_flops, sample_next_token


def tiny_config(**overrides):
    settings = dict(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8)
    settings.update(overrides)
    return GPTConfig(**settings)


def tiny_model(seed=0, dtype=np.float64, **overrides):
    tl.manual_seed(seed)
    return GPT(tiny_config(**overrides), dtype=dtype)


def sharp_model(seed=0, **overrides):
    """A tiny model with weights 25x the GPT-2 init (std ~0.5): its next-token distribution
    depends strongly on the context, so a wrong position or a wrong attention mask changes
    the sampled tokens instead of hiding under near-uniform probabilities."""
    model = tiny_model(seed, **overrides)
    for p in model.parameters():
        if p.ndim >= 2:
            p.data *= 25.0
    return model


def random_batch(config, B=3, T=None, seed=0):
    rng = np.random.default_rng(seed)
    T = config.block_size if T is None else T
    idx = rng.integers(0, config.vocab_size, size=(B, T))
    targets = rng.integers(0, config.vocab_size, size=(B, T))
    return idx, targets


def nanogpt_parameter_names(n_layer):
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    for i in range(n_layer):
        for layer in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            names += [f"transformer.h.{i}.{layer}.weight", f"transformer.h.{i}.{layer}.bias"]
    names += ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    return names


# ---- architecture -------------------------------------------------------------------------------

def test_parameter_names_are_nanogpts():
    model = tiny_model()
    assert [name for name, _ in model.named_parameters()] == nanogpt_parameter_names(2)
    # the state_dict also lists the tied head, last, exactly like nanoGPT's
    assert list(model.state_dict()) == nanogpt_parameter_names(2) + ["lm_head.weight"]


def test_parameter_names_without_bias():
    model = tiny_model(bias=False)
    names = [name for name, _ in model.named_parameters()]
    assert names == [n for n in nanogpt_parameter_names(2) if not n.endswith(".bias")]


def test_lm_head_is_tied_to_token_embedding():
    model = tiny_model()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.bias is None
    C, V, T, L = 8, 11, 6, 2
    per_block = 2 * C * 2 + (C * 3 * C + 3 * C) + (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    total = V * C + T * C + L * per_block + 2 * C
    assert model.num_parameters() == total
    assert model.get_num_params(non_embedding=False) == total
    assert model.get_num_params() == total - T * C  # nanoGPT leaves out the position embedding


def test_shapes_with_and_without_targets():
    model = tiny_model()
    idx, targets = random_batch(model.config, B=2, T=5)
    logits, loss = model(idx, targets)
    assert logits.shape == (2, 5, 11) and loss.shape == () and loss.dtype == np.float64
    all_logits, no_loss = model(idx)
    assert no_loss is None and all_logits.shape == logits.shape  # (B, T, V), as API.md says
    np.testing.assert_allclose(all_logits.data, logits.data, rtol=1e-12)
    # a Tensor of token ids works too
    np.testing.assert_array_equal(model(tl.Tensor(idx))[0].data, all_logits.data)


@pytest.mark.parametrize("ignored", [(-1,), (-100,), (-1, -100)], ids=["nanogpt", "pytorch", "both"])
def test_loss_equals_numpy_cross_entropy_and_ignores_minus_one_and_minus_100(ignored):
    model = tiny_model()
    idx, targets = random_batch(model.config)
    targets[0, :3] = ignored[0]
    targets[1, 1:4] = ignored[-1]
    given = targets.copy()
    logits, loss = model(idx, targets)
    assert np.array_equal(targets, given)  # the caller's targets are not rewritten
    z = logits.data.reshape(-1, 11)
    t = targets.reshape(-1)
    keep = t >= 0
    logsumexp = np.log(np.exp(z).sum(-1))
    expected = np.mean(logsumexp[keep] - z[keep, t[keep]])
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_sequence_longer_than_block_size_is_a_clear_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="length 7, block size is only 6"):
        model(np.zeros((1, 7), dtype=np.int64))


def test_config_validation_and_dict_round_trip():
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=3, n_embd=8)
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(vocab_size=11, block_size=6, n_layer=0, n_head=2, n_embd=8)
    with pytest.raises(ValueError, match="dropout"):
        tiny_config(dropout=1.0)
    config = tiny_config(dropout=0.1, bias=False)
    d = config.to_dict()
    assert d == dict(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8, dropout=0.1, bias=False)
    assert GPTConfig.from_dict(d) == config
    with pytest.raises(ValueError, match="n_heads"):
        GPTConfig.from_dict({**d, "n_heads": 2})
    assert GPT.from_config_dict(d).config == config


def test_init_follows_gpt2_scheme():
    tl.manual_seed(0)
    config = GPTConfig(vocab_size=64, block_size=16, n_layer=4, n_head=4, n_embd=64)
    model = GPT(config)
    params = dict(model.named_parameters())
    c_proj = np.concatenate([p.data.ravel() for n, p in params.items() if n.endswith("c_proj.weight")])
    others = np.concatenate([p.data.ravel() for n, p in params.items()
                             if p.ndim == 2 and not n.endswith("c_proj.weight")])
    assert c_proj.std() == pytest.approx(0.02 / math.sqrt(2 * 4), rel=0.05)
    assert others.std() == pytest.approx(0.02, rel=0.05)
    for name, p in params.items():
        if name.endswith(".bias"):
            assert np.all(p.data == 0), name
        if ".ln_" in name and name.endswith(".weight"):
            assert np.all(p.data == 1), name
    assert model.transformer.wte.weight.dtype == np.float32


def test_init_loss_is_near_log_vocab():
    for config in (tiny_config(), GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=4, n_embd=32)):
        tl.manual_seed(0)
        model = GPT(config)
        idx, targets = random_batch(config, B=4)
        _, loss = model(idx, targets)
        assert abs(loss.item() - math.log(config.vocab_size)) < 0.3


# ---- gradients ----------------------------------------------------------------------------------

def check_parameter_gradients(model, idx, targets, full=(), eps=1e-6, atol=1e-8, rtol=1e-6, seed=0):
    """Compare loss.backward() gradients with central differences of the loss.

    Every parameter: along two random directions (a directional derivative per direction).
    Parameters named in ``full``: element by element.
    """
    def loss_value():
        with tl.no_grad():
            return model(idx, targets)[1].item()

    model.zero_grad()
    model(idx, targets)[1].backward()
    rng = np.random.default_rng(seed)
    checked = 0
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name
        original = p.data.copy()
        directions = [rng.standard_normal(p.shape) for _ in range(2)]
        if name in full:
            directions += list(np.eye(p.numel()).reshape((p.numel(),) + p.shape))
        for direction in directions:
            p.data[...] = original + eps * direction
            plus = loss_value()
            p.data[...] = original - eps * direction
            minus = loss_value()
            p.data[...] = original
            numeric = (plus - minus) / (2 * eps)
            analytic = float(np.sum(p.grad.data * direction))
            assert abs(analytic - numeric) <= atol + rtol * abs(numeric), (
                f"{name}: analytic {analytic!r} vs numeric {numeric!r}")
            checked += 1
    return checked


def test_gradcheck_every_parameter(kernel_set):
    model = tiny_model()
    # move LayerNorm gains/biases away from 1/0 so their gradients are generic
    for name, p in model.named_parameters():
        if p.ndim == 1:
            p.data[...] = np.random.default_rng(len(name)).normal(0.5, 0.5, size=p.shape)
    idx, targets = random_batch(model.config)
    targets[1, 2] = -1  # an ignored position
    full = ("transformer.h.0.attn.c_attn.bias", "transformer.h.1.ln_2.weight", "transformer.wpe.weight")
    checked = check_parameter_gradients(model, idx, targets, full=full)
    assert checked == 2 * 28 + 24 + 8 + 48  # 28 parameters, plus every element of three


def test_gradcheck_explicit_attention_path(kernel_set):
    model = tiny_model(seed=1)
    for block in model.transformer.h:
        block.attn.fused = False
    idx, targets = random_batch(model.config, B=2, seed=1)
    check_parameter_gradients(model, idx, targets, full=("transformer.h.1.attn.c_attn.weight",))


def test_explicit_attention_path_matches_fused():
    model = tiny_model()
    idx, targets = random_batch(model.config)
    fused_logits, fused_loss = model(idx, targets)
    for block in model.transformer.h:
        block.attn.fused = False
    logits, loss = model(idx, targets)
    np.testing.assert_allclose(logits.data, fused_logits.data, rtol=1e-12, atol=1e-14)
    assert loss.item() == pytest.approx(fused_loss.item(), rel=1e-12)


def test_dropout_active_only_in_training():
    model = tiny_model(dropout=0.3)
    reference = tiny_model(dropout=0.0)  # same seed, so same weights
    idx, targets = random_batch(model.config)
    model.eval()
    np.testing.assert_allclose(model(idx, targets)[0].data, reference(idx, targets)[0].data, rtol=1e-12)
    model.train()
    tl.manual_seed(5)
    first = model(idx, targets)[0].data
    second = model(idx, targets)[0].data
    assert not np.allclose(first, second)
    _, loss = model(idx, targets)
    loss.backward()  # the explicit (dropout) attention path is differentiable
    assert all(p.grad is not None for p in model.parameters())


# ---- training -----------------------------------------------------------------------------------

def test_overfits_one_batch(kernel_set):
    tl.manual_seed(0)
    config = tiny_config(n_embd=16)
    model = GPT(config)
    idx, targets = random_batch(config, B=4)
    idx[:, 0] = np.arange(4)  # distinct first tokens: every prefix is unique, so memorisable
    optimizer = model.configure_optimizers(weight_decay=0.0, learning_rate=1e-2, betas=(0.9, 0.95))
    for step in range(400):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.05:
            break
    _, loss = model(idx, targets)
    assert loss.item() < 0.1, f"loss {loss.item():.3f} after {step + 1} steps"


def test_configure_optimizers_groups_by_ndim():
    model = tiny_model(dtype=np.float32)
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-4, betas=(0.9, 0.95))
    assert isinstance(optimizer, tl.optim.AdamW)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert {id(p) for p in decay["params"] + no_decay["params"]} == {id(p) for p in model.parameters()}
    assert len(decay["params"]) == 2 + 2 * 4  # wte (= lm_head), wpe, 4 matrices per block
    assert decay["lr"] == 3e-4 and tuple(decay["betas"]) == (0.9, 0.95)


def test_state_dict_round_trip_between_models():
    a = tiny_model(seed=0)
    b = tiny_model(seed=1)
    idx, targets = random_batch(a.config)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(idx, targets)[0].data, b(idx, targets)[0].data)
    assert b.lm_head.weight is b.transformer.wte.weight  # loading keeps the tie


def test_flops_and_mfu():
    model = tiny_model()
    N, L, T, C = model.get_num_params(), 2, 6, 8
    assert model.flops_per_token() == 6 * N + 12 * L * T * C
    assert model.flops_per_token(T=3) == 6 * N + 12 * L * 3 * C
    mfu = model.estimate_mfu(fwdbwd_per_iter=4, dt=0.5, peak_flops=1e9)
    assert mfu == pytest.approx(model.flops_per_token() * T * 4 / 0.5 / 1e9)
    peak = measure_peak_flops(n=128, repeats=2)
    assert 1e6 < peak < 1e15  # a plausible FLOP/s figure for any machine


# ---- generation ---------------------------------------------------------------------------------

def count_forward_lengths(model):
    """Record the sequence length of every forward pass (by watching the token embedding)."""
    lengths = []
    embedding = model.transformer.wte
    original_forward = embedding.forward

    def recording_forward(idx):
        lengths.append(idx.shape[-1])
        return original_forward(idx)

    embedding.forward = recording_forward
    return lengths


@pytest.mark.parametrize("max_new_tokens", [4, 13])  # total 6 (fits block_size) and 15 (exceeds)
@pytest.mark.parametrize("sampling", [dict(), dict(top_k=3), dict(top_p=0.8, temperature=0.7)])
def test_kv_cache_gives_the_same_tokens(max_new_tokens, sampling):
    model = sharp_model()
    prompt = np.array([[1, 2], [3, 4]])
    uncached = model.generate(prompt, max_new_tokens, use_cache=False, rng=np.random.default_rng(7),
                              **sampling)
    lengths = count_forward_lengths(model)
    cached = model.generate(prompt, max_new_tokens, use_cache=True, rng=np.random.default_rng(7), **sampling)
    np.testing.assert_array_equal(cached, uncached)
    assert cached.shape == (2, 2 + max_new_tokens)
    np.testing.assert_array_equal(cached[:, :2], prompt)
    # the cache at work: prefill the prompt, then one token per step while it fits block_size,
    # then a full block_size recompute per step once the window slides
    steps_in_block = 6 - 2 + 1  # the steps that start from 2, 3, 4, 5 and 6 tokens
    expected = [2] + [1] * (min(max_new_tokens, steps_in_block) - 1) + [6] * (max_new_tokens - steps_in_block)
    assert lengths == expected


def test_cached_greedy_generation_matches_step_by_step_forward(kernel_set):
    model = sharp_model()
    prompt = np.array([[3], [9]])
    lengths = count_forward_lengths(model)
    out = model.generate(prompt, 5, temperature=0)
    assert lengths == [1, 1, 1, 1, 1]  # every step fed only its newest token
    for t in range(1, 6):
        logits = model(out[:, :t])[0].data[:, -1]  # full recompute, no cache
        np.testing.assert_array_equal(out[:, t], np.argmax(logits, axis=-1))


def test_generate_greedy_equals_top_k_one_and_accepts_1d_prompt():
    model = sharp_model()
    greedy = model.generate(np.array([[5]]), 8, temperature=0)
    top1 = model.generate(np.array([[5]]), 8, top_k=1, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(greedy, top1)
    one_d = model.generate(np.array([5]), 8, temperature=0)
    assert one_d.shape == (9,)
    np.testing.assert_array_equal(one_d, greedy[0])


def test_generate_restores_mode_frees_cache_and_is_reproducible():
    model = sharp_model(dropout=0.2)
    model.train()
    a = model.generate(np.array([[0]]), 7, rng=3)
    assert model.training and all(m.training for m in model.modules())
    assert all(block.attn.k_cache is None and block.attn.cache_len == 0 for block in model.transformer.h)
    b = model.generate(np.array([[0]]), 7, rng=3)
    np.testing.assert_array_equal(a, b)  # dropout is off while generating
    tl.manual_seed(11)
    c = model.generate(np.array([[0]]), 7)
    tl.manual_seed(11)
    np.testing.assert_array_equal(c, model.generate(np.array([[0]]), 7))


def test_top_k_restricts_choices():
    logits = np.array([[0.0, 3.0, 1.0, 2.9, -1.0, 2.5]])
    rng = np.random.default_rng(0)
    draws = np.concatenate([sample_next_token(logits, top_k=3, rng=rng) for _ in range(500)])
    assert set(draws) == {1, 3, 5}
    draws = np.concatenate([sample_next_token(logits, rng=rng) for _ in range(500)])
    assert set(draws) == set(range(6))  # without top_k every token can come up


def test_top_p_restricts_choices_and_renormalises():
    probs = np.array([0.5, 0.05, 0.3, 0.15])
    logits = np.log(probs)[None, :].repeat(4000, axis=0)  # 4000 rows: one draw each
    rng = np.random.default_rng(0)
    draws = sample_next_token(logits, top_p=0.7, rng=rng)
    assert set(draws) == {0, 2}  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7: the nucleus is {0, 2}
    assert np.mean(draws == 0) == pytest.approx(0.5 / 0.8, abs=0.03)
    assert set(sample_next_token(logits, top_p=0.5, rng=rng)) == {0}  # the top token alone reaches 0.5
    assert set(sample_next_token(logits, top_p=1.0, rng=rng)) == {0, 1, 2, 3}
    with pytest.raises(ValueError):
        sample_next_token(logits, top_p=0.0, rng=rng)


def test_sampling_follows_the_distribution():
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    logits = np.log(probs)[None, :].repeat(20000, axis=0)
    draws = sample_next_token(logits, rng=np.random.default_rng(0))
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 20000, probs, atol=0.015)
    hot = sample_next_token(logits * 1e3, temperature=1e3, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(hot, draws)  # temperature divides the logits


def test_kv_cache_with_prompt_longer_than_block_size():
    model = sharp_model()
    prompt = np.random.default_rng(0).integers(0, 11, size=(2, 9))  # block_size is 6
    lengths = count_forward_lengths(model)
    cached = model.generate(prompt, 3, rng=np.random.default_rng(1))
    assert lengths == [6, 6, 6]  # cropped to the last block_size tokens every step
    uncached = model.generate(prompt, 3, use_cache=False, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(cached, uncached)
    np.testing.assert_array_equal(cached[:, :9], prompt)


def test_crop_block_size():
    model = sharp_model()
    idx, targets = random_batch(model.config, B=2, T=4)
    before, _ = model(idx, targets)
    model.crop_block_size(4)
    assert model.config.block_size == 4 and model.transformer.wpe.weight.shape == (4, 8)
    after, _ = model(idx, targets)
    np.testing.assert_allclose(after.data, before.data, rtol=1e-12)  # positions 0..3 unchanged
    with pytest.raises(ValueError, match="block size is only 4"):
        model(np.zeros((1, 5), dtype=np.int64))
    assert model.generate(idx[:, :2], 5, temperature=0).shape == (2, 7)
    with pytest.raises(ValueError):
        model.crop_block_size(5)


def test_kv_cache_with_explicit_attention_path():
    # the explicit path's mask must also align the new queries with the end of the cached keys
    model = sharp_model(seed=2)
    for block in model.transformer.h:
        block.attn.fused = False
    prompt = np.array([[4, 7, 1]])
    cached = model.generate(prompt, 6, rng=np.random.default_rng(0))
    uncached = model.generate(prompt, 6, use_cache=False, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(cached, uncached)


# ----------------------------------------------------------------------------------------------
# errors instead of silent garbage; sizes computed from a config


def tiny_gpt(seed=0, **overrides):
    tl.manual_seed(seed)
    config = dict(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)
    config.update(overrides)
    return GPT(GPTConfig(**config))


def test_one_dimensional_ids_are_a_clear_error():
    model = tiny_gpt()
    with pytest.raises(ValueError, match=r"idx must be token ids of shape \(B, T\).*got shape \(3,\).*idx\[None, :\]"):
        model(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"got shape \(2, 0\)"):
        model(np.zeros((2, 0), dtype=np.int64))


@pytest.mark.parametrize("bad", [-1, 2.5, True, "3"])
def test_generate_rejects_a_bad_token_count(bad):
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0"):
        tiny_gpt().generate(np.array([[1]]), bad)
    assert tiny_gpt().generate(np.array([[1, 2]]), 0).tolist() == [[1, 2]]


@pytest.mark.parametrize("temperature", [1e-310, -1.0, float("nan"), float("inf")])
def test_generate_rejects_unusable_temperatures(temperature):
    with pytest.raises(ValueError, match="temperature must be 0"):
        tiny_gpt().generate(np.array([[1]]), 3, temperature=temperature)


def test_tiny_normal_temperature_is_greedy_not_nan():
    logits = np.random.default_rng(0).normal(size=(4, 11)) * 50
    choice = sample_next_token(logits, temperature=1e-300, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(choice, logits.argmax(axis=-1))
    model = tiny_gpt()
    np.testing.assert_array_equal(model.generate(np.array([[1]]), 6, temperature=1e-300, rng=0),
                                  model.generate(np.array([[1]]), 6, temperature=0))


def test_sampling_refuses_non_finite_logits():
    rng = np.random.default_rng(0)
    for bad in (np.nan, np.inf):
        logits = np.zeros((2, 5))
        logits[1, 2] = bad
        with pytest.raises(ValueError, match="NaN or \\+inf"):
            sample_next_token(logits, rng=rng)
    with pytest.raises(ValueError, match="all -inf"):
        sample_next_token(np.full((1, 4), -np.inf), rng=rng)
    masked = np.array([[0.0, -np.inf, 1.0, -np.inf]])  # -inf as a mask is fine
    assert set(np.concatenate([sample_next_token(masked, rng=rng) for _ in range(50)])) <= {0, 2}


@pytest.mark.parametrize("field, value", [("dropout", "0.1"), ("bias", "yes"), ("n_layer", 2.0), ("n_head", True)])
def test_config_rejects_wrong_types(field, value):
    config = dict(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)
    config[field] = value
    with pytest.raises(ValueError, match=f"GPTConfig.{field}"):
        GPTConfig(**config)


@pytest.mark.parametrize("bias", [True, False])
def test_shapes_count_and_memory_from_a_config(bias):
    from tensorlite.models import gpt

    config = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=bias)
    model = GPT(config)
    state = model.state_dict()
    assert gpt.state_shapes(config) == {name: value.shape for name, value in state.items()}
    assert gpt.count_state_entries(config) == len(state)
    assert gpt.count_params(config) == model.num_parameters()
    weights = 4 * model.num_parameters() * 4  # float32 parameters, gradients and two moments
    assert gpt.estimate_memory(config, batch_size=4) > weights
    assert gpt.estimate_memory(config, batch_size=8) > gpt.estimate_memory(config, batch_size=4)
    assert gpt.estimate_memory(config, 4, dtype=np.float64) == 2 * gpt.estimate_memory(config, 4)
    assert gpt.estimate_memory(config, 1, training=False) < gpt.estimate_memory(config, 1)
    huge = GPTConfig(vocab_size=13, block_size=8, n_layer=100_000, n_head=1, n_embd=100_000_000)
    assert gpt.estimate_memory(huge, 1) > 10 ** 20  # Python ints: no overflow


def test_available_memory_reads_meminfo():
    from tensorlite.models import gpt

    available = gpt.available_memory()
    if os.path.exists("/proc/meminfo"):
        assert isinstance(available, int) and available > 0
    assert gpt.format_bytes(1536) == "1.5 KiB" and gpt.format_bytes(12) == "12 B"
