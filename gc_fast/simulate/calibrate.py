"""Measuring the cost model on this machine, and checking its predictions against trainer runs."""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..codes import make_code
from ..data import SYNTHETIC, load_data
from ..launch import mpiexec, single_thread_environment
from ..stragglers import parse_delay
from .compare import compare, make_exact_code
from .costs import CostModel
from .workload import build_workload, compute_factors, simulate_iterations, straggler_delays

PINGPONG_BYTES = (8, 262144, 1048576, 4194304)
PINGPONG_THINK_SECONDS = (0.002, 0.008)
POLL_SECONDS = 0.3
EVICT_BYTES = 8 * 2 ** 20
CALIBRATION_RUNS = (("naive", 4, 0), ("naive", 8, 0), ("crc", 8, 3))
CALIBRATION_ITERATIONS = 40
# The test bed's calibration (calibrate_testbed): (scheme, s, --delay) of its trainer runs: two
# byte counts without delays (network stack per byte, polls per wait), one delayed (polling
# while delayed).
TESTBED_CALIBRATION_RUNS = (("naive", 0, "none"), ("crc", 3, "none"),
                            ("naive", 0, "fixed:p=0.25,seconds=0.1"))
TESTBED_ITERATIONS = 30
# Serialises timed test-bed jobs on this machine (they time themselves on the same cores):
# held by calibrate_testbed and bench/validate_testbed.py.
TESTBED_LOCK = Path("/tmp/testbed.lock")


class CalibrationError(RuntimeError):
    """A measurement could not run (no mpiexec, a failed MPI job): reported as one line."""


def calibrate(dataset="amazon-like", *, rows=None, features=None, nnz_per_row=None, seed=0,
              trainer_runs=CALIBRATION_RUNS):
    """Measure this machine's CostModel.

    Kernel and master costs in CPU time (so other processes' load does not
    inflate them, caches evicted before each sample), a ping-pong of two ranks
    under mpiexec (polling load, per-message CPU, bandwidth, latency scaled to
    an unloaded machine), cores from the affinity mask and the background load
    from /proc/loadavg; then contention fitted to the trainer itself, run end
    to end (no delay) for each (scheme, n, s) of trainer_runs.

    Parameters
    ----------
    dataset : str
        amazon-like, gmm or a data file (gc_fast.data.load_data).
    rows, features, nnz_per_row : int, optional
        Sizes of a synthetic set; with nnz_per_row (which the trainer cannot
        build) the trainer runs and the contention fit are skipped.
    seed : int
        Seed of the data set and the trainer runs.
    trainer_runs : sequence of (str, int, int)
        (scheme, n, s) of the trainer runs contention is fitted to (none:
        contention 0).

    Returns
    -------
    CostModel
        With the fitted runs in calibration_runs.

    Raises
    ------
    CalibrationError
        mpiexec is missing, or the ping-pong or a trainer run failed.
    """
    data = load_data(dataset, rows=rows, features=features, nnz_per_row=nnz_per_row, seed=seed)
    X = data.X_train
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    background = background_load()
    nnz_seconds = kernel_seconds_per_nnz(X, data.y_train)
    master_byte_seconds, step_byte_seconds = master_seconds_per_byte(X)
    bandwidth, latency, message_seconds, poll_load = measure_link()
    costs = CostModel(nnz_seconds=nnz_seconds, bandwidth=bandwidth, latency=latency,
                      message_seconds=message_seconds, poll_load=poll_load,
                      master_byte_seconds=master_byte_seconds, step_byte_seconds=step_byte_seconds,
                      cores=float(cores),
                      background=round(0.5 * (background + background_load()), 2),
                      source=f"calibrated {time.strftime('%Y-%m-%d %H:%M')} "
                             f"on {os.uname().nodename}")
    # The ping-pong's wall time stretched with the load of the moment (one rank busy, one polling).
    costs = dataclasses.replace(costs, latency=latency * float(costs.rate(1, 1)))
    if nnz_per_row is not None or not costs.shared:
        return costs
    runs = [(scheme, n, s, measure_trainer(scheme, n, s, dataset, rows=rows, features=features,
                                           seed=seed))
            for scheme, n, s in trainer_runs]
    contention, predicted = fit_contention(runs, X, costs)
    return dataclasses.replace(costs, contention=contention, calibration_runs=tuple(
        {"scheme": scheme, "n_workers": n, "n_stragglers": s, "measured_mean_s": measured,
         "predicted_mean_s": prediction}
        for (scheme, n, s, measured), prediction in zip(runs, predicted, strict=True)))


