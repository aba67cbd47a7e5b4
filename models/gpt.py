"""A GPT language model (GPT-2 architecture) built on tensorlite.

It follows nanoGPT's model.py piece by piece and keeps its parameter names, so a nanoGPT
state_dict, converted to NumPy arrays, loads into it with ``load_state_dict``:

    transformer.wte.weight              token embedding (vocab_size, n_embd), tied to lm_head.weight
    transformer.wpe.weight              position embedding (block_size, n_embd)
    transformer.h.{i}.ln_1              LayerNorm before attention
    transformer.h.{i}.attn.c_attn       Linear n_embd -> 3 * n_embd (query, key, value)
    transformer.h.{i}.attn.c_proj       Linear n_embd -> n_embd
    transformer.h.{i}.ln_2              LayerNorm before the MLP
    transformer.h.{i}.mlp.c_fc          Linear n_embd -> 4 * n_embd
    transformer.h.{i}.mlp.c_proj        Linear 4 * n_embd -> n_embd
    transformer.ln_f                    final LayerNorm
    lm_head                             Linear n_embd -> vocab_size, no bias

Shape letters: B batch, T sequence length, C = n_embd, nh = n_head, hs = C // nh head size,
V = vocab_size.

Reading order (top-down, as in nanoGPT): LayerNorm, CausalSelfAttention, MLP, Block, GPT;
GPTConfig and the sizes a config implies are in gpt_config.py (re-exported here).  Beyond nanoGPT: ``generate`` keeps a key/value cache, samples with top-k and/or top-p, and
``estimate_mfu`` takes the machine's peak FLOP/s (measured by ``measure_peak_flops`` on a CPU).
"""

import dataclasses
import functools
import math
import os
import time

import numpy as np

import tensorlite as tl
from tensorlite import functional as F
from tensorlite import nn
from tensorlite.utils.checkpoint import checkpoint
from .gpt_config import (  # noqa: F401  (re-exported: the model's public names)
    GPTConfig, available_memory, count_params, count_state_entries, estimate_memory, format_bytes,
    state_shapes)


# Target value of positions the loss leaves out (PyTorch's default ignore_index); -1, nanoGPT's
# choice, is accepted by GPT.forward as well.
IGNORE_INDEX = -100

# nanoGPT defines its own LayerNorm because PyTorch's could not drop the bias;
# tensorlite's nn.LayerNorm(ndim, bias=...) already can, so it is used as is.
LayerNorm = nn.LayerNorm


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t only attends to positions <= t.

    During generation it can keep a key/value cache: the keys and values of the positions
    already seen, so a new token only needs its own query, key and value computed.
    """

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # key, query, value projections for all heads, in one batch
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # output projection
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        # regularisation
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.block_size = config.block_size
        # fused=True: use F.scaled_dot_product_attention (one kernel for scale, causal mask and
        # softmax) whenever attention dropout is inactive.  Set it to False to run the explicit,
        # step-by-step path below (same numbers, easier to study).
        self.fused = True
        # key/value cache, used only by GPT.generate: (B, nh, block_size, hs) buffers of which
        # the first `cache_len` positions are filled.
        self.k_cache = None
        self.v_cache = None
        self.cache_len = 0

    def forward(self, x, use_cache=False):
        B, T, C = x.shape  # batch size, sequence length, embedding dimensionality (n_embd)
        hs = C // self.n_head

        # query, key, value for all heads in batch; move the head axis forward to be a batch axis
        q, k, v = self.c_attn(x).split(self.n_embd, axis=2)  # 3 x (B, T, C)
        k = k.reshape(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        q = q.reshape(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.reshape(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)

        if use_cache:
            # the new positions' keys/values join those cached earlier: (B, nh, T_cached, hs)
            k, v = self._extend_cache(k, v)

        # causal self-attention: (B, nh, T, hs) x (B, nh, hs, Tk) -> (B, nh, T, Tk)
        if self.fused and (self.dropout == 0.0 or not self.training):
            # Queries are aligned to the END of the keys, so with a cache the T new queries see
            # every cached key plus the new keys up to their own position.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            Tk = k.shape[2]
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, Tk)
            # query i sits at absolute position i + Tk - T; it must not see keys after it
            future = np.triu(np.ones((T, Tk), dtype=bool), k=Tk - T + 1)
            att = att.masked_fill(future, float("-inf"))
            att = F.softmax(att, axis=-1)
            att = self.attn_dropout(att)
            y = att @ v  # (B, nh, T, Tk) x (B, nh, Tk, hs) -> (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # re-assemble all head outputs side by side

        # output projection
        y = self.resid_dropout(self.c_proj(y))
        return y

    # --- key/value cache (generation only; gradients do not flow through it) -------------------

    def _extend_cache(self, k, v):
        """Write the new keys/values after the cached ones; return views of everything cached."""
        B, nh, T, hs = k.shape
        if self.k_cache is None or self.k_cache.shape[0] != B or self.k_cache.dtype != k.dtype:
            self.k_cache = np.empty((B, nh, self.block_size, hs), dtype=k.dtype)
            self.v_cache = np.empty((B, nh, self.block_size, hs), dtype=v.dtype)
        start, end = self.cache_len, self.cache_len + T
        if end > self.block_size:
            raise RuntimeError(f"key/value cache overflow: {end} positions > block_size {self.block_size}")
        self.k_cache[:, :, start:end] = k.data
        self.v_cache[:, :, start:end] = v.data
        self.cache_len = end
        return tl.Tensor(self.k_cache[:, :, :end]), tl.Tensor(self.v_cache[:, :, :end])

    def reset_cache(self, free=False):
        """Forget the cached positions (and, with free=True, release the buffers)."""
        self.cache_len = 0
        if free:
            self.k_cache = self.v_cache = None


class MLP(nn.Module):
    """Position-wise feed-forward network: C -> 4C -> GELU -> C."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        x = self.c_fc(x)      # (B, T, 4C)
        x = self.gelu(x)
        x = self.c_proj(x)    # (B, T, C)
        x = self.dropout(x)
        return x


