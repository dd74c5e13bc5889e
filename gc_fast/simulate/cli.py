"""The command line: parse the options, load the costs, then simulate, calibrate or validate."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from ..codes import PAPER_SCHEMES
from ..data import SYNTHETIC, load_data
from ..stragglers import __doc__ as DELAY_DOC
from ..stragglers import parse_delay
from . import calibrate as calibration
from .compare import (
    EXACT_MAX_WORKERS,
    compare,
    configurations,
    plan,
    plan_text,
    results_table,
    save_plot,
    validation_table,
)
from .costs import DEFAULT_COSTS_PATH, CostModel, default_costs, on_hosts, testbed_costs_path
from .workload import compute_factors, straggler_delays, trace_delays

USAGE = """Discrete-event model of synchronous gradient-coded iterations: predict, compare, plan.

    python -m gc_fast.simulate --workers 8 --stragglers 1,2 --scheme all --delay fixed:p=0.1,seconds=0.05
    python -m gc_fast.simulate --workers 1000 --stragglers 1,3,7 --plan --delay exp:shift=0,mean=0.002
    python -m gc_fast.simulate --calibrate              # measure this machine, save the cost file
    python -m gc_fast.simulate --validate RUN.json ...  # predicted vs measured trainer runs
    python -m gc_fast.simulate --testbed-profile t2.micro --scheme naive,crc -s 1,3
    python -m gc_fast.simulate --calibrate --testbed-profile t2.micro  # root: on the test bed

One iteration (seconds after the master starts it; CostModel names the costs):

1. The master handles the workers' query points in worker order: gathers
   each (master_byte_seconds per byte), hands it to MPI (message_seconds)
   and sends it (bytes / bandwidth: the master's copy on one machine, its
   egress link on a cluster). Worker w has its point `latency` later.
2. Worker w sleeps its injected delay (``--delay``, drawn by the trainer's own
   ``gc_fast.stragglers.DelayModel``: delays_matrix, compute_factor; or
   replayed with ``--trace``), then computes its messages in send order:
   nnz_seconds per stored non-zero of the rows a message covers (or
   partition_seconds per 1/n of the data set) times compute_factor, plus
   message_seconds (and the copy, on one machine) per message it handles.
3. A sent message reaches the master `latency` later and queues at its
   ingress: the master receives one message at a time (message_seconds +
   bytes / bandwidth each), in the order they reach it, after it has sent
   every point.
4. The master decodes at the earliest decodable set: naive all n; ignore any
   n - s; frc the first message of every group (possibly fewer than n - s);
   crc any n - s, or with the exact rule (code objects, default for n <=
   EXACT_MAX_WORKERS) the first arrival prefix the code's decoder accepts,
   which can be earlier; partial-* all first messages plus the frc/crc rule
   on the second ones.
5. It decode-combines the messages with non-zero coefficients
   (master_byte_seconds per byte) and takes the optimiser step
   (step_byte_seconds per byte of the model): the iteration ends.

One machine (finite ``cores``, e.g. the trainer under mpiexec here): every
rank that works (the master included) shares the cores with `background`
other busy processes, and waiting ranks burn `poll_load` of a core, so a
busy rank runs at CostModel.rate = min(1, cores / (background + busy +
poll_load * waiting)) / slowdown of an unloaded core, where slowdown = 1 +
contention * max(0, (background + ranks) / cores - 1) is the extra CPU cost
of oversubscribed cores (cache and memory contention, wake-ups: once
measured in the trainer with 9 ranks on 2 cores, its kernel cost 4.6 ns per
non-zero against 2.65 calibrated alone) (processor sharing, an event loop
vectorised over iterations; latency stretches alike). A cluster (``cores``
inf): a core per rank and full-duplex links. Every (scheme, s) faces the same
delays under one seed, as in the trainer. Not modelled: work on stale
iterations and stale messages (stragglers are abandoned when the next point
arrives), the pause form's carry-over (its pause counts as a delay of that
iteration), and wake-up delays growing faster than 1 / rate when the cores
are oversubscribed. `background` must describe the load while the job runs
(``--background``; the cost file holds the load seen by --calibrate): on a
shared machine whose load moves, single predictions of the trainer here
missed by up to +-50%, their average over five calibrate-and-run rounds by
at most 17% (see --validate).

