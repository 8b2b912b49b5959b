"""One thread count for every library that computes: torch, GDAL, and NumPy's BLAS (via threadpoolctl).

:func:`set_threads` is called once per run (the CLI's ``--threads``, a batch worker's share); outputs record the
figure in their provenance tags (:func:`current_threads`). GDAL gets it where hsikit makes it work in parallel,
compressing outputs and building overviews (:func:`gdal_threads`); its reads stay on one thread each (the engine
reads in a thread of its own, beside the model).
"""

from __future__ import annotations

import os
import sys

_threads: int | None = None

#: read by OpenMP/BLAS runtimes when they load: set before torch is imported, they need no other call
_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(n: int | None = None) -> int:
    """Use ``n`` threads (default: all available cores) in torch, GDAL and the BLAS NumPy uses; returns ``n``."""
    global _threads
    n = int(n or available_cores())
    if n < 1:
        raise ValueError(f"threads must be at least 1, not {n}")
    _threads = n
    for k in _ENV:
        os.environ[k] = str(n)
    if "torch" in sys.modules:  # already loaded: its pool is sized, resize it
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)  # BLAS/OpenMP pools already loaded (NumPy's)
    except ImportError:
        pass
    return n


def current_threads() -> int:
    """The thread count set by :func:`set_threads`, else all available cores."""
    return _threads or available_cores()


def gdal_threads() -> str:
    """The value for GDAL's ``NUM_THREADS`` creation and config options."""
    return str(current_threads())