class Block(nn.Module):
    """One transformer block, pre-norm: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, use_cache=False):
        x = x + self.attn(self.ln_1(x), use_cache=use_cache)  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))                        # (B, T, C)
        return x


class GPT(nn.Module):
    """The language model: token + position embeddings, n_layer Blocks, final LayerNorm, and a
    linear head whose weight is the token embedding (weight tying)."""

    def __init__(self, config, dtype=np.float32):
        super().__init__()
        assert isinstance(config, GPTConfig), "GPT expects a GPTConfig"
        self.config = config
        # Recompute each block's activations in backward instead of keeping them
        # (tl.utils.checkpoint); see gradient_checkpointing_enable.
        self.gradient_checkpointing = False

        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (https://paperswithcode.com/method/weight-tying): the input embedding and
        # the output projection are one Parameter, so its gradient sums both uses.
        self.transformer.wte.weight = self.lm_head.weight

        # init all weights (GPT-2 scheme)
        self.apply(self._init_weights)
        # residual projections get a smaller std, per the GPT-2 paper: each block adds two
        # contributions to the residual stream, so scale by 1/sqrt(2 * n_layer)
        rng = tl.rng()
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                p.data[...] = rng.normal(0.0, 0.02 / math.sqrt(2 * config.n_layer), size=p.shape)

        if np.dtype(dtype) != np.float32:
            self.to(dtype)

    @classmethod
    def from_config_dict(cls, d, dtype=np.float32):
        """Build a freshly initialised model from ``config.to_dict()`` output."""
        return cls(GPTConfig.from_dict(d), dtype=dtype)

    @classmethod
    def from_pretrained(cls, path, dropout=None):
        """A GPT with the weights of a Hugging Face GPT-2 directory (``config.json`` +
        ``model.safetensors``; keys with or without the ``transformer.`` prefix).

        nanoGPT's name, but from a local directory and without torch: it needs the optional
        ``safetensors`` package (``pip install '.[hf]' from a tensorlite checkout``). ``dropout`` overrides the
        config's. Problems with the files raise ``tensorlite.models.hf.HFFormatError`` naming the tensor
        or field.
        """
        from .hf import read_hf_dir

        config, state = read_hf_dir(path)
        # nanoGPT's override_args: by default 0.0, since the file's rates (0.1 for GPT-2) are
        # for pretraining
        config["dropout"] = 0.0 if dropout is None else dropout
        model = cls(GPTConfig.from_dict(config), dtype=state["transformer.wte.weight"].dtype)
        model.load_state_dict(state)
        return model

    def save_pretrained(self, path, tokenizer=None):
        """Write this model as a Hugging Face GPT-2 directory (``config.json`` +
        ``model.safetensors``, Conv1D weights transposed to (in, out)); with ``tokenizer``,
        this project's tokenizer goes beside it so ``from_pretrained`` round-trips."""
        from .hf import write_hf_dir

        write_hf_dir(os.fspath(path), self.config, self.state_dict(), tokenizer=tokenizer)

    def _init_weights(self, module):
        rng = tl.rng()
        if isinstance(module, nn.Linear):
            module.weight.data[...] = rng.normal(0.0, 0.02, size=module.weight.shape)
            if module.bias is not None:
                module.bias.data[...] = 0.0
        elif isinstance(module, nn.Embedding):
            module.weight.data[...] = rng.normal(0.0, 0.02, size=module.weight.shape)

    def get_num_params(self, non_embedding=True):
        """Number of parameters.  With non_embedding=True (nanoGPT's convention) the position
        embedding is left out; the token embedding stays in because it is also the lm_head."""
        n_params = self.num_parameters()
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    # --- forward -------------------------------------------------------------------------------

    def forward(self, idx, targets=None):
        """idx: int array (B, T) of token ids (a Tensor is accepted too); T <= block_size.

        Returns (logits (B, T, V), loss). With ``targets`` (int array (B, T); -1 or -100 mark
        positions to ignore: nanoGPT's -1, PyTorch's ignore_index -100 that supervised
        fine-tuning puts on prompt and padding positions) the loss is the mean cross-entropy
        over the other positions as a scalar Tensor, else None.
        (nanoGPT returns only the last position's logits without targets; here every position
        comes back, as API.md promises. ``generate`` asks for the last position alone.)
        """
        idx = _as_token_array(idx)
        if idx.ndim != 2 or idx.shape[1] == 0:
            raise ValueError(
                f"GPT: idx must be token ids of shape (B, T) with T >= 1, got shape {idx.shape}"
                + ("; for one sequence pass idx[None, :]" if idx.ndim == 1 else ""))
        logits = self._logits(idx, pos_offset=0, use_cache=False, last_only=False)
        loss = None
        if targets is not None:
            targets = _as_token_array(targets)
            if targets.shape != idx.shape:
                raise ValueError(f"targets shape {targets.shape} does not match idx shape {idx.shape}")
            targets = targets.reshape(-1)  # (B*T,)
            if (targets == -1).any():  # one cheap pass over B*T ints; copies only when needed
                targets = np.where(targets == -1, IGNORE_INDEX, targets)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets, ignore_index=IGNORE_INDEX)
        return logits, loss

    def _logits(self, idx, pos_offset, use_cache, last_only):
        """The network itself.  idx holds the tokens at positions pos_offset .. pos_offset+T-1."""
        B, T = idx.shape
        if pos_offset + T > self.config.block_size:
            raise ValueError(
                f"Cannot forward sequence of length {pos_offset + T}, "
                f"block size is only {self.config.block_size}")
        pos = np.arange(pos_offset, pos_offset + T, dtype=np.int64)  # (T,)

        tok_emb = self.transformer.wte(idx)  # token embeddings (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # position embeddings (T, C)
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)
        checkpointed = self.gradient_checkpointing and not use_cache and tl.is_grad_enabled()
        for block in self.transformer.h:
            if checkpointed:
                x = checkpoint(block, x, use_reentrant=False)  # keeps only x for backward
            else:
                x = block(x, use_cache=use_cache)
        x = self.transformer.ln_f(x)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C): only the next-token prediction is needed
        return self.lm_head(x)  # (B, T or 1, V)

    def crop_block_size(self, block_size):
        """Shrink the context length (e.g. a pretrained 1024 down to something smaller)."""
        if not 0 < block_size <= self.config.block_size:
            raise ValueError(f"block_size must be in 1..{self.config.block_size}, got {block_size}")
        self.config = dataclasses.replace(self.config, block_size=block_size)
        wpe = self.transformer.wpe
        wpe.weight = nn.Parameter(wpe.weight.data[:block_size].copy())
        wpe.num_embeddings = block_size
        for block in self.transformer.h:
            block.attn.block_size = block_size
            block.attn.reset_cache(free=True)

    # --- training helpers -----------------------------------------------------------------------

    def gradient_checkpointing_enable(self):
        """Trade compute for memory in training (Hugging Face's name): each block keeps only its
        input, and its forward runs again during backward (``tl.utils.checkpoint``). The
        values and gradients are the same; a step costs about one more forward of the blocks."""
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self):
        """Keep every block's activations for backward again (the default)."""
        self.gradient_checkpointing = False

    def configure_optimizers(self, weight_decay, learning_rate, betas=(0.9, 0.95), eps=1e-8):
        """AdamW with two parameter groups, as nanoGPT: every parameter with ndim >= 2 (matmul
        weights and embeddings) is weight-decayed; biases and LayerNorm gains are not."""
        params = list(self.parameters())
        decay_params = [p for p in params if p.ndim >= 2]
        nodecay_params = [p for p in params if p.ndim < 2]
        optim_groups = [
            {"params": decay_params, "weight_decay": weight_decay},
            {"params": nodecay_params, "weight_decay": 0.0},
        ]
        return tl.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay)

    def flops_per_token(self, T=None):
        """FLOPs of one forward+backward pass per token: 6N + 12 L T C (PaLM paper, appendix B).

        6N: each parameter costs one multiply-add forward and two backward.  12 L T C: the
        attention scores and weighted sum, which have no parameters.  T defaults to block_size.
        """
        cfg = self.config
        T = cfg.block_size if T is None else T
        N = self.get_num_params()
        return 6 * N + 12 * cfg.n_layer * T * cfg.n_embd

    def estimate_mfu(self, fwdbwd_per_iter, dt, peak_flops=None):
        """Model FLOPs utilisation: achieved FLOP/s over ``peak_flops`` (FLOP/s).

        ``fwdbwd_per_iter`` sequences of block_size tokens are processed in ``dt`` seconds.  nanoGPT
        hard-codes an A100's 312 TFLOP/s; here the default is this machine's measured float32
        matmul peak (``measure_peak_flops()``).
        """
        if peak_flops is None:
            peak_flops = measure_peak_flops()
        T = self.config.block_size
        flops_per_iter = self.flops_per_token(T) * T * fwdbwd_per_iter
        flops_achieved = flops_per_iter / dt  # per second
        return flops_achieved / peak_flops

    # --- generation ----------------------------------------------------------------------------

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                 use_cache=True, rng=None):
        """Extend ``idx`` (int array (B, T), or (T,)) by ``max_new_tokens`` sampled tokens.

        Each step feeds the sequence (cropped to its last block_size tokens, as nanoGPT does),
        divides the last position's logits by ``temperature`` (0 means greedy argmax), keeps the
        ``top_k`` largest and/or the smallest set of tokens whose probability reaches ``top_p``,
        and samples.  Runs without recording a graph and with dropout off; the model's train/eval
        mode is restored afterwards.

        use_cache=True keeps each attention layer's keys/values, so while the sequence fits in
        block_size a step only processes the one new token.  Once it is longer, every step must
        crop and recompute (positions shift), exactly as without the cache.  Both give the same
        tokens for the same ``rng``.

        rng: a np.random.Generator, an int seed, or None for tensorlite's generator
        (``tl.manual_seed``).
        """
        idx = _as_token_array(idx)
        squeeze = idx.ndim == 1
        if squeeze:
            idx = idx[None, :]
        if idx.ndim != 2 or idx.shape[1] == 0:
            raise ValueError(f"generate: idx must have shape (B, T) with T >= 1, got {idx.shape}")
        if (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer))
                or max_new_tokens < 0):
            raise ValueError(f"generate: max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
        check_sampling_settings(temperature, top_k, top_p)
        if not isinstance(rng, np.random.Generator):
            rng = tl.rng() if rng is None else np.random.default_rng(rng)
        block_size = self.config.block_size
        blocks = list(self.transformer.h)

        # Room for the whole output up front: no re-allocation per token.
        B, T0 = idx.shape
        out = np.empty((B, T0 + max_new_tokens), dtype=np.int64)
        out[:, :T0] = idx
        n_cached = 0  # positions whose keys/values are in the cache

        was_training = self.training
        self.eval()
        try:
            with tl.no_grad():
                for length in range(T0, T0 + max_new_tokens):  # `length` tokens so far
                    start = max(0, length - block_size)  # nanoGPT's crop to the last block_size
                    if use_cache and start == 0 and n_cached > 0:
                        # The window has not slid: positions 0 .. n_cached-1 are cached, so only
                        # the newest token goes through the network.
                        logits = self._logits(out[:, n_cached:length], pos_offset=n_cached,
                                              use_cache=True, last_only=True)
                    else:
                        # No cache, the first step, or the window slid (every token moved to a
                        # new position): run the whole window, refilling the cache if used.
                        for block in blocks:
                            block.attn.reset_cache()
                        logits = self._logits(out[:, start:length], pos_offset=0,
                                              use_cache=use_cache, last_only=True)
                    n_cached = length - start
                    next_token = sample_next_token(logits.data[:, -1, :], temperature, top_k, top_p, rng)
                    out[:, length] = next_token
        finally:
            for block in blocks:
                block.attn.reset_cache(free=True)
            self.train(was_training)
        return out[0] if squeeze else out


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def _as_token_array(idx):
    """Token ids as an int64 np.ndarray (accepts arrays, lists and Tensors)."""
    if isinstance(idx, tl.Tensor):
        idx = idx.data
    idx = np.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"token ids must be integers, got dtype {idx.dtype}")
    return idx.astype(np.int64, copy=False)


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, rng=None):
    """Sample one token id per row from logits (B, V) (a NumPy array).  Returns int64 (B,).

    temperature 0 picks the argmax.  top_k keeps the k largest logits; top_p keeps the smallest
    set of most likely tokens whose total probability is >= top_p (always at least one).
    Exactly one uniform number per row is drawn from ``rng`` (unless greedy), so two runs with
    equally seeded generators make the same choices.
    """
    check_sampling_settings(temperature, top_k, top_p)
    logits = np.asarray(logits, dtype=np.float64)
    if np.isnan(logits).any() or np.isposinf(logits).any() or np.isneginf(logits).all(axis=-1).any():
        # A model with NaN or infinite weights would otherwise "sample" token 0 or the last one.
        raise ValueError("sample_next_token: the logits contain NaN or +inf, or a row is all -inf")
    if temperature == 0:
        return np.argmax(logits, axis=-1).astype(np.int64)
    rng = np.random.default_rng() if rng is None else rng
    # Subtract the maximum before dividing: every scaled logit is then <= 0, so no temperature,
    # however small, can overflow them to inf (the largest becomes exactly 0).
    logits = (logits - logits.max(axis=-1, keepdims=True)) / temperature
    B, V = logits.shape
    if top_k is not None:
        k = min(int(top_k), V)
        kth_largest = np.partition(logits, V - k, axis=-1)[:, V - k:V - k + 1]  # (B, 1)
        logits = np.where(logits < kth_largest, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p is not None:
        order = np.argsort(-probs, axis=-1, kind="stable")           # most likely first
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        mass_before = np.cumsum(sorted_probs, axis=-1) - sorted_probs  # mass of the tokens ahead
        drop_sorted = mass_before >= top_p                             # the set was already full
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        probs = np.where(drop, 0.0, probs)
        probs /= probs.sum(axis=-1, keepdims=True)
    # inverse-CDF sampling: the first token whose cumulative probability exceeds u
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random((B, 1)) * cdf[:, -1:]
    choice = (cdf <= u).sum(axis=-1)
    # if rounding put u at the very top of the cdf, fall back to the last token that has mass
    last_kept = V - 1 - np.argmax(probs[:, ::-1] > 0, axis=-1)
    return np.minimum(choice, last_kept).astype(np.int64)


def check_sampling_settings(temperature, top_k=None, top_p=None):
    """Raise ValueError naming the argument for a sampling setting that cannot work.

    temperature is 0 (greedy) or a normal positive float: below float64's smallest normal
    number (about 2.2e-308) the division loses its precision, so such values are refused.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.integer, np.floating)):
        raise ValueError(f"temperature must be a number, got {temperature!r}")
    tiny = np.finfo(np.float64).tiny
    if not math.isfinite(temperature) or temperature < 0 or 0 < temperature < tiny:
        raise ValueError(f"temperature must be 0 (greedy) or a finite number >= {tiny:.3g}, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float, np.integer, np.floating))
                              or not 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")




@functools.lru_cache(maxsize=None)
def measure_peak_flops(n=1024, repeats=5, dtype="float32"):
    """This machine's matmul throughput in FLOP/s: best of ``repeats`` timed (n x n) @ (n x n)
    products (2 n^3 FLOPs each) on every core, after one warm-up.  Used as the "peak" for MFU
    on a CPU.

    Cached: measured once per process and argument set.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    # The Numba kernel policy runs BLAS on one thread; the peak is the whole machine's.
    with tl.kernels.blas_threads(os.cpu_count() or 1):
        np.matmul(a, b)  # warm-up: thread pool start, page faults
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            np.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best