Separate hosts (``--testbed-profile PROFILE``, ``--host I:SETTINGS``: the
shapes of ``python -m gc_fast.testbed``, gc_fast.testbed.hosts; CostModel
hosts): one host per rank, host 0 the master's, each with a share of one
core and a link rate each way. Every rank's CPU work takes work / its share.
The master hands the points over in worker order (gather, message_seconds and
its network stack's net_byte_seconds per byte, at its share); point w crosses
the master's link, shared max-min fairly with the other points in flight
(concurrent TCP streams), and worker w's link; worker w starts `latency` +
its delay after it, computes at its share (its network stack works while its
bytes flow, so its link moves at most share / net_byte_seconds bytes/s);
each message crosses its worker's link and the master's (shared with the
others), reaches the master `latency` later and is received one at a time
(message_seconds + net_byte_seconds per byte, at the master's share); then
steps 4 and 5 at the master's share. ``--calibrate --testbed-profile
PROFILE`` (root) measures the kernel and master costs here, runs the trainer
on that test bed (TESTBED_CALIBRATION_RUNS, under /tmp/testbed.lock) and fits
net_byte_seconds, wait_poll_seconds (polls per wait for a point) and
poll_load (polling while delayed) to its workers' CPU seconds; saved to
costs-testbed-PROFILE.json beside the default cost file, which
``--testbed-profile`` then loads.

Public API (shared with local mode, which runs the real master with
in-process workers on this virtual clock):

* ``CostModel``: the costs (dataclass; ``to_dict``/``from_dict``,
  ``save(path)``/``load(path)`` as JSON; ``calibrate()`` measures them).
* ``message_arrival_times(compute_seconds, delays, message_bytes, costs, *,
  message_worker=None, start_seconds=0.0, point_bytes=None)``: virtual
  arrival time at the master of every message (steps 1-3, with the shared
  master ingress and core sharing), vectorised over leading (iteration)
  axes; ``timeline`` returns worker start and end times too.
* ``master_seconds(combined_bytes, n_features, costs, *, n_workers=0,
  busy_workers=0)``: the master's decode-combine + step time (step 5).
* ``decode_times(scheme, n_workers, n_stragglers, arrival, *, code=None)``:
  decode time and combined messages per iteration (step 4).
* ``Workload`` / ``build_workload``: per-message compute (nnz) and bytes of a
  (scheme, n, s) on a data set; ``simulate_iterations``: steps 1-5.

Calibration (``--calibrate``, saved to ``--costs PATH`` or
DEFAULT_COSTS_PATH, which later runs load): CPU time (not wall time, so
other processes' load does not count; caches evicted before each sample,
as ranks sharing cores find them) of the coded-gradient kernel per
non-zero (a naive n = 4 worker of the data set, default amazon-like) and
of the master's gather + combine and optimiser step per byte; a ping-pong
of two ranks under the venv's mpiexec (hidden ``--pingpong`` mode, waiting
like the runtime) gives poll_load (CPU time of a long wait),
message_seconds and bandwidth (CPU time per round over four sizes and two
think times) and latency (the one-way wall time left over, scaled to an
unloaded machine); cores from the affinity mask; background from the
runnable count in /proc/loadavg (before and after, minus the sampler).
Those parts, measured in isolation, under-predict the trainer on
oversubscribed cores, so calibrate then runs the trainer itself end to end
(no delay, CALIBRATION_ITERATIONS iterations, under the venv's mpiexec, on
the same data set, for each (scheme, n, s) of CALIBRATION_RUNS: light and
heavy workers, few and many ranks) and fits
`contention` (least squares on log time, one parameter for all runs) so the
model reproduces those runs' mean time per iteration (``fit_contention``);
the fitted runs are stored in the cost file (calibration_runs).

Message sizes: a message is the worker's support (the columns its rows
touch) in float64, as in the trainer. For n <= EXACT_MAX_WORKERS they come
from the real code's placement and the real data; for larger n from the
structural placement, with the support size measured on a seeded sample of
SUPPORT_SAMPLE workers and its mean used for every worker.