def calibrate_testbed(profile, hosts, dataset="amazon-like", *, rows=None, features=None, seed=0,
                      overrides=(), runs=TESTBED_CALIBRATION_RUNS, iterations=TESTBED_ITERATIONS,
                      lock=TESTBED_LOCK):
    """Measure the CostModel of the test bed `profile` (python -m gc_fast.testbed): needs root.

    The kernel and the master's per-byte costs as calibrate measures them (CPU
    time, this machine); then the trainer itself on the test bed (one rank per
    host of `hosts`, host 0 the master's, under the test bed's lock file) for
    each (scheme, s, delay) of `runs`, and fit_network_costs fits the
    network stack's CPU per byte (net_byte_seconds), the polls per wait for a
    point (wait_poll_seconds) and while delayed (poll_load) to the workers'
    CPU seconds the runs report (worker_stats). The timing is not fitted: the
    runs' measured and predicted mean times are stored for information.

    Parameters
    ----------
    profile : str
        A name of gc_fast.testbed.PROFILES.
    hosts : sequence of HostSpec
        The hosts (gc_fast.testbed.host_specs of the profile and `overrides`).
    dataset, rows, features, seed
        The data set, as for calibrate (a file is used whole: --test-fraction 0).
    overrides : sequence of str
        The test bed's --host settings the hosts were built with.
    runs : sequence of (str, int, str)
        (scheme, s, --delay) of the trainer runs, each `iterations` long.
    lock : path or None
        The lock file that serialises timed test-bed jobs (None: do not lock).

    Returns
    -------
    CostModel
        On `hosts`, with the runs in calibration_runs.

    Raises
    ------
    CalibrationError
        The test bed cannot be built or a trainer run failed.
    """
    from .costs import on_hosts

    from_file = dataset not in SYNTHETIC
    data = load_data(dataset, rows=rows, features=features, seed=seed,
                     test_fraction=0.0 if from_file else 0.2)
    X = data.X_train
    options = ["--dataset", str(dataset), "--seed", str(seed)]
    options += ["--test-fraction", "0"] if from_file else []
    for flag, value in (("--rows", rows), ("--features", features)):
        if value is not None:
            options += [flag, str(value)]
    # Measured while no other test bed job runs (they time themselves, on the same cores).
    with testbed_lock(lock), tempfile.TemporaryDirectory() as directory:
        master_byte_seconds, step_byte_seconds = master_seconds_per_byte(X)
        base = on_hosts(CostModel(nnz_seconds=kernel_seconds_per_nnz(X, data.y_train),
                                  master_byte_seconds=master_byte_seconds,
                                  step_byte_seconds=step_byte_seconds,
                                  source=f"calibrated {time.strftime('%Y-%m-%d %H:%M')} on "
                                         f"{os.uname().nodename}"), hosts, f"test bed {profile}")
        outs = [Path(directory) / f"run{index}.json" for index in range(len(runs))]
        with testbed(profile, len(base.hosts), overrides) as bed:
            for (scheme, s, delay), out in zip(runs, outs, strict=True):
                run_on_testbed(bed, scheme, s, delay, iterations, out, options)
        results = [json.loads(out.read_text()) for out in outs]
    return fit_network_costs(results, X, base)


