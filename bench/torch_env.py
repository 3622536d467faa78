"""torch_env.py -- import PyTorch with every thread pool set to the same count, for fair timing.

PyTorch's CPU ops run on its intra-op pool (torch.set_num_threads), but the BLAS it calls
(Debian's build: libblas.so.3, which the alternatives system points at OpenBLAS or the reference
BLAS) and the OpenMP runtime (libgomp) size their own pools from OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS and MKL_NUM_THREADS when they are loaded, i.e. when torch is imported.
Setting them afterwards does nothing, so this module must be imported -- and setup() called --
before anything imports torch.

    import torch_env
    torch = torch_env.setup(threads=2, wait_policy="passive")
    info = torch_env.describe(torch)   # {"threads":..,"omp_wait_policy":..,"blas":..}
"""
import os
import sys


def setup(threads, wait_policy="passive"):
    """Sets the thread counts and OMP_WAIT_POLICY, then imports and returns torch."""
    if "torch" in sys.modules:
        raise RuntimeError("torch_env.setup: torch was imported before its thread counts were set")
    n = str(int(threads))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = n
    os.environ["OMP_WAIT_POLICY"] = wait_policy.upper()
    import torch  # noqa: E402 -- deliberately after the environment is set
    torch.set_num_threads(int(threads))
    torch.set_num_interop_threads(int(threads))
    return torch


def loaded_blas():
    """The BLAS and OpenMP libraries mapped into this process (after torch is imported)."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if "/" in line else ""
                base = os.path.basename(path)
                if any(k in base for k in ("blas", "mkl", "gomp", "omp")):
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    return sorted(libs)


def describe(torch):
    """What the timing ran with, for the JSON line."""
    cfg = torch.__config__.show()
    blas_info = next((p.split("=", 1)[1] for p in cfg.replace(",", " ").split()
                      if p.startswith("BLAS_INFO=")), "?")
    core = None
    try:  # OpenBLAS's own kernel choice, when the BLAS is OpenBLAS
        import ctypes
        for lib in loaded_blas():
            if "openblas" in lib:
                h = ctypes.CDLL(lib)
                h.openblas_get_corename.restype = ctypes.c_char_p
                core = h.openblas_get_corename().decode()
                break
    except (OSError, AttributeError):
        pass
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "blas_info": blas_info, "blas_libs": loaded_blas(), "openblas_core": core}
