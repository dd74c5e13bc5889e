"""gc_fast: straggler-tolerant distributed gradient descent by gradient coding.

Codes (`gc_fast.codes`), compute kernels (`gc_fast.kernels`), data
(`gc_fast.data`), straggler models (`gc_fast.stragglers`) and the MPI trainer
(`python -m gc_fast.train`, built on `gc_fast.runtime`).
"""
__version__ = "0.1.0"

from .codes import make_code  # noqa: E402

__all__ = ["make_code", "__version__"]