Trace mode (``--trace FILE``) replays per-worker delays instead of drawing
them. FILE is either ``{"delays": [[seconds per worker, ...], ...]}`` (one
row per iteration; null = never answers) or a trainer result
(``python -m gc_fast.train --out``): per iteration, a worker's arrival is the
earliest non-null ``arrival`` of its messages (``message_worker`` maps
messages to ranks 1..n) and its delay is how much later than the median
worker it arrived, floored at 0. A worker with no arrival (the master did
not wait for it) is censored: it gets the lower bound (last arrival -
median), so replaying a coded run's trace under naive is optimistic. Rows
are replayed in order, cyclically if more iterations are asked for.
"""  # noqa: E501 (the --help text; its first example is long)

COST_FLAGS = ("nnz_seconds", "partition_seconds", "bandwidth", "latency", "message_seconds",
              "poll_load", "master_byte_seconds", "step_byte_seconds", "cores", "background",
              "contention", "net_byte_seconds")


class UsageError(Exception):
    """Bad command line or input: reported as one line, exit status 2."""


def main(argv=None):
    """Run the command line; 0 on success, 2 (one line on stderr) on bad input."""
    try:
        args = build_parser().parse_args(argv)
        if args.pingpong:
            run_pingpong()
        elif args.calibrate:
            run_calibration(args)
        elif args.validate:
            run_validation(args)
        else:
            run_simulation(args)
    except (UsageError, calibration.CalibrationError, ValueError, OSError) as error:
        print(f"gc_fast.simulate: error: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


# --------------------------------------------------------------------------- parser

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see python -m gc_fast.simulate --help)")


def build_parser():
    """The argparse parser of python -m gc_fast.simulate (USAGE is its --help text)."""
    parser = _Parser(prog="python -m gc_fast.simulate", description=USAGE,
                     epilog="--delay SPEC forms:\n" + (DELAY_DOC or ""),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_options(parser.add_argument)
    _add_data_options(parser.add_argument)
    _add_cost_options(parser.add_argument)
    _add_mode_options(parser.add_argument)
    return parser


def _add_model_options(add):
    """What is simulated: workers, stragglers, schemes, delays, iterations."""
    add("--workers", "-n", type=int, default=None, metavar="N",
        help="workers n (default 8, or the trace's)")
    add("--stragglers", "-s", default=None, metavar="S[,S...]",
        help="stragglers tolerated: one or a list, e.g. 1,2,3 (default 1; --plan: 1..min(n-1, 4))")
    add("--scheme", default="all", metavar="SCHEME[,...]|all",
        help=f"one or a list of the paper's schemes {', '.join(PAPER_SCHEMES)}, or all "
             f"(default; the schemes beyond the paper's: bench/compare.py)")
    add("--partitions-per-worker", "-P", type=int, default=None, metavar="P",
        help="pieces per worker for partial schemes, P >= s+2 (default s+2)")
    add("--construction", choices=("cyclic-mds", "random"), default=None,
        help="crc encoding matrix")
    add("--delay", default="none", metavar="SPEC", help="straggler model, as the trainer's --delay")
    add("--trace", default=None, metavar="FILE", help="replay per-worker delays from FILE instead")
    add("--seed", type=int, default=0, help="seed for data, code and delays (default 0)")
    add("--iterations", "-T", type=int, default=None,
        help="iterations simulated (default 100, or the trace's)")


def _add_data_options(add):
    """The data set whose shape sets compute and message sizes, and the decode rule."""
    add("--dataset", default="amazon-like", metavar="amazon-like|gmm|PATH",
        help="data set whose shape sets compute and message sizes (default amazon-like)")
    add("--rows", type=int, default=None, help="training rows of a synthetic set")
    add("--features", type=int, default=None, help="features of a synthetic set")
    add("--nnz-per-row", type=int, default=None, help="non-zeros per row of amazon-like")
    add("--test-fraction", type=float, default=0.2,
        help="held-out fraction of a data file, as the trainer's (default 0.2)")
    add("--decode-rule", choices=("auto", "exact", "structural"), default="auto",
        help=f"exact: the code objects' decoders (slow for large n); structural: the n - s "
             f"rules; auto (default): exact for n <= {EXACT_MAX_WORKERS}")


def _add_cost_options(add):
    """The cost file and overrides of its fields (COST_FLAGS)."""
    add("--costs", default=None, metavar="PATH",
        help=f"cost file to load (or to write with --calibrate); default {DEFAULT_COSTS_PATH} "
             f"if it exists")
    add("--nnz-seconds", type=float, default=None, help="override: compute seconds per non-zero")
    add("--partition-seconds", type=float, default=None,
        help="override: compute seconds per 1/n of the data set (instead of per non-zero)")
    add("--bandwidth", type=float, default=None,
        help="override: bytes per second of moving a message (a copy on one machine, else a link)")
    add("--latency", type=float, default=None, help="override: wall seconds per message")
    add("--message-seconds", type=float, default=None,
        help="override: CPU seconds per message and rank")
    add("--poll-load", type=float, default=None,
        help="override: fraction of a core a waiting rank polls")
    add("--master-byte-seconds", type=float, default=None,
        help="override: master gather/decode-combine seconds per byte")
    add("--step-byte-seconds", type=float, default=None,
        help="override: optimiser step seconds per model byte")
    add("--cores", type=float, default=None, help="override: cores the ranks share (inf: one each)")
    add("--background", type=float, default=None,
        help="override: other busy processes on those cores "
             "(the machine's load while the job runs)")
    add("--contention", type=float, default=None,
        help="override: extra CPU cost per unit of core oversubscription (see CostModel)")
    add("--net-byte-seconds", type=float, default=None,
        help="override: CPU seconds per byte sent or received over a cluster link")
    add("--testbed-profile", default=None, metavar="PROFILE",
        help="model separate hosts shaped like the test bed's PROFILE (python -m "
             "gc_fast.testbed --profile, e.g. t2.micro), one per rank; loads "
             "costs-testbed-PROFILE.json beside the default cost file if it exists (written by "
             "--calibrate --testbed-profile PROFILE)")
    add("--host", action="append", default=[], metavar="I:SETTINGS",
        help="with --testbed-profile: host I's settings, as the test bed's --host, e.g. "
             "3:cpu=0.06,rate=50mbit (repeatable; host 0 is the master's)")


def _add_mode_options(add):
    """Plan, calibrate, validate, and the outputs."""
    add("--plan", action="store_true",
        help="recommend the exact scheme and s with the lowest expected time")
    add("--calibrate", action="store_true",
        help="measure the cost model on this machine and save it")
    add("--validate", nargs="+", default=None, metavar="RUN.json",
        help="predicted vs measured for trainer result files")
    add("--plot", default=None, metavar="PATH.png", help="plot mean time against s")
    add("--json", default=None, metavar="PATH", help="write the results as JSON")
    add("--pingpong", action="store_true", help=argparse.SUPPRESS)


def _stragglers(text, n_workers, plan_mode):
    """--stragglers as a sorted list of distinct s in [0, n)."""
    if text is None:
        if plan_mode:
            return list(range(1, min(n_workers - 1, 4) + 1)) or [0]
        return [min(1, n_workers - 1)]
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--stragglers must be integers separated by commas, "
                         f"got {text!r}") from None
    bad = [s for s in values if not 0 <= s < n_workers]
    if bad:
        raise UsageError(f"--stragglers must be in [0, n_workers) = [0, {n_workers}), got {bad[0]}")
    return sorted(set(values))


def _schemes(text):
    """(--scheme as a list of schemes, whether they were named explicitly)."""
    if text == "all":
        return list(PAPER_SCHEMES), False
    names = [part.strip() for part in text.split(",")]
    bad = [name for name in names if name not in PAPER_SCHEMES]
    if bad:
        raise UsageError(f"unknown scheme {bad[0]!r}; valid schemes: "
                         f"{', '.join(PAPER_SCHEMES)}, or all")
    return list(dict.fromkeys(names)), True


def load_costs(args, n_workers=None):
    """The cost file (--costs; else with --testbed-profile its calibrated file if present;
    else the default one if present; else defaults) with the command line's overrides, on
    the hosts of --testbed-profile (and --host) for n_workers workers."""
    path = args.costs
    if path is None and args.testbed_profile is not None:
        calibrated = testbed_costs_path(args.testbed_profile)
        path = calibrated if calibrated.exists() else None
    costs = CostModel.load(path) if path is not None else default_costs()
    if args.testbed_profile is not None:
        costs = on_hosts(costs, _testbed_hosts(args, n_workers), f"test bed {args.testbed_profile}")
    elif args.host:
        raise UsageError("--host needs --testbed-profile")
    overrides = {name: getattr(args, name) for name in COST_FLAGS
                 if getattr(args, name) is not None}
    if overrides:
        costs = dataclasses.replace(costs, **overrides, source=costs.source + " + overrides "
                                    + ", ".join(sorted(overrides)))
    return costs


def _testbed_hosts(args, n_workers):
    """The HostSpecs of --testbed-profile with --host for the master and n_workers workers."""
    from ..testbed.hosts import PROFILES, host_specs  # light: no root, no pyroute2

    if args.testbed_profile not in PROFILES:
        raise UsageError(f"unknown --testbed-profile {args.testbed_profile!r}; profiles: "
                         f"{', '.join(sorted(PROFILES))}")
    return host_specs(PROFILES[args.testbed_profile], (n_workers or 8) + 1, overrides=args.host)


def _check_data_flags(args):
    """--nnz-per-row, --rows and --features apply to the synthetic data sets they size."""
    if args.nnz_per_row is not None and args.dataset != "amazon-like":
        raise UsageError("--nnz-per-row applies to --dataset amazon-like only")
    if args.dataset not in SYNTHETIC and (args.rows is not None or args.features is not None):
        raise UsageError("--rows/--features apply to the synthetic data sets only, not to a file")


# --------------------------------------------------------------------------- modes

def run_simulation(args):
    """Simulate every (scheme, s); print the table, the notes and the plan; --plot, --json."""
    trace_rows, n_censored = _read_trace(args)
    n_workers = _positive("--workers", args.workers, trace_rows, 1, default=8)
    iterations = _positive("--iterations", args.iterations, trace_rows, 0, default=100)
    pairs, notes = _pairs(args, n_workers)
    costs = load_costs(args, n_workers)
    delay_model = parse_delay(args.delay)
    if trace_rows is not None:
        delays = trace_rows[np.arange(iterations) % trace_rows.shape[0]]
        factors = np.ones(n_workers)
        source = (f"trace {args.trace} ({trace_rows.shape[0]} iterations, {n_censored} censored "
                  f"delays)")
    else:
        delays = straggler_delays(delay_model, args.seed, iterations, n_workers)
        factors = compute_factors(delay_model, n_workers)
        source = f"delay {delay_model}"
    _check_data_flags(args)
    X = load_data(args.dataset, rows=args.rows, features=args.features,
                  nnz_per_row=args.nnz_per_row, test_fraction=args.test_fraction,
                  seed=args.seed).X_train
    results = compare(pairs, n_workers, X, costs, delays, factors,
                      partitions_per_worker=args.partitions_per_worker,
                      construction=args.construction, seed=args.seed, decode_rule=args.decode_rule)
    title = f"n={n_workers} workers, {source}, {iterations} iterations, seed {args.seed}"
    print(f"gc_fast.simulate: {title}\n{_costs_header(costs)}\n"
          f"data: {data_label(args.dataset, X)}; message sizes from {results[0]['supports']}")
    print(results_table(results))
    if costs.shared and n_workers + 1 > 2 * costs.cores:
        notes.append(f"note: all {n_workers + 1} ranks share {costs.cores:g} cores (the cost "
                     f"file's machine); pass --cores inf to model a core per rank")
    for note in notes:
        print(note)
    chosen = plan(results) if args.plan else None
    if chosen is not None:
        print(plan_text(chosen))
    if args.plot:
        save_plot(results, args.plot, title)
    if args.json:
        config = {"n_workers": n_workers, "iterations": iterations, "seed": args.seed,
                  "delays": source, "dataset": data_label(args.dataset, X)}
        _write_json(args.json, {"config": config, "costs": costs.to_dict(),
                                "results": [{k: v for k, v in r.items() if k != "times"}
                                            for r in results],
                                "notes": notes, "plan": chosen})


def _read_trace(args):
    """(delays, n_censored) of --trace, or (None, None) without it."""
    if args.trace is None:
        return None, None
    if args.delay != "none":
        raise UsageError("--trace replays recorded delays: drop --delay")
    return trace_delays(args.trace, args.workers)


def _positive(flag, value, trace_rows, axis, *, default):
    """--workers (axis 1) or --iterations (axis 0): given, else the trace's, else the default;
    at least 1."""
    if value is None:
        value = trace_rows.shape[axis] if trace_rows is not None else default
    if value < 1:
        raise UsageError(f"{flag} must be >= 1, got {value}")
    return value


def _pairs(args, n_workers):
    """The (scheme, s) pairs to simulate and the notes on skipped ones."""
    schemes, explicit = _schemes(args.scheme)
    stragglers = _stragglers(args.stragglers, n_workers, args.plan)
    pairs, notes = configurations(schemes, stragglers, n_workers, explicit=explicit)
    P = args.partitions_per_worker
    too_small = [s for scheme, s in pairs
                 if scheme.startswith("partial-") and P is not None and P < s + 2]
    if too_small:
        raise UsageError(f"--partitions-per-worker must be >= s + 2 = {max(too_small) + 2} for "
                         f"the partial schemes, got {P}")
    if not pairs:
        raise UsageError("no valid (scheme, s) to simulate: " + "; ".join(notes))
    return pairs, notes


def run_calibration(args):
    """Measure the costs (calibrate; with --testbed-profile calibrate_testbed) and save them to
    --costs, else DEFAULT_COSTS_PATH (testbed_costs_path(PROFILE))."""
    _check_data_flags(args)
    if args.testbed_profile is not None:
        path = (Path(args.costs) if args.costs is not None
                else testbed_costs_path(args.testbed_profile))
        hosts = _testbed_hosts(args, args.workers)
        costs = calibration.calibrate_testbed(args.testbed_profile, hosts, args.dataset,
                                              rows=args.rows, features=args.features,
                                              seed=args.seed, overrides=args.host)
    else:
        path = Path(args.costs) if args.costs is not None else DEFAULT_COSTS_PATH
        costs = calibration.calibrate(args.dataset, rows=args.rows, features=args.features,
                                      nnz_per_row=args.nnz_per_row, seed=args.seed)
    costs.save(path)
    print(f"wrote {path}\n{_costs_header(costs)}")
    for run in costs.calibration_runs:
        if "measured_worker_cpu_s" in run:
            print(f"  {run['scheme']} s={run['n_stragglers']} {run['delay']}: worker CPU "
                  f"{1e3 * run['measured_worker_cpu_s']:.2f} ms/iteration measured, "
                  f"{1e3 * run['fitted_worker_cpu_s']:.2f} fitted")


def run_validation(args):
    """Predicted vs measured for every --validate file; --json."""
    costs = load_costs(args, max(_run_workers(path) for path in args.validate)
                       if args.testbed_profile is not None else None)
    runs = [calibration.validate_run(path, costs, decode_rule=args.decode_rule)
            for path in args.validate]
    print(_costs_header(costs))
    print(validation_table(runs))
    if args.json:
        _write_json(args.json, {"costs": costs.to_dict(), "runs": runs})


def _run_workers(path):
    """n_workers of a trainer result file (0 if unreadable: validate_run reports it)."""
    try:
        return int(json.loads(Path(path).read_text())["config"]["n_workers"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def run_pingpong():
    """Hidden --pingpong mode (under mpiexec -n 2): print the measurements as JSON on rank 0."""
    measured = calibration.pingpong_measurements()
    if measured is not None:
        print(json.dumps(measured), flush=True)


# --------------------------------------------------------------------------- output

def _costs_header(costs):
    """Two lines describing the costs in use."""
    compute = (f"{1e3 * costs.partition_seconds:.3f} ms per 1/n of the data"
               if costs.partition_seconds is not None else f"{1e9 * costs.nnz_seconds:.2f} ns/nnz")
    cores = (f"{costs.cores:g} shared with {costs.background:g} busy background processes, "
             f"polling {100 * costs.poll_load:.1f}% of a core, contention {costs.contention:.3f}"
             if costs.shared else "one per rank")
    if costs.hosts:
        cores = (f"separate hosts: {_hosts_text(costs.hosts)}; network stack "
                 f"{1e9 * costs.net_byte_seconds:.2f} ns/byte each end")
    return (f"costs: {costs.source}\n  compute {compute}; messages "
            f"{costs.bandwidth / 1e9:.2f} GB/s, {1e6 * costs.latency:.0f} us latency, "
            f"{1e6 * costs.message_seconds:.0f} us CPU each; master "
            f"{1e9 * costs.master_byte_seconds:.3f} ns/byte gather+combine, "
            f"{1e9 * costs.step_byte_seconds:.3f} ns/byte step; cores {cores}")


def _hosts_text(hosts):
    """The hosts as 'master 1 core 1000 Mbit/s; 8 workers 0.12 core 100 Mbit/s'."""
    def shape(host):
        cpu, rate = host
        return (f"{'1' if cpu is None else f'{cpu:g}'} core "
                f"{'unlimited' if rate is None else f'{rate / 1e6:g} Mbit/s'}")
    groups = {}
    for host in hosts[1:]:
        groups[shape(host)] = groups.get(shape(host), 0) + 1
    workers = ", ".join(f"{count} worker{'s' * (count > 1)} {text}"
                        for text, count in groups.items())
    return f"master {shape(hosts[0])}; {workers}"


def data_label(dataset, X):
    """The data set's name and shape, for the output."""
    nnz_per_row = X.nnz / max(X.shape[0], 1)
    return f"{dataset}: {X.shape[0]} rows x {X.shape[1]} features, {nnz_per_row:.1f} nnz/row"


def _write_json(path, record):
    Path(path).write_text(json.dumps(_json_ready(record), indent=2) + "\n")


def _json_ready(value):
    """value with numpy scalars as Python numbers and inf/nan as null (strict JSON)."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
