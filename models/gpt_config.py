"""A GPT's configuration and what it implies without building the model: parameter shapes,
counts and the memory it needs; and this machine's available memory, the one place the
checkpoint, Hugging Face and data readers ask for it (tests patch it here).

Its own module, importing no other module of the package, so that checkpoint.py and hf.py can
check a config before anything is built, while gpt.py uses hf.py for ``GPT.from_pretrained``;
gpt.py re-exports every name.
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from tensorlite.npz import available_memory, format_bytes  # noqa: F401  (models use them from here)


@dataclass
class GPTConfig:
    """Hyperparameters of a GPT.  The defaults are GPT-2 small's (vocab padded to 50304)."""

    vocab_size: int = 50304
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # True: bias in Linears and LayerNorms, like GPT-2. False: a bit better and faster

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                f"each head gets n_embd // n_head dimensions")
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float, np.floating))
                or not 0.0 <= self.dropout < 1.0):
            raise ValueError(f"GPTConfig.dropout must be a number in [0, 1), got {self.dropout!r}")
        if not isinstance(self.bias, (bool, np.bool_)):
            raise ValueError(f"GPTConfig.bias must be true or false, got {self.bias!r}")

    def to_dict(self):
        """Plain dict of the fields (for checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Inverse of ``to_dict``; an unknown key is an error rather than silently dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s): {', '.join(unknown)}")
        return cls(**d)


# ----------------------------------------------------------------------------------------------
# sizes: parameter shapes and memory, computed from a config without building the model
# ----------------------------------------------------------------------------------------------

def _block_shapes(C, bias):
    """name -> shape of the parameters of one Block, n_embd C."""
    shapes = {
        "ln_1.weight": (C,), "ln_1.bias": (C,),
        "attn.c_attn.weight": (3 * C, C), "attn.c_attn.bias": (3 * C,),
        "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
        "ln_2.weight": (C,), "ln_2.bias": (C,),
        "mlp.c_fc.weight": (4 * C, C), "mlp.c_fc.bias": (4 * C,),
        "mlp.c_proj.weight": (C, 4 * C), "mlp.c_proj.bias": (C,),
    }
    return {k: v for k, v in shapes.items() if bias or not k.endswith(".bias")}


def state_shapes(config):
    """name -> shape of every entry of ``GPT(config).state_dict()``, without building the model.

    Lists ``n_layer`` blocks: check the memory a config needs (``estimate_memory``) first.
    """
    C = config.n_embd
    shapes = {"transformer.wte.weight": (config.vocab_size, C), "transformer.wpe.weight": (config.block_size, C)}
    block = _block_shapes(C, config.bias)
    for i in range(config.n_layer):
        shapes.update({f"transformer.h.{i}.{name}": shape for name, shape in block.items()})
    shapes["transformer.ln_f.weight"] = (C,)
    if config.bias:
        shapes["transformer.ln_f.bias"] = (C,)
    shapes["lm_head.weight"] = (config.vocab_size, C)  # the same Parameter as wte (tied)
    return shapes


def count_state_entries(config):
    """len(state_shapes(config)), without listing them."""
    per_block = len(_block_shapes(config.n_embd, config.bias))
    return 3 + config.n_layer * per_block + (2 if config.bias else 1)  # wte, wpe, lm_head; ln_f


def count_params(config):
    """Number of distinct parameters of ``GPT(config)`` (the tied embedding counted once)."""
    C = config.n_embd
    per_block = sum(math.prod(shape) for shape in _block_shapes(C, config.bias).values())
    return ((config.vocab_size + config.block_size) * C + config.n_layer * per_block
            + C * (2 if config.bias else 1))


def estimate_memory(config, batch_size, dtype=np.float32, training=True, seq_len=None):
    """Rough number of bytes a GPT needs: weights, and for training gradients, AdamW's two
    moments and the activations kept for backward; for generation the key/value cache.

    Activations per token and layer: about 20 C values (LayerNorms, q/k/v, attention output,
    the 4C-wide MLP input and output, residuals) plus a row of attention weights per head
    (nh * T); the logits and their gradient add about 3 V per token. An estimate to refuse
    impossible runs before allocating, not a promise: Python ints, so it never overflows.
    """
    itemsize = np.dtype(dtype).itemsize
    B, T = int(batch_size), int(config.block_size if seq_len is None else seq_len)
    C, V, L, nh = config.n_embd, config.vocab_size, config.n_layer, config.n_head
    P = count_params(config)
    per_token_layer = 20 * C + 2 * nh * T
    if training:
        weights = 4 * P  # parameters, gradients, exp_avg, exp_avg_sq
        activations = B * T * (L * per_token_layer + 3 * V + 4 * C)
    else:
        weights = P
        activations = B * T * (2 * L * C + per_token_layer + 3 * V)  # KV cache + one layer's work
    return (weights + activations) * itemsize
