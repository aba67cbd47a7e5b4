"""Talking to the OpenBLAS libraries in this process through ctypes.

Two OpenBLAS builds can live side by side in one Python process:

* NumPy's bundled ``libscipy_openblas64_`` (64-bit integers, symbols end in ``64_``):
  used by ``np.matmul`` / ``np.dot`` called from Python;
* SciPy's bundled ``libscipy_openblas`` (32-bit integers): used by ``np.dot``
  *inside* Numba-compiled code, which calls BLAS through ``scipy.linalg.cython_blas``.

Each has its own thread pool, so the threading policy in ``tensorlite.kernels`` has to
set both. Nothing here imports SciPy: the SciPy library is only touched once it is
already loaded (``loaded_only=True``) or when the Numba kernels are about to use it.
"""

import ctypes
import glob
import os


class OpenBLAS:
    """A handle on one loaded OpenBLAS library and its thread-count functions."""

    def __init__(self, path, suffix):
        self.path = path
        # Loading an already-loaded path returns the same handle: no second copy.
        self._lib = ctypes.CDLL(path)
        self._get_threads = getattr(self._lib, "scipy_openblas_get_num_threads" + suffix)
        self._set_threads = getattr(self._lib, "scipy_openblas_set_num_threads" + suffix)
        self._corename = getattr(self._lib, "scipy_openblas_get_corename" + suffix)
        self._config = getattr(self._lib, "scipy_openblas_get_config" + suffix)
        self._get_threads.restype = ctypes.c_int
        self._set_threads.argtypes = [ctypes.c_int]
        self._set_threads.restype = None
        self._corename.restype = ctypes.c_char_p
        self._config.restype = ctypes.c_char_p

    def get_num_threads(self):
        return int(self._get_threads())

    def set_num_threads(self, n):
        self._set_threads(int(n))

    def corename(self):
        """The kernel set OpenBLAS picked for this CPU, e.g. 'Haswell' or 'SkylakeX'."""
        return self._corename().decode()

    def config(self):
        return self._config().decode()

    def info(self):
        return {"library": os.path.basename(self.path), "corename": self.corename(),
                "threads": self.get_num_threads(), "config": self.config()}


def _loaded_paths():
    """Paths of shared libraries mapped into this process (Linux); empty elsewhere."""
    try:
        with open("/proc/self/maps") as maps:
            return {line.split()[-1] for line in maps if "/" in line}
    except OSError:
        return set()


_numpy_blas = None
_scipy_blas = None


def numpy_blas():
    """NumPy's bundled OpenBLAS, or None when NumPy was built against another BLAS."""
    global _numpy_blas
    if _numpy_blas is None:
        import numpy
        libs = os.path.join(os.path.dirname(os.path.dirname(numpy.__file__)), "numpy.libs")
        found = sorted(glob.glob(os.path.join(libs, "libscipy_openblas64_*.so*")))
        if found:
            try:
                _numpy_blas = OpenBLAS(found[0], "64_")
            except (OSError, AttributeError):
                _numpy_blas = False
        else:
            _numpy_blas = False
    return _numpy_blas or None


def scipy_blas(loaded_only=True):
    """SciPy's bundled OpenBLAS, or None.

    With loaded_only=True it is returned only if SciPy already loaded it (so asking
    costs nothing); otherwise ``scipy.linalg.cython_blas`` is imported first, which is
    what Numba does the first time it compiles an ``np.dot``.
    """
    global _scipy_blas
    if _scipy_blas:
        return _scipy_blas
    if not loaded_only:
        try:
            import scipy.linalg.cython_blas  # noqa: F401  (loads the library)
        except ImportError:
            return None
    path = next((p for p in _loaded_paths()
                 if "libscipy_openblas" in os.path.basename(p)
                 and "openblas64_" not in os.path.basename(p)), None)
    if path is None:
        return None
    try:
        _scipy_blas = OpenBLAS(path, "")
    except (OSError, AttributeError):
        return None
    return _scipy_blas