def fit_network_costs(results, X, costs):
    """`costs` with net_byte_seconds, wait_poll_seconds and poll_load fitted to trainer runs.

    results: trainer --out records on separate hosts (costs.hosts) on the
    data X. Each worker's CPU seconds per iteration (worker_stats) less its
    modelled compute and message handling is, per iteration, net_byte_seconds
    per byte of its point and messages + wait_poll_seconds + poll_load per
    second of injected delay: non-negative least squares over every worker of
    every run. calibration_runs gets, per run, the measured and predicted mean
    time and worker CPU (measured_worker_cpu_s, fitted_worker_cpu_s) and the
    master's CPU per iteration (measured_master_cpu_s).
    """
    from scipy.optimize import nnls

    rows, targets, cases = [], [], []
    for result in results:
        workload, delays, code = _run_workload(result, X)
        measured = worker_cpu_measured(result)
        parts = _worker_cpu_parts(workload, costs, delays, _computed_fraction(result, workload))
        rows.append(np.column_stack([parts["bytes"], np.ones(workload.n_workers),
                                     parts["delay_s"]]))
        targets.append(measured - parts["fixed_s"])
        cases.append((result, workload, delays, code, measured))
    (net_byte, wait_poll, poll_load), _ = nnls(np.vstack(rows), np.concatenate(targets))
    fitted = dataclasses.replace(costs, net_byte_seconds=float(net_byte),
                                 wait_poll_seconds=float(wait_poll), poll_load=float(poll_load))
    records = []
    for result, workload, delays, code, measured in cases:
        config = result["config"]
        exact = code if workload.scheme in ("crc", "partial-crc") else None
        times, _ = simulate_iterations(workload, fitted, delays, code=exact)
        computed = _computed_fraction(result, workload)
        records.append({
            "scheme": workload.scheme, "n_workers": workload.n_workers,
            "n_stragglers": workload.n_stragglers, "delay": str(config.get("delay", "none")),
            "measured_mean_s": float(result["summary"]["mean_iteration_s"]),
            "predicted_mean_s": float(np.mean(times)),
            "measured_worker_cpu_s": float(np.mean(measured)),
            "fitted_worker_cpu_s": float(np.mean(worker_cpu_seconds(workload, fitted, delays,
                                                                    computed))),
            "measured_master_cpu_s": float(result["summary"]["master_cpu_s"]) / len(times)})
    return dataclasses.replace(fitted, calibration_runs=tuple(records))


def worker_cpu_seconds(workload, costs, delays, computed=None):
    """(n,) CPU seconds per iteration of each worker on separate hosts (costs.hosts): its
    compute and message handling, its network stack (net_byte_seconds per byte of its point
    and messages), its polls per wait for a point (wait_poll_seconds) and while delayed
    (poll_load of a core, at most its share).

    delays: (iterations, n) injected delays (inf: never answers). computed: (n,) fraction
    of the iterations each worker computed (default: all).
    """
    parts = _worker_cpu_parts(workload, costs, delays, computed)
    share = costs.cpu_shares(workload.n_workers + 1)[1:]
    return (parts["fixed_s"] + costs.net_byte_seconds * parts["bytes"]
            + costs.wait_poll_seconds + np.minimum(costs.poll_load, share) * parts["delay_s"])


def worker_cpu_measured(result):
    """(n,) CPU seconds per iteration of each worker in a trainer --out record (worker_stats)."""
    iterations = len(result["iterations"])
    return np.array([stats.get("cpu_seconds", np.nan)
                     for stats in result["summary"]["worker_stats"]]) / iterations


def worker_cpu_of_run(result, X, costs):
    """(measured, predicted): (n,) CPU seconds per iteration of each worker of a trainer --out
    record on the data X, and worker_cpu_seconds' for its configuration and delays (with the
    fraction of iterations each worker computed, from its messages_sent)."""
    workload, delays, _ = _run_workload(result, X)
    return worker_cpu_measured(result), worker_cpu_seconds(workload, costs, delays,
                                                           _computed_fraction(result, workload))


def _worker_cpu_parts(workload, costs, delays, computed=None):
    """Per worker and iteration: fixed_s (compute and message handling), bytes (network) and
    delay_s (seconds delayed), `computed` (n,) the fraction of iterations it computed."""
    n = workload.n_workers
    computed = np.ones(n) if computed is None else np.asarray(computed, dtype=np.float64)
    per_message = workload.compute_seconds(costs) + costs.message_seconds
    compute = np.bincount(workload.message_worker, weights=per_message, minlength=n)
    sent = np.bincount(workload.message_worker, weights=workload.message_bytes, minlength=n)
    delays = np.asarray(delays, dtype=np.float64)
    return {"fixed_s": computed * compute + costs.message_seconds,
            "bytes": workload.point_bytes + computed * sent,
            "delay_s": np.where(np.isfinite(delays), delays, 0.0).mean(axis=0)}


def _computed_fraction(result, workload):
    """(n,) fraction of the run's iterations each worker sent all its messages for."""
    per_worker = np.bincount(workload.message_worker, minlength=workload.n_workers)
    sent = np.array([stats.get("messages_sent", 0)
                     for stats in result["summary"]["worker_stats"]], dtype=np.float64)
    return np.minimum(1.0, sent / (per_worker * len(result["iterations"])))


