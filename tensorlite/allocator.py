"""tensorlite's glibc malloc options, under the names this module has always had.

The options, why they are set (a training step reused its freed memory instead of faulting it in
again: 10-14 ms of a 46 ms step) and the opt-out (``TENSORLITE_KEEP_MALLOC=1``) are step 2 of
``tensorlite/runtime.py``, which applies every process-level setting of tensorlite in one place
when tensorlite is imported. ``info()`` says what was set and why.
"""

from tensorlite.runtime import (  # noqa: F401
    KEEP_MALLOC as OPT_OUT_VARIABLE,
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    MMAP_THRESHOLD,
    MMAP_THRESHOLD_FALLBACK,
    TRIM_THRESHOLD,
    USER_MALLOC_VARIABLES,
    configure_malloc as configure,
    format_malloc_info as format_info,
    malloc_info as info,
)
