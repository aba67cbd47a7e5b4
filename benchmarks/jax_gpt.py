"""The same GPT in JAX with a `jit`-compiled training step, for side-by-side benchmarks only.

Architecture, init and optimizer settings match `models/gpt.py` (and nanoGPT): token + position
embeddings, pre-LayerNorm blocks with causal self-attention and a 4x GELU(tanh) MLP, final
LayerNorm, `lm_head` tied to `wte`; AdamW (torch.optim.AdamW's update, eps 1e-8) with weight
decay on the 2-D parameters only, after clipping the global gradient norm. The whole step --
forward, backward, clip and AdamW -- is one jitted function, so XLA fuses across it.

Parameters are a flat dict keyed by nanoGPT's names, so the step reads like the other two.
jax is optional (the `bench` extra); nothing else in the project imports this file.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def init_params(config, seed: int = 0) -> dict:
    """GPT-2 init: N(0, 0.02) weights, c_proj weights N(0, 0.02 / sqrt(2 n_layer)), zero biases,
    LayerNorm gains 1. Linear weights keep PyTorch's (out, in) layout."""
    rng = np.random.default_rng(seed)
    C, L = config.n_embd, config.n_layer

    def normal(*shape, std=0.02):
        return rng.normal(0.0, std, size=shape).astype(np.float32)

    params = {"transformer.wte.weight": normal(config.vocab_size, C),
              "transformer.wpe.weight": normal(config.block_size, C)}
    linears = {"attn.c_attn": (3 * C, C), "attn.c_proj": (C, C),
               "mlp.c_fc": (4 * C, C), "mlp.c_proj": (C, 4 * C)}
    for i in range(L):
        prefix = f"transformer.h.{i}."
        for norm in ("ln_1", "ln_2"):
            params[prefix + norm + ".weight"] = np.ones(C, np.float32)
            if config.bias:
                params[prefix + norm + ".bias"] = np.zeros(C, np.float32)
        for name, shape in linears.items():
            std = 0.02 / math.sqrt(2 * L) if name.endswith("c_proj") else 0.02
            params[prefix + name + ".weight"] = normal(*shape, std=std)
            if config.bias:
                params[prefix + name + ".bias"] = np.zeros(shape[0], np.float32)
    params["transformer.ln_f.weight"] = np.ones(C, np.float32)
    if config.bias:
        params["transformer.ln_f.bias"] = np.zeros(C, np.float32)
    return {name: jnp.asarray(value) for name, value in params.items()}


def layer_norm(params, name, x, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + eps) * params[name + ".weight"]
    return y + params[name + ".bias"] if name + ".bias" in params else y


def linear(params, name, x):
    y = x @ params[name + ".weight"].T
    return y + params[name + ".bias"] if name + ".bias" in params else y


def attention(params, prefix, x, n_head):
    B, T, C = x.shape
    q, k, v = jnp.split(linear(params, prefix + "c_attn", x), 3, axis=2)  # 3 x (B, T, C)
    # jax.nn.dot_product_attention wants (B, T, nh, hs): no transposes needed
    q, k, v = (a.reshape(B, T, n_head, C // n_head) for a in (q, k, v))
    y = jax.nn.dot_product_attention(q, k, v, is_causal=True)  # (B, T, nh, hs)
    return linear(params, prefix + "c_proj", y.reshape(B, T, C))


def forward(params, idx, config):
    """Logits (B, T, V) for token ids idx (B, T)."""
    B, T = idx.shape
    x = params["transformer.wte.weight"][idx] + params["transformer.wpe.weight"][:T]  # (B, T, C)
    for i in range(config.n_layer):
        prefix = f"transformer.h.{i}."
        x = x + attention(params, prefix + "attn.", layer_norm(params, prefix + "ln_1", x),
                          config.n_head)
        h = jax.nn.gelu(linear(params, prefix + "mlp.c_fc", layer_norm(params, prefix + "ln_2", x)),
                        approximate=True)
        x = x + linear(params, prefix + "mlp.c_proj", h)
    x = layer_norm(params, "transformer.ln_f", x)
    return x @ params["transformer.wte.weight"].T  # lm_head tied to wte


def loss_fn(params, idx, targets, config):
    """Mean cross-entropy over positions whose target is not -1 (nanoGPT's ignore_index)."""
    logits = forward(params, idx, config)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    keep = targets != -1
    picked = jnp.take_along_axis(log_probs, jnp.where(keep, targets, 0)[..., None], axis=-1)[..., 0]
    return -(picked * keep).sum() / keep.sum()


def init_optimizer(params) -> dict:
    zeros = {name: jnp.zeros_like(p) for name, p in params.items()}
    return {"step": jnp.zeros((), jnp.int32), "m": zeros,
            "v": {name: jnp.zeros_like(p) for name, p in params.items()}}


def make_train_step(config, learning_rate, betas, weight_decay, grad_clip, eps=1e-8):
    """A jitted (params, opt_state, idx, targets) -> (params, opt_state, loss)."""
    beta1, beta2 = betas

    def train_step(params, opt_state, idx, targets):
        loss, grads = jax.value_and_grad(loss_fn)(params, idx, targets, config)
        # clip the global gradient norm, as torch.nn.utils.clip_grad_norm_
        norm = jnp.sqrt(sum(jnp.sum(g * g) for g in grads.values()))
        scale = jnp.minimum(1.0, grad_clip / (norm + 1e-6))
        step = opt_state["step"] + 1
        correction1 = 1 - beta1 ** step
        correction2 = 1 - beta2 ** step
        new_params, new_m, new_v = {}, {}, {}
        for name, p in params.items():
            g = grads[name] * scale
            m = beta1 * opt_state["m"][name] + (1 - beta1) * g
            v = beta2 * opt_state["v"][name] + (1 - beta2) * g * g
            decay = weight_decay if p.ndim >= 2 else 0.0  # nanoGPT: decay matmul weights only
            p = p * (1 - learning_rate * decay)
            denom = jnp.sqrt(v / correction2) + eps
            new_params[name] = p - (learning_rate / correction1) * m / denom
            new_m[name], new_v[name] = m, v
        return new_params, {"step": step, "m": new_m, "v": new_v}, loss

    # donating params and optimizer state lets XLA update them in place
    return jax.jit(train_step, donate_argnums=(0, 1))


def num_params(params, config) -> int:
    """nanoGPT's count: every parameter except the position embedding."""
    return sum(p.size for name, p in params.items()) - params["transformer.wpe.weight"].size