def _run_workload(result, X):
    """(Workload, delays, code) of a trainer --out record's configuration on the data X."""
    config = result["config"]
    scheme, n, s = config["scheme"], int(config["n_workers"]), int(config["n_stragglers"])
    code = make_exact_code(scheme, n, s, partitions_per_worker=config.get("partitions_per_worker"),
                           construction=config.get("construction"), seed=int(config["seed"]))
    workload = build_workload(scheme, n, s, X, code=code)
    delays = straggler_delays(parse_delay(config.get("delay", "none")), int(config["seed"]),
                              len(result["iterations"]), n)
    return workload, delays, code


@contextmanager
def testbed_lock(path=TESTBED_LOCK):
    """Hold the lock file that serialises timed test-bed jobs (None: none). Already held when
    inherited from flock(1) (flock PATH COMMAND keeps it open in COMMAND): nothing is taken."""
    if path is None or _holds(path):
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _holds(path):
    """Whether this process has `path` open (an inherited flock(1) lock)."""
    target = os.path.realpath(path)
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(f"/proc/self/fd/{name}") == target:
                return True
        except OSError:
            continue
    return False


@contextmanager
def testbed(profile, n_hosts, overrides=()):
    """A Testbed of the profile (CalibrationError if this machine cannot host one)."""
    from ..testbed import Testbed, TestbedUnavailable

    try:
        with Testbed.from_profile(profile, n_hosts, overrides=tuple(overrides)) as bed:
            yield bed
    except TestbedUnavailable as error:
        raise CalibrationError(f"test bed {profile}: {error}") from None


