"""glibc malloc options that let a training loop reuse its memory instead of paging it in again.

Why
---
A training step allocates and frees the same megabyte-sized activation and gradient arrays
every time. NumPy takes them from ``malloc``. glibc serves any block above its *mmap threshold*
(128 KiB to start with) by a fresh ``mmap`` and returns it with ``munmap`` on free; the
next step's identical array is then a new mapping whose every page faults in (and is zeroed
by the kernel) again. Blocks below the threshold come from the heap, but when the free space at
the heap's top exceeds the *trim threshold* (128 KiB) glibc gives it back with ``brk``, with the
same result. On a 4-layer, 128-wide GPT (batch 12 x 64 tokens) that was 10-14 ms of a 46 ms
step on a Zen 4 host.

glibc raises the mmap threshold by itself after freeing a mapped block (up to 32 MiB), so
whether a process pays this tax used to depend on what it happened to free first; a benchmark
that measured a 4 MB matrix product before training never paid it, a user's fresh process
sometimes did.

What this module does
---------------------
On import it calls ``mallopt`` once, through ctypes:

* ``M_MMAP_THRESHOLD = MMAP_THRESHOLD`` (1 GiB): blocks up to this size come from the heap, so a
  freed activation is handed to the next request of the same size with its pages still mapped.
  Only allocations larger than this get their own mapping. (A glibc that refuses a threshold
  above its documented 32 MiB ceiling gets 32 MiB.)
* ``M_TRIM_THRESHOLD = TRIM_THRESHOLD`` (-1, "never trim"): free memory at the top of the heap
  is kept for the next step rather than returned at the end of each step. Any finite value
  would be a model-size limit: a gpt-mini step (6 layers, 384 wide, batch 64 x 256 tokens)
  frees 2.4 GiB at its end, more than the largest threshold mallopt takes (2 GiB), and with
  that threshold it still paid 21,000 page faults and 3 s of kernel time per step.

Setting either option also switches glibc's dynamic threshold off, so the behaviour no longer
depends on the process's history. The cost is that memory a training step freed stays in the
process (counted in RSS) until it exits; the step's own peak is unchanged, because the next step
needs the same memory again. ``M_ARENA_MAX`` is left alone: the arrays are allocated by the
Python thread, in the main arena.

Nothing is changed when

* the C library is not glibc (musl, macOS, Windows): ``mallopt`` is then absent or means
  something else, so the module does nothing;
* ``TENSORLITE_KEEP_MALLOC=1`` is set: the opt-out, for a process whose other work needs
  memory returned promptly;
* the user already tuned glibc malloc through ``MALLOC_MMAP_THRESHOLD_``,
  ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_`` or ``GLIBC_TUNABLES``
  (glibc.malloc.*): their choice wins.

``info()`` says what was set and why, for ``tl.kernels.runtime_info()`` and benchmark headers.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30          # 1 GiB: larger than any activation of the models we ship
TRIM_THRESHOLD = -1               # glibc's "never trim" (mallopt(3))
# glibc's documented ceiling for the mmap threshold (32 MiB on 64-bit); recent versions accept
# more, an older one that refuses MMAP_THRESHOLD gets this instead
MMAP_THRESHOLD_FALLBACK = 32 << 20

OPT_OUT_VARIABLE = "TENSORLITE_KEEP_MALLOC"
USER_MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                         "MALLOC_MMAP_MAX_")

_state = {"applied": False, "reason": "not configured yet", "options": {}}


def _glibc_version() -> str | None:
    """'2.36' on glibc, None on any other C library."""
    name, version = platform.libc_ver()
    return version if name == "glibc" and version else None


def _user_choice() -> str | None:
    """The environment variable through which the user tuned glibc malloc, if any."""
    for name in USER_MALLOC_VARIABLES:
        if name in os.environ:
            return name
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def configure() -> dict:
    """Apply the malloc options unless opted out or not on glibc; return ``info()``.

    Safe to call more than once: the options are set on the first successful call only.
    """
    if _state["applied"]:
        return info()
    glibc = _glibc_version()
    if os.environ.get(OPT_OUT_VARIABLE, "").strip() not in ("", "0"):
        _state["reason"] = f"{OPT_OUT_VARIABLE} is set: glibc defaults kept"
    elif glibc is None:
        _state["reason"] = "not glibc: nothing to set"
    elif _user_choice() is not None:
        _state["reason"] = f"{_user_choice()} is set: the user's malloc settings kept"
    else:
        libc = ctypes.CDLL(None)  # the C library the interpreter already runs on
        wanted = {"M_MMAP_THRESHOLD": (M_MMAP_THRESHOLD, (MMAP_THRESHOLD, MMAP_THRESHOLD_FALLBACK)),
                  "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, (TRIM_THRESHOLD,))}
        for name, (parameter, values) in wanted.items():
            for value in values:  # the first value glibc accepts (mallopt returns 1)
                if libc.mallopt(ctypes.c_int(parameter), ctypes.c_int(value)) == 1:
                    _state["options"][name] = value
                    break
        _state["applied"] = bool(_state["options"])
        _state["reason"] = (f"glibc {glibc}: mallopt set" if _state["applied"]
                            else f"glibc {glibc} refused mallopt: defaults kept")
    return info()


def info() -> dict:
    """What this module did: ``{"applied": bool, "reason": str, "options": {name: value}}``."""
    return {"applied": _state["applied"], "reason": _state["reason"],
            "options": dict(_state["options"])}


def format_info(settings: dict | None = None) -> str:
    """One line for benchmark headers, e.g. 'malloc=M_MMAP_THRESHOLD=1024MiB,M_TRIM_THRESHOLD=never'."""
    settings = info() if settings is None else settings
    if not settings["applied"]:
        return f"malloc=defaults ({settings['reason']})"
    return "malloc=" + ",".join(f"{name}={_describe(value)}" for name, value in settings["options"].items())


def _describe(value: int) -> str:
    return "never" if value == -1 else f"{value >> 20}MiB"


configure()
