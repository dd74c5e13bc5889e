"""gc_fast: straggler-tolerant distributed gradient descent by gradient coding.

Codes (`gc_fast.codes`), compute kernels (`gc_fast.kernels`), data
(`gc_fast.data`), straggler models (`gc_fast.stragglers`), the one driver
(`gc_fast.driver`) over MPI transports (`gc_fast.transports`) or in-process
(`gc_fast.local`), your own model (`gc_fast.run`), scikit-learn estimators, the
trainer (`python -m gc_fast.train`) and the simulator (`python -m gc_fast.simulate`).
"""
__version__ = "0.1.0"

from .codes import make_code  # noqa: E402

__all__ = ["make_code", "__version__"]

from .api import RunResult, run  # noqa: E402

# The estimators import scikit-learn (about a second per process): loaded on first use.
_LAZY_EXPORTS = {"GradientCodedLogisticRegression": "estimators",
                 "GradientCodedLinearRegression": "estimators"}


def __getattr__(name):
    if name in _LAZY_EXPORTS:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ += ["run", "RunResult", *_LAZY_EXPORTS]
