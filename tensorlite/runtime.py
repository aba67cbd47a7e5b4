"""Every process-level setting that importing tensorlite applies, in the order it is applied.

``tensorlite/__init__.py`` imports this module before anything else, and this module imports
only the standard library, so step 1 runs before NumPy loads. Each setting can be switched off
by an environment variable; ``applied()`` says what was done, and ``tl.kernels.runtime_info()``
reports it.

An opt-out variable (``TENSORLITE_KEEP_...``) holds "1", "true" or "yes" to opt out, and "",
"0", "false" or "no" (or is unset) to keep the setting; case and surrounding blanks do not
matter. Any other value raises ``EnvironmentVariableError`` (tensorlite/environment.py)
naming the variable and these values.

1. OpenBLAS kernel set (``OPENBLAS_CORETYPE`` removed from ``os.environ``)
   Some environments pin OpenBLAS to an older CPU's kernels with OPENBLAS_CORETYPE (Haswell =
   AVX2); OpenBLAS reads the variable once, when NumPy loads it. When tensorlite is imported
   before NumPy the pin is dropped, so OpenBLAS picks the kernels for this CPU (AVX-512 on
   recent x86: float32 GEMM ~1.8x faster, same accuracy). Imported after NumPy, nothing can be
   changed. ``tl.kernels.runtime_info()`` reports the kernel set actually in use.
   Opt out: ``TENSORLITE_KEEP_OPENBLAS_CORETYPE=1``.

2. glibc malloc thresholds (``mallopt``: ``M_MMAP_THRESHOLD`` 1 GiB, ``M_TRIM_THRESHOLD`` never)
   A training step frees and reallocates the same megabyte-sized arrays. glibc serves blocks
   above its mmap threshold (128 KiB at first) by a fresh mapping and unmaps them on free, and
   trims free memory at the heap's top above 128 KiB, so the next step faults every page in
   again: 10-14 ms of a 46 ms step (4-layer, 128-wide GPT, batch 12 x 64 tokens, Zen 4). With
   these options freed blocks stay in the heap, mapped, for the next step; the cost is that
   freed memory stays in the process (RSS) until it exits. A glibc that refuses a 1 GiB
   threshold gets its documented ceiling, 32 MiB. Not applied on other C libraries (musl,
   macOS, Windows), nor when the user tuned malloc through ``MALLOC_MMAP_THRESHOLD_``,
   ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_`` or ``GLIBC_TUNABLES``
   (glibc.malloc.*): their choice wins. Details in ``configure_malloc``'s section below.
   Opt out: ``TENSORLITE_KEEP_MALLOC=1``.

3. Numba threading layer (OpenMP first, ``GOMP_SPINCOUNT=10000``), when the Numba kernel set
   first loads (at import, unless ``TENSORLITE_KERNELS=numpy``; ``tensorlite.kernels`` calls
   ``apply_numba_defaults()`` before importing Numba's kernels)
   Measured on a 2-core VM: waking a sleeping worker costs ~40 us, more than many kernels take,
   so workqueue (whose workers always sleep) made a GPT training step ~1.8x slower than
   OpenMP; OpenMP's default spin of ~300,000 rounds (~8 ms) stalled launches by up to 8 ms
   whenever another process held the second core. GOMP_SPINCOUNT=10000 (~0.25 ms) keeps the
   worker awake across the short NumPy steps between kernels and bounds that stall.
   Opt out: set ``NUMBA_THREADING_LAYER`` (the layer order is left to Numba), or
   ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` (the spin is left to the user); these are
   defaults, and the user's variables win. ``NUMBA_NUM_THREADS`` is never set, only checked.

BLAS thread counts are not set here: they follow the active kernel set and change with
``tl.kernels.use()`` and ``set_num_threads()`` (one thread with the Numba kernels, the
default with the NumPy ones; see "Threading policy" in ``tensorlite.kernels``).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

from tensorlite.environment import EnvironmentVariableError

OPT_OUT_YES = ("1", "true", "yes")
OPT_OUT_NO = ("", "0", "false", "no")

KEEP_OPENBLAS_CORETYPE = "TENSORLITE_KEEP_OPENBLAS_CORETYPE"
KEEP_MALLOC = "TENSORLITE_KEEP_MALLOC"


def opted_out(variable: str) -> bool:
    """Whether opt-out `variable` is set (see the module docstring for the values)."""
    value = os.environ.get(variable, "")
    word = value.strip().lower()
    if word in OPT_OUT_YES:
        return True
    if word in OPT_OUT_NO:
        return False
    raise EnvironmentVariableError(
        variable, value,
        f"is not a yes/no value: set {', '.join(map(repr, OPT_OUT_YES))} to opt out, or "
        f"{', '.join(map(repr, OPT_OUT_NO[1:]))} (or leave it empty or unset) to keep tensorlite's "
        "setting")


# ---------------------------------------------------------------------------------------------
# 1. OpenBLAS kernel set

_coretype = {"applied": False, "reason": "not configured yet", "dropped": None}


def drop_openblas_coretype() -> dict:
    """Remove OPENBLAS_CORETYPE unless opted out or NumPy (and so OpenBLAS) is already loaded."""
    keep = opted_out(KEEP_OPENBLAS_CORETYPE)
    value = os.environ.get("OPENBLAS_CORETYPE")
    if value is None:
        _coretype.update(applied=False, reason="OPENBLAS_CORETYPE not set")
    elif "numpy" in sys.modules:
        _coretype.update(applied=False, reason="NumPy was imported first: OpenBLAS already read it")
    elif keep:
        _coretype.update(applied=False, reason=f"{KEEP_OPENBLAS_CORETYPE} is set: kept")
    else:
        os.environ.pop("OPENBLAS_CORETYPE")
        _coretype.update(applied=True, reason=f"OPENBLAS_CORETYPE={value} dropped", dropped=value)
    return dict(_coretype)


# ---------------------------------------------------------------------------------------------
# 2. glibc malloc thresholds
#
# glibc raises the mmap threshold by itself after freeing a mapped block (up to 32 MiB), so
# whether a process paid the page-fault tax used to depend on what it happened to free first.
# Setting either option switches that dynamic threshold off. The trim threshold is "never"
# because any finite value is a model-size limit: a gpt-mini step (6 layers, 384 wide, batch
# 64 x 256 tokens) frees 2.4 GiB at its end, more than the largest threshold mallopt takes
# (2 GiB), and with that threshold it still paid 21,000 page faults and 3 s of kernel time per
# step. M_ARENA_MAX is left alone: the arrays are allocated by the Python thread, in the main
# arena.

# mallopt parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30          # 1 GiB: larger than any activation of the models we ship
TRIM_THRESHOLD = -1               # glibc's "never trim" (mallopt(3))
# glibc's documented ceiling for the mmap threshold (32 MiB on 64-bit); recent versions accept
# more, an older one that refuses MMAP_THRESHOLD gets this instead
MMAP_THRESHOLD_FALLBACK = 32 << 20

USER_MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                         "MALLOC_MMAP_MAX_")

_malloc = {"applied": False, "reason": "not configured yet", "options": {}}


def _glibc_version() -> str | None:
    """'2.36' on glibc, None on any other C library."""
    name, version = platform.libc_ver()
    return version if name == "glibc" and version else None


def _user_malloc_choice() -> str | None:
    """The environment variable through which the user tuned glibc malloc, if any."""
    for name in USER_MALLOC_VARIABLES:
        if name in os.environ:
            return name
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def configure_malloc() -> dict:
    """Apply the malloc options unless opted out or not on glibc; return ``malloc_info()``.

    Safe to call more than once: the options are set on the first successful call only.
    """
    if _malloc["applied"]:
        return malloc_info()
    glibc = _glibc_version()
    if opted_out(KEEP_MALLOC):
        _malloc["reason"] = f"{KEEP_MALLOC} is set: glibc defaults kept"
    elif glibc is None:
        _malloc["reason"] = "not glibc: nothing to set"
    elif _user_malloc_choice() is not None:
        _malloc["reason"] = f"{_user_malloc_choice()} is set: the user's malloc settings kept"
    else:
        libc = ctypes.CDLL(None)  # the C library the interpreter already runs on
        wanted = {"M_MMAP_THRESHOLD": (M_MMAP_THRESHOLD, (MMAP_THRESHOLD, MMAP_THRESHOLD_FALLBACK)),
                  "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, (TRIM_THRESHOLD,))}
        for name, (parameter, values) in wanted.items():
            for value in values:  # the first value glibc accepts (mallopt returns 1)
                if libc.mallopt(ctypes.c_int(parameter), ctypes.c_int(value)) == 1:
                    _malloc["options"][name] = value
                    break
        _malloc["applied"] = bool(_malloc["options"])
        _malloc["reason"] = (f"glibc {glibc}: mallopt set" if _malloc["applied"]
                             else f"glibc {glibc} refused mallopt: defaults kept")
    return malloc_info()


def malloc_info() -> dict:
    """What step 2 did: ``{"applied": bool, "reason": str, "options": {name: value}}``."""
    return {"applied": _malloc["applied"], "reason": _malloc["reason"],
            "options": dict(_malloc["options"])}


def format_malloc_info(settings: dict | None = None) -> str:
    """One line for benchmark headers, e.g. 'malloc=M_MMAP_THRESHOLD=1024MiB,M_TRIM_THRESHOLD=never'."""
    settings = malloc_info() if settings is None else settings
    if not settings["applied"]:
        return f"malloc=defaults ({settings['reason']})"
    return "malloc=" + ",".join(f"{name}={_describe(value)}" for name, value in settings["options"].items())


def _describe(value: int) -> str:
    return "never" if value == -1 else f"{value >> 20}MiB"


# ---------------------------------------------------------------------------------------------
# 3. Numba threading layer

THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
GOMP_SPINCOUNT = "10000"

_numba = {"applied": False, "reason": "Numba kernels not loaded", "threading_layer_priority": None,
          "gomp_spincount": None}


def apply_numba_defaults() -> dict:
    """Set Numba's threading-layer order and OpenMP's spin, where the user set neither.

    Must run before Numba starts its thread pool (the OpenMP runtime reads GOMP_SPINCOUNT when
    it loads); ``tensorlite.kernels`` calls it just before importing the Numba kernels.
    """
    import numba  # only the Numba kernel set needs it, and it takes ~0.2 s to import

    set_here = []
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER_PRIORITY = list(THREADING_LAYER_PRIORITY)
        _numba["threading_layer_priority"] = list(THREADING_LAYER_PRIORITY)
        set_here.append("threading layer priority " + ",".join(THREADING_LAYER_PRIORITY))
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
        _numba["gomp_spincount"] = GOMP_SPINCOUNT
        set_here.append(f"GOMP_SPINCOUNT={GOMP_SPINCOUNT}")
    if set_here:
        _numba.update(applied=True, reason="set " + ", ".join(set_here))
    elif not _numba["applied"]:
        _numba["reason"] = "the user's NUMBA_THREADING_LAYER and OMP_WAIT_POLICY/GOMP_SPINCOUNT kept"
    return dict(_numba)


# ---------------------------------------------------------------------------------------------

def applied() -> dict:
    """What this module did, step by step: each entry has "applied" (bool) and "reason"."""
    return {"openblas_coretype": dict(_coretype), "malloc": malloc_info(),
            "numba_threading": dict(_numba)}


drop_openblas_coretype()  # before anything imports NumPy
configure_malloc()
