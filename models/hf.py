"""Hugging Face GPT-2 weights in and out: ``config.json`` + ``model.safetensors``.

No torch and no transformers: the tensors are read and written with the ``safetensors``
package (the optional extra ``.[hf]`` (from a tensorlite checkout)), as NumPy arrays.

The Hugging Face GPT-2 layout differs from this project's (nanoGPT's) in three ways:

* names: ``h.0.attn.c_attn.weight`` or ``transformer.h.0.attn.c_attn.weight`` (both exist in
  the wild: ``GPT2Model`` files have no prefix, ``GPT2LMHeadModel`` files have it) against
  ``transformer.h.0.attn.c_attn.weight`` here;
* GPT-2's ``Conv1D`` stores its weight as (in, out), the transpose of ``Linear``'s (out, in),
  for ``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc`` and ``mlp.c_proj``;
* files may carry the causal-mask buffers ``h.{i}.attn.bias`` / ``h.{i}.attn.masked_bias``
  (skipped), and ``lm_head.weight`` is tied to ``wte.weight`` (often left out of the file).

    model = GPT.from_pretrained("gpt2-dir")        # models/gpt.py, through read_hf_dir
    model.save_pretrained("out-dir")               # writes config.json + model.safetensors

This module builds no model (gpt.py imports it for those two methods), so it imports only
gpt_config.py of the model's modules.

``checkpoint_from_hf`` / ``hf_from_checkpoint`` convert between such a directory and a
tensorlite checkpoint (``tensorlite-convert``); ``hf_from_checkpoint`` replaces the whole
directory atomically (``export_hf_dir``, models/atomic_dir.py).  Every problem with the input is
an ``HFFormatError`` whose message is one line naming the file and the tensor or field; sizes in
config.json are checked against the available memory before any tensor is read.
"""

import json
import os
import re

import numpy as np

from .jsonio import describe_value, load_json_text
from tensorlite.serialization import atomic_write