def run_on_testbed(bed, scheme, n_stragglers, delay, iterations, out, options=(), timeout=900):
    """Run the trainer across the test bed `bed` (one rank per host) with --out `out`."""
    argv = [sys.executable, "-m", "gc_fast.train", "--scheme", scheme,
            "--stragglers", str(n_stragglers), "--delay", delay, "--iterations", str(iterations),
            "--eval-every", str(iterations), "--quiet", "--out", str(out), *options]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                      env.get("PYTHONPATH")]))
    result = bed.run(argv, len(bed.specs), env=env, timeout=timeout, capture_output=True,
                     text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise CalibrationError(f"trainer run {scheme} s={n_stragglers} --delay {delay} on the "
                               f"test bed failed: {last}")


def validate_run(path, costs, *, decode_rule="auto"):
    """Predicted vs measured for one trainer result file (python -m gc_fast.train --out).

    The simulator replays the run's configuration (scheme, n, s, delay model,
    seed, data set) with `costs`. Returns a dict: run, scheme, n_workers,
    n_stragglers, delay, iterations, predicted/measured mean and p50 seconds
    and error_percent (predicted mean against measured, in percent).
    """
    try:
        run = json.loads(Path(path).read_text())
        config, measured = run["config"], np.array([it["time"] for it in run["iterations"]])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a python -m gc_fast.train --out result ({error})") from None
    scheme, n, s = config["scheme"], int(config["n_workers"]), int(config["n_stragglers"])
    seed, iterations = int(config["seed"]), len(measured)
    delay_model = parse_delay(config.get("delay", "none"))
    X = load_data(config.get("dataset", "amazon-like"), rows=config.get("rows"),
                  features=config.get("features"), seed=seed,
                  test_fraction=config.get("test_fraction", 0.2)).X_train
    delays = straggler_delays(delay_model, seed, iterations, n)
    results = compare([(scheme, s)], n, X, costs, delays, compute_factors(delay_model, n),
                      partitions_per_worker=config.get("partitions_per_worker"),
                      construction=config.get("construction"), seed=seed, decode_rule=decode_rule)
    predicted = results[0]
    return {"run": str(path), "scheme": scheme, "n_workers": n, "n_stragglers": s,
            "delay": str(delay_model), "iterations": iterations,
            "predicted_mean_s": predicted["mean_s"], "measured_mean_s": float(measured.mean()),
            "predicted_p50_s": predicted["p50_s"], "measured_p50_s": float(np.median(measured)),
            "error_percent": 100 * (predicted["mean_s"] / measured.mean() - 1)}


# --------------------------------------------------------------------------- CPU costs

def _cpu_seconds(run, repeats):
    """Median CPU seconds of run() (process time: other processes' load does not count),
    each time after evicting the caches, as ranks sharing cores find them."""
    evict = np.zeros(EVICT_BYTES // 8)
    samples = []
    for _ in range(repeats + 1):
        evict += 1.0
        started = time.process_time()
        run()
        samples.append(time.process_time() - started)
    return float(np.median(samples[1:]))


def kernel_seconds_per_nnz(X, y, repeats=40):
    """CPU seconds per non-zero of the coded-gradient kernel on one worker of naive n = 4."""
    from ..problems import SparseLinearProblem  # the compute kernels: loaded on first use

    code = make_code("naive", 4, 0)
    problem = SparseLinearProblem(X, y)
    problem.bind(code)
    task = problem.task(code, 0)
    outs = [np.zeros(length) for length in task.message_lengths]
    point = np.random.default_rng(0).normal(0.0, 0.01, len(task.support))
    nnz = sum(len(block.indices) for block in task.worker_data.blocks)
    return _cpu_seconds(lambda: list(task.run(point, outs)), repeats) / nnz


def master_seconds_per_byte(X, repeats=30):
    """CPU seconds per byte of the master's gather + decode-combine, and of its optimiser step
    (naive n = 4)."""
    from ..assembly import GradientAssembler  # the compute kernels: loaded on first use
    from ..data import partition_bounds, worker_support
    from ..kernels import gather
    from ..optim import make_optimizer

    code = make_code("naive", 4, 0)
    bounds = partition_bounds(X.shape[0], 4)
    supports = [worker_support(X, bounds, code.partitions_of(w)) for w in range(4)]
    assembler = GradientAssembler(code, supports, X.shape[1])
    assembler.values[:] = np.random.default_rng(0).normal(size=assembler.values.size)
    for message in range(code.n_messages):
        assembler.add(message)
    optimizer = make_optimizer("nag", np.zeros(X.shape[1]), 1e-12, l2=1e-4)
    gradient = np.zeros(X.shape[1])
    buffers = [np.empty(len(support)) for support in supports]

    def gather_and_combine():
        point = optimizer.query_point()
        for support, buffer in zip(supports, buffers, strict=True):
            gather(point, support, buffer)
        assembler.combine(gradient)

    def step():
        optimizer.step(gradient)

    message_bytes = 2 * assembler.values.nbytes  # gathered out + combined in
    return (_cpu_seconds(gather_and_combine, repeats) / message_bytes,
            _cpu_seconds(step, repeats) / (8.0 * X.shape[1]))


def background_load(seconds=1.0):
    """Busy processes besides this one: mean runnable count in /proc/loadavg minus 1
    (0 if unknown)."""
    samples = []
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            with open("/proc/loadavg") as handle:
                samples.append(int(handle.read().split()[3].split("/")[0]))
            time.sleep(0.005)
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, float(np.mean(samples)) - 1.0)


# --------------------------------------------------------------------------- MPI jobs

def pingpong_measurements():
    """The ping-pong rank's side of measure_link (under mpiexec -n 2): transports.pingpong's
    measurements on rank 0, None on rank 1."""
    from gc_fast import transports  # mpi4py: only in this mode

    comm = transports.world()
    if comm.Get_size() != 2:
        raise CalibrationError("--pingpong runs under mpiexec -n 2")
    return transports.pingpong(comm, PINGPONG_BYTES, PINGPONG_THINK_SECONDS,
                               poll_seconds=POLL_SECONDS)


def fit_pingpong(measured):
    """(bandwidth, latency, message_seconds, poll_load) from pingpong_measurements' output.

    poll_load: the mean of the ranks' measured polling loads. Per round each
    rank sends and receives one message and waits about `think`, so
    cpu - poll_load * think = 2 message_seconds + 2 bytes / bandwidth (least
    squares over both ranks). latency: the median one-way wall time left
    after those CPU parts (at least 0), as measured (calibrate scales it to
    an unloaded machine).
    """
    poll_load = float(np.mean(measured["poll_load"]))
    design, cpu = [], []
    for record in measured["rounds"]:
        for rank_cpu in record["cpu"]:
            design.append([2.0, 2.0 * record["bytes"]])
            cpu.append(rank_cpu - poll_load * record["think"])
    message_seconds, seconds_per_byte = np.maximum(
        np.linalg.lstsq(np.array(design), np.array(cpu), rcond=None)[0], 0.0)
    bandwidth = 1.0 / max(seconds_per_byte, 1e-13)
    leftover = [r["one_way"] - 2 * message_seconds - r["bytes"] / bandwidth
                for r in measured["rounds"]]
    return float(bandwidth), max(0.0, float(np.median(leftover))), float(message_seconds), poll_load


def measure_link(timeout=120):
    """fit_pingpong of a ping-pong run (python -m gc_fast.simulate --pingpong) under mpiexec."""
    command = [_require_mpiexec("the ping-pong"), "-n", "2", sys.executable,
               "-m", "gc_fast.simulate", "--pingpong"]
    result = _run(command, timeout, failure=f"ping-pong under {command[0]} failed")
    return fit_pingpong(json.loads(result.stdout.strip().splitlines()[-1]))


def measure_trainer(scheme, n_workers, n_stragglers, dataset, *, rows=None, features=None, seed=0,
                    iterations=CALIBRATION_ITERATIONS, timeout=300):
    """Mean seconds per iteration of the trainer itself (python -m gc_fast.train), without
    delays."""
    launcher = _require_mpiexec("the trainer runs")
    n_ranks = n_workers + 1
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "run.json"
        command = [launcher, "-n", str(n_ranks), sys.executable, "-m", "gc_fast.train",
                   "--scheme", scheme, "--stragglers", str(n_stragglers),
                   "--iterations", str(iterations), "--eval-every", str(iterations), "--quiet",
                   "--dataset", str(dataset), "--seed", str(seed), "--out", str(out)]
        for flag, value in (("--rows", rows), ("--features", features)):
            if value is not None:
                command += [flag, str(value)]
        _run(command, timeout, failure=f"trainer run under {launcher} -n {n_ranks} failed")
        return float(json.loads(out.read_text())["summary"]["mean_iteration_s"])


def _require_mpiexec(purpose):
    """gc_fast.launch's mpiexec, or CalibrationError naming what needed it."""
    launcher = mpiexec()
    if launcher is None:
        raise CalibrationError(f"mpiexec not found next to this python or on PATH; --calibrate "
                               f"needs it for {purpose}")
    return launcher


def _run(command, timeout, *, failure):
    """Run an MPI job with one thread per rank; CalibrationError with its last error line."""
    result = subprocess.run(command, capture_output=True, text=True,
                            env=single_thread_environment(), timeout=timeout)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise CalibrationError(f"{failure}: {last}")
    return result


# --------------------------------------------------------------------------- contention fit

def predicted_undelayed_seconds(workload, costs):
    """The model's seconds for one iteration of the workload without delays."""
    times, _ = simulate_iterations(workload, costs, np.zeros((1, workload.n_workers)))
    return float(times[0])


def fit_contention(runs, X, costs, *, upper=20.0):
    """(contention, [predicted mean s per run]) making the model reproduce undelayed trainer runs.

    runs: [(scheme, n_workers, n_stragglers, measured mean seconds per
    iteration)] of the trainer (no delay) on the data X. Minimises the summed
    squared log error of the predictions over contention in [0, upper] (each
    prediction grows with contention, so a golden-section search). Without
    sharing (cores inf) contention has no effect: returns 0.
    """
    workloads = [(build_workload(scheme, n, s, X), measured) for scheme, n, s, measured in runs]
    if not runs or not costs.shared:
        return 0.0, [predicted_undelayed_seconds(w, costs) for w, _ in workloads]

    def loss(value):
        trial = dataclasses.replace(costs, contention=value)
        return sum(np.log(predicted_undelayed_seconds(w, trial) / measured) ** 2
                   for w, measured in workloads)

    low, high = _golden_section(loss, 0.0, float(upper))
    best = float(min((0.0, 0.5 * (low + high)), key=loss))
    fitted = dataclasses.replace(costs, contention=best)
    return best, [predicted_undelayed_seconds(w, fitted) for w, _ in workloads]


def _golden_section(loss, low, high, tolerance=1e-4):
    """The bracket (low, high), narrower than tolerance, around a minimum of a unimodal loss."""
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = loss(a), loss(b)
    while high - low > tolerance:
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = loss(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = loss(b)
    return low, high
