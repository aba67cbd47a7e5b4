"""Starting a run from a trained checkpoint: the parts of ``tensorlite-train --init-from``.

``--init-from CKPT`` takes the weights and the tokenizer of a checkpoint and nothing else: the
optimizer, the learning-rate schedule and the iteration count start fresh on the new data.

    checkpoint = load_init_checkpoint(path)
    check_model_flags(checkpoint, requested, path)          # shape flags must match or be omitted
    tokenizer = tokenizer_from_checkpoint(checkpoint, path)
    unknown = unencodable_characters(tokenizer, text)       # -> error, or with --extend-vocab:
    tokenizer, state = extend_char_vocab(tokenizer, checkpoint.model_state, text)
    model = model_from_state(checkpoint.config, state, dropout=0.1)   # dropout may change

Every problem is a ``FinetuneError`` (a ``CheckpointError``) with a one-line message naming the
field or the characters.
"""

import numpy as np

import tensorlite as tl
from . import checkpoint as ckpt_io
from .checkpoint import CheckpointError
from .sft import describe_characters, unencodable_characters
from .tokenizer import tokenizer_from_dict

__all__ = ["FinetuneError", "SHAPE_FIELDS", "load_init_checkpoint", "check_model_flags",
           "tokenizer_from_checkpoint", "unencodable_error", "extend_char_vocab", "model_from_state",
           "init_from_checkpoint"]

# GPTConfig fields fixed by the checkpoint's weights; dropout is not among them.
SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "bias")
EMBEDDING_KEYS = ("transformer.wte.weight", "lm_head.weight")  # one tied matrix (V, C)
INIT_STD = 0.02  # GPT._init_weights: every Embedding and Linear weight ~ N(0, 0.02)


class FinetuneError(CheckpointError):
    """A checkpoint that cannot start the requested fine-tuning run."""


def load_init_checkpoint(path):
    """Load a checkpoint for --init-from (a CheckpointError if it is missing or damaged)."""
    checkpoint = ckpt_io.load(path)
    if not isinstance(checkpoint.config, dict) or not isinstance(checkpoint.tokenizer, dict):
        raise FinetuneError(f"{path} holds no model config or tokenizer")
    return checkpoint


def check_model_flags(checkpoint, requested, path):
    """Raise FinetuneError if a shape flag (explicit or from a preset) differs from the checkpoint.

    ``requested`` maps GPTConfig field names (n_layer, n_embd, ...) to the values asked for;
    fields not in it are taken from the checkpoint.
    """
    from .gpt import GPTConfig

    defaults = GPTConfig.__dataclass_fields__  # a field a config leaves out has GPTConfig's default
    for field in SHAPE_FIELDS:
        have = checkpoint.config.get(field, defaults[field].default)
        if field in requested and requested[field] != have:
            flag = "--" + field.replace("_", "-")
            raise FinetuneError(
                f"{flag} {requested[field]} does not match {path}, which has {field} = {have}; "
                f"omit {flag} to take the checkpoint's")


def tokenizer_from_checkpoint(checkpoint, path):
    try:
        return tokenizer_from_dict(checkpoint.tokenizer)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise FinetuneError(f"{path} holds no usable tokenizer: {' '.join(str(error).split())}") from None


def unencodable_error(tokenizer, text, data_name, path, extendable=True):
    """A FinetuneError naming the first characters of ``text`` the tokenizer lacks, or None.
    ``extendable``: suggest --extend-vocab (which only a new --init-from run can use)."""
    unknown = unencodable_characters(tokenizer, text)
    if not unknown:
        return None
    hint = "; pass --extend-vocab to add them" if extendable and hasattr(tokenizer, "stoi") else ""
    return FinetuneError(f"{data_name} has {describe_characters(unknown)} that the tokenizer of {path} "
                         f"cannot encode{hint}")


def extend_char_vocab(tokenizer, state, text, rng=None):
    """Grow a char tokenizer by the new characters of ``text``, and the embedding/head with it.

    A CharTokenizer's ids are the sorted characters, so adding characters moves old ones to new
    ids: each old row is copied to its character's new id, and each new character's row is drawn
    as GPT's init draws embedding rows, N(0, 0.02) (from ``rng``, default tensorlite's generator).
    Returns (new tokenizer, new state dict); ``state`` is not modified.
    """
    from .tokenizer import CharTokenizer

    if not isinstance(tokenizer, CharTokenizer):
        raise FinetuneError(f"--extend-vocab works with a char tokenizer only, not {type(tokenizer).__name__}")
    new_chars = unencodable_characters(tokenizer, text)
    if not new_chars:
        return tokenizer, dict(state)
    grown = CharTokenizer("".join(tokenizer.chars) + "".join(new_chars))
    old = np.asarray(state["transformer.wte.weight"])  # (V, C)
    if old.shape[0] != tokenizer.vocab_size:
        raise FinetuneError(f"transformer.wte.weight has {old.shape[0]} rows but the tokenizer "
                            f"{tokenizer.vocab_size} characters")
    rng = tl.rng() if rng is None else rng
    weight = rng.normal(0.0, INIT_STD, size=(grown.vocab_size, old.shape[1])).astype(old.dtype)  # (V', C)
    new_ids = [grown.stoi[ch] for ch in tokenizer.chars]
    weight[new_ids] = old
    new_state = dict(state)
    for key in EMBEDDING_KEYS:
        new_state[key] = weight
    return grown, new_state


def model_from_state(config, state, dropout=None):
    """A GPT with ``state``'s weights; vocab_size from the embedding, dropout optionally changed."""
    from .gpt import GPT, GPTConfig

    config = dict(config)
    config["vocab_size"] = int(np.asarray(state["transformer.wte.weight"]).shape[0])
    if dropout is not None:
        config["dropout"] = dropout
    try:
        model = GPT(GPTConfig.from_dict(config), dtype=np.asarray(state["transformer.wte.weight"]).dtype)
        model.load_state_dict(state)
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        raise FinetuneError(f"the checkpoint's weights do not fit its config: {' '.join(str(error).split())}") from None
    return model


def init_from_checkpoint(path, text=None, extend_vocab=False, dropout=None, requested=None, data_name="the data"):
    """(model, tokenizer) to fine-tune from checkpoint ``path`` on ``text`` (everything checked)."""
    checkpoint = load_init_checkpoint(path)
    check_model_flags(checkpoint, requested or {}, path)
    tokenizer = tokenizer_from_checkpoint(checkpoint, path)
    state = checkpoint.model_state
    if text is not None:
        if extend_vocab:
            tokenizer, state = extend_char_vocab(tokenizer, state, text)
        else:
            error = unencodable_error(tokenizer, text, data_name, path)
            if error is not None:
                raise error
    return model_from_state(checkpoint.config, state, dropout=dropout), tokenizer
