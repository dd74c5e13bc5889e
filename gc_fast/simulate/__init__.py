"""Discrete-event model of synchronous gradient-coded iterations: predict, compare, plan.

The public API, shared with local mode (the real master with in-process
workers on this virtual clock), which imports it on every call: importing it
loads neither the command line nor the calibration. The model itself is
described by ``python -m gc_fast.simulate --help`` (gc_fast.simulate.cli).

* costs: ``CostModel`` (``hosts``: separate hosts, as the test bed's;
  ``costs.on_hosts``, ``costs.testbed_costs_path``), ``DEFAULT_COSTS_PATH``,
  ``default_costs``.
* timing: ``timeline`` / ``Timeline``, ``message_arrival_times``,
  ``master_seconds``.
* workload: ``Workload`` / ``build_workload``, ``decode_times``, the delays
  (``straggler_delays``, ``compute_factors``, ``trace_delays``),
  ``simulate_iterations`` and ``summarize``.
* compare (``gc_fast.simulate.compare``): schemes side by side, plan, tables.
* calibrate (loaded on first use): ``validate_run``; ``calibrate``,
  ``calibrate_testbed`` (the test bed's network costs), the fits and
  ``worker_cpu_seconds`` are in ``gc_fast.simulate.calibrate``.
"""
from .costs import DEFAULT_COSTS_PATH, CostModel, default_costs
from .timing import Timeline, master_seconds, message_arrival_times, timeline
from .workload import (
    Workload,
    build_workload,
    compute_factors,
    decode_times,
    simulate_iterations,
    straggler_delays,
    summarize,
    trace_delays,
)

__all__ = ["CostModel", "DEFAULT_COSTS_PATH", "default_costs", "Timeline", "timeline",
           "message_arrival_times", "master_seconds", "decode_times", "Workload",
           "build_workload", "straggler_delays", "compute_factors", "trace_delays",
           "simulate_iterations", "summarize", "validate_run", "main"]


def __getattr__(name):
    if name == "validate_run":  # the calibration harness imports the data loaders and launch
        from .calibrate import validate_run

        return validate_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv=None):
    """python -m gc_fast.simulate with these arguments; returns its exit status."""
    from .cli import main as run_command_line

    return run_command_line(argv)