__all__ = [
    "HFFormatError",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "TOKENIZER_NAME",
    "read_hf_config",
    "hf_to_state_dict",
    "state_dict_to_hf",
    "config_to_hf",
    "read_hf_dir",
    "write_hf_dir",
    "export_hf_dir",
    "checkpoint_from_hf",
    "hf_from_checkpoint",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# This project's own tokenizer (tokenizer.to_dict()) travels in the directory under this name,
# so a char or BPE model survives --to-hf then --from-hf.
TOKENIZER_NAME = "tensorlite_tokenizer.json"

# GPT-2's "gelu_new" is the tanh approximation, which is what F.gelu computes;
# "gelu_pytorch_tanh" is the same formula under the name newer configs use.
SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's eps, and GPT-2's layer_norm_epsilon

# Conv1D modules, whose weight is stored (in, out) and must be transposed to (out, in).
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Causal-mask buffers that older files carry; they are not parameters.
MASK_BUFFER = re.compile(r"^h\.(\d+)\.attn\.(bias|masked_bias)$")
LAYER_KEY = re.compile(r"^h\.(\d+)\.")
# Largest value read for a size field of config.json. Real models are far smaller; the bound
# keeps the memory estimate below within float range for its message.
MAX_DIMENSION = 2 ** 40


class HFFormatError(ValueError):
    """A Hugging Face GPT-2 directory that cannot be read or a model that cannot be written."""


def _read_json_file(path):
    """The value of a JSON file; HFFormatError (one line naming the file) for anything unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise HFFormatError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise HFFormatError(f"{path}: not a readable JSON file ({' '.join(str(error).split())})") from None
    return load_json_text(text, path, error=HFFormatError)


def _safetensors_numpy():
    """The ``safetensors.numpy`` module, imported only when needed (optional extra)."""
    try:
        import safetensors.numpy
    except ImportError:
        raise HFFormatError(
            "Hugging Face interop needs the safetensors package: pip install '.[hf]' from a tensorlite checkout") from None
    return safetensors.numpy


# ----------------------------------------------------------------------------------------
# config.json


def read_hf_config(path):
    """Read a GPT-2 config.json; return the fields this project uses (checked) as a dict.

    Returns dict(vocab_size, block_size, n_layer, n_head, n_embd, dropout) with GPTConfig's names.
    Anything the GPT here cannot compute the same way (another activation, a different MLP
    width, untied head, unscaled attention, ...) is an HFFormatError naming the field.
    """
    raw = _read_json_file(path)
    if not isinstance(raw, dict):
        raise HFFormatError(f"{path}: expected a JSON object")

    def field(name, *aliases, default=None):
        for key in (name,) + aliases:
            if key in raw:
                return raw[key]
        if default is None:
            raise HFFormatError(f"{path}: missing field {name!r}")
        return default

    def positive_int(name, *aliases):
        value = field(name, *aliases)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_DIMENSION:
            raise HFFormatError(f"{path}: {name} must be an integer from 1 to {MAX_DIMENSION}, "
                                f"got {describe_value(value)}")
        return value

    model_type = raw.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise HFFormatError(f"{path}: model_type {describe_value(model_type)} is not supported (only 'gpt2')")
    config = dict(
        vocab_size=positive_int("vocab_size"),
        block_size=positive_int("n_positions", "n_ctx"),
        n_layer=positive_int("n_layer"),
        n_head=positive_int("n_head"),
        n_embd=positive_int("n_embd"),
    )
    if config["n_embd"] % config["n_head"] != 0:
        raise HFFormatError(f"{path}: n_embd {config['n_embd']} is not divisible by n_head {config['n_head']}")
    n_inner = raw.get("n_inner")
    if n_inner is not None and n_inner != 4 * config["n_embd"]:
        raise HFFormatError(
            f"{path}: n_inner {describe_value(n_inner)} is not supported (the MLP here is 4 * n_embd = {4 * config['n_embd']})")
    activation = field("activation_function", default="gelu_new")
    if activation not in SUPPORTED_ACTIVATIONS:
        raise HFFormatError(
            f"{path}: activation_function {describe_value(activation)} is not supported (only {' or '.join(SUPPORTED_ACTIVATIONS)})")
    eps = field("layer_norm_epsilon", default=LAYER_NORM_EPS)
    # (written so that NaN, which compares false to everything, is refused too)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not abs(eps - LAYER_NORM_EPS) <= 1e-12:
        raise HFFormatError(f"{path}: layer_norm_epsilon {describe_value(eps)} is not supported (only {LAYER_NORM_EPS})")
    unsupported_flags = {
        # field: the value the GPT here implements
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "add_cross_attention": False,
    }
    for name, supported in unsupported_flags.items():
        if name in raw and raw[name] != supported:
            raise HFFormatError(f"{path}: {name} = {describe_value(raw[name])} is not supported (only {supported!r})")
    # GPT-2 has three dropout rates; the GPT here has one. Fine-tuning picks its own anyway.
    rates = [raw.get(k, 0.0) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")]
    usable = all(type(r) in (int, float) and 0 <= r < 1 for r in rates)  # (NaN fails 0 <= r)
    config["dropout"] = float(max(rates)) if usable else 0.0
    return config


def config_to_hf(config):
    """A GPT-2 config.json dict for a GPTConfig (or its to_dict())."""
    c = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    if not c.get("bias", True):
        raise HFFormatError("a model without biases (bias=False) cannot be written in the GPT-2 layout, "
                            "which always has them")
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c["vocab_size"],
        "n_positions": c["block_size"],
        "n_ctx": c["block_size"],
        "n_embd": c["n_embd"],
        "n_layer": c["n_layer"],
        "n_head": c["n_head"],
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": c.get("dropout", 0.0),
        "embd_pdrop": c.get("dropout", 0.0),
        "attn_pdrop": c.get("dropout", 0.0),
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "use_cache": True,
    }


# ----------------------------------------------------------------------------------------
# tensors


def _layer_shapes(C):
    """{name inside a layer: shape} of one GPT-2 block of width C."""
    return {
        "ln_1.weight": (C,), "ln_1.bias": (C,),
        "attn.c_attn.weight": (C, 3 * C), "attn.c_attn.bias": (3 * C,),   # Conv1D: (in, out)
        "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
        "ln_2.weight": (C,), "ln_2.bias": (C,),
        "mlp.c_fc.weight": (C, 4 * C), "mlp.c_fc.bias": (4 * C,),
        "mlp.c_proj.weight": (4 * C, C), "mlp.c_proj.bias": (C,),
    }


LAYER_TENSORS = frozenset(_layer_shapes(1))  # the names inside one block


def _global_shapes(config):
    V, T, C = config["vocab_size"], config["block_size"], config["n_embd"]
    return {
        "wte.weight": ((V, C), "vocab_size, n_embd"),
        "wpe.weight": ((T, C), "n_positions, n_embd"),
        "ln_f.weight": ((C,), "n_embd"),
        "ln_f.bias": ((C,), "n_embd"),
    }


GLOBAL_TENSORS = frozenset(("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"))


def iter_expected_hf_shapes(config):
    """(HF name without prefix, (shape, the config fields that set it)) of every parameter, in
    file order: generated, since config.json's n_layer is not yet known to match the file."""
    yield from _global_shapes(config).items()
    per_layer = _layer_shapes(config["n_embd"])
    for i in range(config["n_layer"]):
        for name, shape in per_layer.items():
            yield f"h.{i}.{name}", (shape, "n_embd")


def expected_hf_shapes(config):
    """{HF name without prefix: (shape, the config fields that set it)} of every parameter."""
    return dict(iter_expected_hf_shapes(config))


def _layer_index(digits):
    """The layer number of a tensor name; a number too long to be real counts as beyond any
    n_layer (int() of thousands of digits would raise)."""
    return int(digits) if len(digits) <= 18 else float("inf")


def _is_expected(name, config):
    if name in GLOBAL_TENSORS:
        return True
    layer = LAYER_KEY.match(name)
    return (layer is not None and _layer_index(layer.group(1)) < config["n_layer"]
            and name[layer.end():] in LAYER_TENSORS)


def _is_conv1d(hf_name):
    return hf_name.startswith("h.") and hf_name.split(".", 2)[2] in CONV1D_WEIGHTS


def hf_to_state_dict(tensors, config, source=WEIGHTS_NAME):
    """HF GPT-2 tensors (dict name -> array) -> this project's state_dict, every tensor checked.

    ``config`` is ``read_hf_config``'s dict. ``source`` names the file in error messages.
    Work is bounded by the number of tensors in the file, whatever n_layer config.json claims.
    """
    stripped = {}
    for key, value in tensors.items():
        name = key[len("transformer."):] if key.startswith("transformer.") else key
        if name in stripped:
            raise HFFormatError(f"{source}: tensor {name!r} appears both with and without the 'transformer.' prefix")
        stripped[name] = value

    n_layer = config["n_layer"]
    lm_head = stripped.pop("lm_head.weight", None)
    for name in list(stripped):
        mask = MASK_BUFFER.match(name)
        if mask and _layer_index(mask.group(1)) < n_layer:
            del stripped[name]
    for name in sorted(stripped):
        if not _is_expected(name, config):
            layer = LAYER_KEY.match(name)
            if layer and _layer_index(layer.group(1)) >= n_layer:
                raise HFFormatError(f"{source}: extra tensor {name!r}: config.json says n_layer = {n_layer}")
            raise HFFormatError(f"{source}: unexpected tensor {name!r} (not part of a GPT-2 model)")
    # Every tensor of the file is expected, so the first missing one ends this loop after at
    # most len(stripped) + 1 names.
    for name, (shape, fields) in iter_expected_hf_shapes(config):
        if name not in stripped:
            raise HFFormatError(f"{source}: missing tensor {name!r}")
        value = stripped[name]
        if tuple(value.shape) != shape:
            raise HFFormatError(
                f"{source}: tensor {name!r} has shape {tuple(value.shape)} but config.json ({fields}) "
                f"implies {shape}")
        if value.dtype not in (np.float16, np.float32, np.float64):
            raise HFFormatError(f"{source}: tensor {name!r} has dtype {value.dtype}; expected a float type")
    wte = stripped["wte.weight"]
    if lm_head is not None and (lm_head.shape != wte.shape or not np.array_equal(lm_head, wte)):
        raise HFFormatError(f"{source}: tensor 'lm_head.weight' differs from 'wte.weight'; "
                            "only a head tied to the token embedding is supported")

    # float16 files are widened to float32 (the arithmetic here is float32 or float64).
    dtype = np.float64 if wte.dtype == np.float64 else np.float32
    state = {}
    for name, _ in iter_expected_hf_shapes(config):
        value = np.asarray(stripped[name], dtype=dtype)
        if _is_conv1d(name):
            value = value.T  # Conv1D (in, out) -> Linear (out, in)
        state["transformer." + name] = np.ascontiguousarray(value)
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return state


def state_dict_to_hf(state):
    """This project's state_dict -> HF GPT-2 tensors (``transformer.`` prefix, Conv1D (in, out),
    no lm_head.weight: it is tied to wte.weight, as GPT2LMHeadModel.save_pretrained writes)."""
    tensors = {}
    for name, value in state.items():
        if name == "lm_head.weight":
            continue
        if not name.startswith("transformer."):
            raise HFFormatError(f"parameter {name!r} has no place in the GPT-2 layout")
        hf_name = name[len("transformer."):]
        value = np.asarray(value)
        if _is_conv1d(hf_name):
            value = value.T  # Linear (out, in) -> Conv1D (in, out)
        tensors["transformer." + hf_name] = np.ascontiguousarray(value)
    return tensors


# ----------------------------------------------------------------------------------------
# directories


def _read_safetensors(path):
    st = _safetensors_numpy()
    if not os.path.exists(path):
        raise HFFormatError(f"{path}: not found")
    try:
        return st.load_file(path)
    except Exception as error:  # safetensors raises its own error types for damaged files
        message = " ".join(str(error).split())
        raise HFFormatError(f"{path}: not a readable safetensors file ({message})") from None


def check_memory(config, source=CONFIG_NAME):
    """Refuse, before any weight is read, a config whose model would not fit in memory.

    Counted: the file's tensors and their converted copy (float32, two copies of the weights), and
    the model built from them with one sequence's generation work (``estimate_memory``, as
    tensorlite-sample counts it). An estimate that stops impossible sizes (n_layer 10**6) with one
    line, instead of minutes of allocation ending in MemoryError.
    """
    from .gpt_config import GPTConfig, available_memory, count_params, estimate_memory, format_bytes

    gpt_config = GPTConfig(**{k: config[k] for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")})
    needed = 2 * 4 * count_params(gpt_config) + estimate_memory(gpt_config, 1, dtype=np.float32, training=False)
    available = available_memory()
    if available is not None and needed > available:
        raise HFFormatError(
            f"{source}: this model (n_layer {config['n_layer']}, n_embd {config['n_embd']}, vocab_size "
            f"{config['vocab_size']}, n_positions {config['block_size']}) needs about {format_bytes(needed)}, "
            f"more than the {format_bytes(available)} of available memory")


def read_hf_dir(path):
    """(GPTConfig dict, state_dict) from a Hugging Face GPT-2 directory, everything checked."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise HFFormatError(f"{path}: not a directory (expected config.json + model.safetensors)")
    config_path = os.path.join(path, CONFIG_NAME)
    weights_path = os.path.join(path, WEIGHTS_NAME)
    config = read_hf_config(config_path)
    check_memory(config, config_path)
    tensors = _read_safetensors(weights_path)
    state = hf_to_state_dict(tensors, config, source=weights_path)
    config["bias"] = True
    return config, state


def _write_json(path, obj):
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode("utf-8")))


def _hf_writer(config, state, tokenizer=None):
    """Check everything, then return ``write(directory)``, which writes config.json +
    model.safetensors (+ the tokenizer's files) into an existing directory."""
    st = _safetensors_numpy()
    hf_config = config_to_hf(config)
    hf_config["torch_dtype"] = str(np.asarray(state["transformer.wte.weight"]).dtype)
    tensors = state_dict_to_hf(state)
    # Check before writing anything: a state that does not fit its config never reaches disk.
    shape_config = dict(vocab_size=hf_config["vocab_size"], block_size=hf_config["n_positions"],
                        n_layer=hf_config["n_layer"], n_embd=hf_config["n_embd"])
    hf_to_state_dict(tensors, shape_config, source="the model state")
    d = gpt2 = None
    if tokenizer is not None:
        d = tokenizer.to_dict() if hasattr(tokenizer, "to_dict") else dict(tokenizer)
        if d.get("type") == "gpt2":
            from .gpt2_tokenizer import GPT2Tokenizer

            try:
                gpt2 = GPT2Tokenizer.from_dict(d)
            except ValueError as error:
                raise HFFormatError(f"the tokenizer cannot be written: {' '.join(str(error).split())}") from None

    def write(path):
        # st.save returns the file's bytes, so they go through the same atomic write as the JSON files.
        weights_path = os.path.join(path, WEIGHTS_NAME)
        atomic_write(weights_path, lambda f: f.write(st.save(tensors, metadata={"format": "pt"})))
        _write_json(os.path.join(path, CONFIG_NAME), hf_config)
        if d is not None:
            _write_json(os.path.join(path, TOKENIZER_NAME), d)
        if gpt2 is not None:
            gpt2.save_vocab_merges(path)

    return write


def write_hf_dir(path, config, state, tokenizer=None):
    """Write config.json + model.safetensors (+ the tokenizer's files) into directory ``path``,
    file by file, beside whatever else it holds (as Hugging Face's ``save_pretrained`` does);
    ``export_hf_dir`` replaces the whole directory atomically instead."""
    write = _hf_writer(config, state, tokenizer)
    os.makedirs(path, exist_ok=True)
    write(path)


def export_hf_dir(path, config, state, tokenizer=None, overwrite=False):
    """Make directory ``path`` hold exactly this model's files, all old or all new even if the
    process is killed half-way (models/atomic_dir.py). Returns notes on leftovers recovered.

    ``TargetExistsError`` if ``path`` is not a directory, or is not empty and not ``overwrite``;
    ``RunLockError`` if another process is exporting into ``path``.
    """
    from .atomic_dir import replace_directory

    write = _hf_writer(config, state, tokenizer)
    return replace_directory(path, write, overwrite=overwrite)


# ----------------------------------------------------------------------------------------
# checkpoints


def read_hf_tokenizer(path, gpt2_tokenizer=False):
    """The tokenizer dict stored in an HF directory.

    tensorlite_tokenizer.json (written by ``hf_from_checkpoint``) is used when present. GPT-2's own
    byte-level BPE (vocab.json + merges.txt) is used only when asked for with ``gpt2_tokenizer``.
    """
    from .tokenizer import tokenizer_from_dict

    own = os.path.join(path, TOKENIZER_NAME)
    if gpt2_tokenizer:
        from .gpt2_tokenizer import GPT2Tokenizer

        try:
            return GPT2Tokenizer.from_directory(path).to_dict()
        except (OSError, ValueError) as error:
            raise HFFormatError(" ".join(str(error).split())) from None
    if os.path.exists(own):
        d = _read_json_file(own)
        try:
            tokenizer_from_dict(d)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise HFFormatError(f"{own}: not a usable tokenizer ({' '.join(str(error).split())})") from None
        return d
    hint = "; pass --gpt2-tokenizer to use its vocab.json + merges.txt" if os.path.exists(
        os.path.join(path, "vocab.json")) else ""
    raise HFFormatError(f"{path}: no tokenizer ({TOKENIZER_NAME} not found){hint}")


def checkpoint_from_hf(hf_dir, ckpt_path, gpt2_tokenizer=False):
    """Convert a Hugging Face GPT-2 directory to a tensorlite checkpoint (iteration 0, no optimizer)."""
    from . import checkpoint as ckpt_io

    config, state = read_hf_dir(hf_dir)
    config["dropout"] = 0.0
    tokenizer = read_hf_tokenizer(hf_dir, gpt2_tokenizer=gpt2_tokenizer)
    _check_vocab(tokenizer, config["vocab_size"], hf_dir)
    ckpt_io.save(ckpt_path, state, optimizer=None, config=config, tokenizer=tokenizer,
                 rng_state=None, iteration=0, extra={"converted_from": os.path.abspath(hf_dir)})


def _check_vocab(tokenizer_dict, vocab_size, where):
    from .tokenizer import tokenizer_from_dict

    n = tokenizer_from_dict(tokenizer_dict).vocab_size
    if n > vocab_size:
        raise HFFormatError(f"{where}: the tokenizer has {n} tokens but the model only {vocab_size} (vocab_size)")


def hf_from_checkpoint(ckpt_path, hf_dir, overwrite=False):
    """Write a tensorlite checkpoint's model (and tokenizer) as a Hugging Face GPT-2 directory,
    replacing it atomically (``export_hf_dir``); returns the notes on leftovers recovered."""
    from . import checkpoint as ckpt_io
    from .gpt_config import GPTConfig

    checkpoint = ckpt_io.load(ckpt_path)
    try:
        config = GPTConfig.from_dict(checkpoint.config)
    except (ValueError, TypeError) as error:
        raise HFFormatError(f"{ckpt_path}: unusable model config ({error})") from None
    return export_hf_dir(hf_dir, config, checkpoint.model_state, tokenizer=checkpoint.tokenizer, overwrite=overwrite)
