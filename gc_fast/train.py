"""Distributed L2-regularised logistic regression with gradient coding.

    mpirun -n N python -m gc_fast.train [options]

Rank 0 is the master, ranks 1..N-1 are the n = N-1 workers. The objective is

    f(w) = mean_i log(1 + exp(-y_i x_i.w)) + (l2 / 2) ||w||^2

over the training rows, labels in {-1, +1} (0/1 accepted and mapped), no
separate intercept (the built-in data sets carry a bias column).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from . import __version__, checkpoint
from .codes import make_code
from .data import amazon_like, gaussian_mixture, load_dataset, partition_bounds, worker_support
from .kernels import BACKENDS
from .objective import auc, lipschitz_logistic, logistic_loss
from .optim import OPTIMIZERS, make_optimizer
from .priority import MODES as PRIORITY_MODES
from .stragglers import __doc__ as DELAY_DOC
from .stragglers import parse_delay

SNAPSHOT_BYTES = 256 * 2**20
SCHEMES = ("naive", "ignore", "frc", "crc", "partial-frc", "partial-crc")


class UsageError(Exception):
    """Bad command line or input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see python -m gc_fast.train --help)")


def build_parser():
    parser = _Parser(
        prog="mpirun -n N python -m gc_fast.train",
        description=__doc__,
        epilog="--delay SPEC forms:\n" + (DELAY_DOC or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--scheme", choices=SCHEMES, default="crc",
        help="gradient code (default: crc). naive: no redundancy, waits for all; "
             "ignore: waits for n-s and rescales (inexact); frc/crc: exact, tolerate s stragglers; "
             "partial-*: two messages per worker for slow-but-alive workers")
    add("--stragglers", "-s", type=int, default=1, metavar="S",
        help="stragglers tolerated, s (default 1; naive always uses 0)")
    add("--partitions-per-worker", "-P", type=int, default=None, metavar="P",
        help="pieces per worker for partial schemes, P >= s+2 (default s+2)")
    add("--construction", choices=("cyclic-mds", "random"), default=None,
        help="CRC encoding matrix: cyclic-mds (default, well conditioned) or random (the paper's)")
    add("--dataset", default="amazon-like", metavar="amazon-like|gmm|PATH",
        help="built-in synthetic set or a svmlight/libsvm or .npz file (default amazon-like)")
    add("--rows", type=int, default=None, help="training rows of a synthetic set")
    add("--features", type=int, default=None, help="features of a synthetic set")
    add("--test-fraction", type=float, default=0.2,
        help="held-out fraction of a data file (default 0.2)")
    add("--iterations", "-T", type=int, default=100, help="iterations (default 100)")
    add("--lr", type=float, default=None, help="step size (default 1/L, L estimated by power iteration)")
    add("--l2", type=float, default=1e-4, help="L2 weight (default 1e-4)")
    add("--optimizer", choices=OPTIMIZERS, default="nag", help="nag (default) or gd")
    add("--backend", choices=BACKENDS, default="cython", help="compute kernels (default cython)")
    add("--delay", default="none", metavar="SPEC", help="injected stragglers (see below; default none)")
    add("--priorities", choices=PRIORITY_MODES, default="auto",
        help="CPU priority of the workers when ranks share cores: auto (default) ranks them, "
             "master first, then the workers the code needs first, when a node runs more ranks "
             "than it has cores; on: always; off: the OS shares the cores fairly")
    add("--shared-memory", choices=("auto", "off"), default="auto",
        help="auto (default): when every rank runs on one node, the point and the workers' "
             "messages live in an MPI-3 shared-memory window and MPI carries only zero-length "
             "notifications; off: the point and the messages always travel as MPI messages")
    add("--seed", type=int, default=0, help="seed for data, code and delays (default 0)")
    add("--out", default=None, metavar="results.json", help="write per-iteration records as JSON")
    add("--save-model", default=None, metavar="PATH", help="save the final weights as .npy")
    add("--save-trajectory", default=None, metavar="PATH",
        help="save every iterate as one (iterations, features) .npy array")
    add("--eval-every", type=int, default=None, metavar="K",
        help="evaluate loss and AUC every K iterations, from snapshots kept during the run and "
             "evaluated after the timed loop (default 1, coarser when snapshots would pass 256 MB)")
    add("--deadline", type=float, default=60.0, metavar="SECONDS",
        help="longest wait for a decodable set of messages in one iteration; past it the master "
             "writes a checkpoint, names the silent workers and exits with status 3 (default 60)")
    add("--checkpoint", default=None, metavar="PATH",
        help="write an atomic checkpoint (.npz) every --checkpoint-every iterations and at the end")
    add("--checkpoint-every", type=int, default=100, metavar="K", help="(default 100)")
    add("--resume", default=None, metavar="PATH",
        help="continue from a checkpoint of the same data, scheme and workers, up to --iterations")
    add("--quiet", "-q", action="store_true", help="no progress line and no table")
    add("--version", action="version", version=f"gc_fast {__version__}")
    return parser


def load_data(args):
    """The data set named by --dataset (identical on every rank)."""
    synthetic = {"amazon-like": amazon_like, "gmm": gaussian_mixture}
    if args.dataset in synthetic:
        sizes = {}
        if args.rows is not None:
            sizes["n_train"] = args.rows
            sizes["n_test"] = max(1, args.rows // 4)
        if args.features is not None:
            sizes["n_features"] = args.features
        return synthetic[args.dataset](seed=args.seed, **sizes)
    if args.rows is not None or args.features is not None:
        raise UsageError("--rows/--features apply to the synthetic data sets only, not to a file")
    return load_dataset(args.dataset, test_fraction=args.test_fraction, seed=args.seed)


def validate(args, n_workers):
    if n_workers < 1:
        raise UsageError("needs a master and at least one worker: start it as "
                         "mpirun -n N python -m gc_fast.train with N >= 2 (N = workers + 1)")
    if args.iterations < 1:
        raise UsageError("--iterations must be >= 1")
    if args.eval_every is not None and args.eval_every < 1:
        raise UsageError("--eval-every must be >= 1")
    if args.checkpoint_every < 1:
        raise UsageError("--checkpoint-every must be >= 1")
    if not args.deadline > 0:
        raise UsageError("--deadline must be a positive number of seconds")
    if args.l2 < 0 or not np.isfinite(args.l2):
        raise UsageError("--l2 must be a finite number >= 0")
    if args.lr is not None and not (args.lr > 0 and np.isfinite(args.lr)):
        raise UsageError("--lr must be a positive finite number")
    if not 0.0 <= args.test_fraction < 1.0:
        raise UsageError("--test-fraction must be in [0, 1)")
    if args.partitions_per_worker is not None and not args.scheme.startswith("partial"):
        raise UsageError("--partitions-per-worker applies to partial-frc/partial-crc only")
    if args.construction is not None and args.scheme not in ("crc", "partial-crc"):
        raise UsageError("--construction applies to crc/partial-crc only")


def make_scheme(args, n_workers):
    n_stragglers = 0 if args.scheme == "naive" else args.stragglers
    options = {}
    if args.scheme.startswith("partial"):
        options["partitions_per_worker"] = (args.partitions_per_worker
                                            if args.partitions_per_worker is not None
                                            else n_stragglers + 2)
    if args.construction is not None:
        options["construction"] = args.construction
    try:
        return make_code(args.scheme, n_workers, n_stragglers, seed=args.seed, **options)
    except ValueError as error:
        raise UsageError(f"{error} (this run has n = {n_workers} workers: mpirun -n {n_workers + 1})")


def setup(comm, args):
    """Everything a rank needs before the first iteration; raises on bad input."""
    rank, n_workers = comm.Get_rank(), comm.Get_size() - 1
    validate(args, n_workers)
    code = make_scheme(args, n_workers)
    delay_model = parse_delay(args.delay)
    delay_model.validate(n_workers)
    if delay_model.kind == "kill":
        from .runtime import fault_tolerant

        if not fault_tolerant():
            raise UsageError("--delay kill: kills worker processes, which only an MPI with ULFM fault "
                             "tolerance survives: install the ft extra (Open MPI 5) in its own venv and "
                             "start with mpirun --with-ft ulfm (see the README, Fault tolerance)")
    data = load_data(args)
    n_rows = data.X_train.shape[0]
    if code.n_partitions > n_rows:
        raise UsageError(f"{code.n_partitions} partitions but only {n_rows} training rows: "
                         "use fewer workers or more rows")
    run = argparse.Namespace(code=code, delay_model=delay_model, data=data,
                             bounds=partition_bounds(n_rows, code.n_partitions),
                             n_features=data.X_train.shape[1])
    if rank != 0:
        run.task = worker_task(args, run, rank - 1)
        run.data = None  # a worker keeps only its own partitions
    if rank == 0:
        run.lr = args.lr if args.lr is not None else 1.0 / lipschitz_logistic(
            data.X_train, args.l2, seed=args.seed)
        run.identity = {
            "data": checkpoint.data_fingerprint(data.X_train, data.y_train), "scheme": code.scheme,
            "n_workers": code.n_workers, "n_stragglers": code.n_stragglers,
            "n_partitions": code.n_partitions, "optimizer": args.optimizer, "l2": args.l2,
            "lr": run.lr, "seed": args.seed,
        }
        run.start, run.state = 0, None
        if args.resume:
            run.start, run.state, _ = checkpoint.load(args.resume, expected_config=run.identity)
            if run.start >= args.iterations:
                raise UsageError(f"{args.resume} is at iteration {run.start} already: "
                                 f"ask for --iterations above {run.start}")
    return run


def worker_task(args, run, worker):
    """The worker's own partitions as a task, its kernels compiled and warmed up."""
    from .data import build_worker_data
    from .tasks import SparseLinearTask

    X, y = run.data.X_train, run.data.y_train
    worker_data = build_worker_data(X, y, run.bounds, run.code, worker, row_scale=1.0 / X.shape[0])
    task = SparseLinearTask(worker_data, loss="logistic", backend=args.backend)
    outs = [np.zeros(length) for length in task.message_lengths]
    for _ in task.run(np.zeros(len(task.support)), outs):
        pass
    return task


def run_worker(comm, args, run):
    from .runtime import WorkerLoop, barrier, prepare_node

    shared = prepare_node(comm, run.code, run.n_features, priorities=args.priorities,
                          shared_memory=args.shared_memory)
    barrier(comm)
    WorkerLoop(comm, comm.Get_rank() - 1, run.code.n_workers, run.task, run.delay_model,
               args.seed, shared=shared, backend=args.backend).run()
    return 0


class RunFailed(Exception):
    """Training could not go on (more workers silent or dead than the scheme tolerates)."""


def run_master(comm, args, run):
    from .assembly import GradientAssembler
    from .runtime import (DeadlineExceeded, MasterLoop, WorkersLost, barrier, prepare_node,
                          resident_memory_bytes)

    code, data = run.code, run.data
    X = data.X_train
    n_features = X.shape[1]
    supports = [worker_support(X, run.bounds, code.partitions_of(w)) for w in range(code.n_workers)]
    optimizer = make_optimizer(args.optimizer, np.zeros(n_features), run.lr, l2=args.l2,
                               backend=args.backend)
    if run.state is not None:
        optimizer.load_state(run.state)
    assembler = GradientAssembler(code, supports, n_features, backend=args.backend)
    shared = prepare_node(comm, code, n_features, message_ptr=assembler.ptr,
                          priorities=args.priorities, shared_memory=args.shared_memory)
    master = MasterLoop(comm, code, supports, assembler, optimizer, backend=args.backend,
                        deadline=args.deadline, shared=shared)
    barrier(comm)
    if args.eval_every is None:  # keep the snapshots under SNAPSHOT_BYTES
        args.eval_every = max(1, -(-args.iterations * n_features * 8 // SNAPSHOT_BYTES))
    records, snapshots, trajectory = [], {}, []
    progress = _Progress(args.iterations, enabled=not args.quiet)
    started, cpu_started = time.perf_counter(), time.process_time()
    iteration = run.start
    rss_first = None
    try:
        for iteration in range(run.start, args.iterations):
            record = master.iteration(iteration)
            records.append(record)
            if rss_first is None:
                rss_first = resident_memory_bytes()
            done = iteration + 1
            if done % args.eval_every == 0 or done == args.iterations:
                snapshots[iteration] = optimizer.x.copy()
            if args.save_trajectory:
                trajectory.append(optimizer.x.copy())
            if args.checkpoint and (done % args.checkpoint_every == 0 or done == args.iterations):
                checkpoint.save(args.checkpoint, iteration=done, optimizer_state=optimizer.state(),
                                config=run.identity)
            progress.update(iteration, record)
    except (DeadlineExceeded, WorkersLost) as error:
        progress.close()
        rescue = args.checkpoint or "gc_fast-rescue.npz"
        checkpoint.save(rescue, iteration=iteration, optimizer_state=optimizer.state(),
                        config=run.identity)
        master.shutdown(timeout=5.0)
        cause = ("" if isinstance(error, WorkersLost)
                 else f"; more than s = {code.n_stragglers} workers are not answering")
        raise RunFailed(f"{error}{cause}. "
                        f"Checkpoint of iteration {iteration} written to {rescue}: "
                        f"fix the workers and continue with --resume {rescue}") from None
    total_time = time.perf_counter() - started
    master_cpu = time.process_time() - cpu_started
    silent = master.shutdown()
    progress.close()
    if silent:
        print(f"gc_fast.train: warning: workers {[w + 1 for w in silent]} did not acknowledge STOP",
              file=sys.stderr, flush=True)
    if master.dead:
        died = ", ".join(f"{w + 1} (at iteration {at})" for w, at in sorted(master.dead.items()))
        print(f"gc_fast.train: note: workers {died} died; training went on without them",
              file=sys.stderr, flush=True)
    if args.save_trajectory:
        np.save(args.save_trajectory, np.array(trajectory))
    master_rss = {"after_first_iteration": rss_first, "end": resident_memory_bytes()}
    _report(args, run, records, snapshots, total_time, master_cpu, master, optimizer.x, master_rss)
    return 0


class _Progress:
    """One progress line on stderr, refreshed a few times a second."""

    def __init__(self, n_iterations, enabled):
        self.n_iterations = n_iterations
        self.enabled = enabled and n_iterations > 1
        self.last = 0.0
        self.times = []
        self.skipped = 0

    def update(self, iteration, record):
        self.times.append(record["time"])
        self.skipped += int(np.sum(np.isnan(record["arrival"])))
        now = time.perf_counter()
        if self.enabled and (now - self.last > 0.25 or iteration + 1 == self.n_iterations):
            self.last = now
            print(f"\riteration {iteration + 1}/{self.n_iterations}  "
                  f"{1e3 * np.mean(self.times[-20:]):.2f} ms/iter  "
                  f"messages skipped {self.skipped}", end="", file=sys.stderr, flush=True)

    def close(self):
        if self.enabled:
            print(file=sys.stderr, flush=True)


def _report(args, run, records, snapshots, total_time, master_cpu, master, weights, master_rss):
    """Loss/AUC from snapshots (outside the timed loop), table, JSON, model file."""
    code, data = run.code, run.data
    evaluated = {}
    for iteration, x in snapshots.items():
        train_loss = logistic_loss(data.X_train, data.y_train, x, args.l2)
        test_auc = auc(data.y_test, data.X_test @ x) if data.X_test.shape[0] else float("nan")
        evaluated[iteration] = (train_loss, test_auc)
    times = np.array([r["time"] for r in records])
    final_loss, final_auc = evaluated[max(evaluated)]
    worker_stats = [master.worker_stats.get(w, {}) for w in range(code.n_workers)]
    summary = {
        "scheme": code.scheme, "n_workers": code.n_workers, "n_stragglers": code.n_stragglers,
        "mean_iteration_s": float(times.mean()), "median_iteration_s": float(np.median(times)),
        "total_s": float(total_time), "master_cpu_s": master_cpu, "final_train_loss": float(final_loss),
        "final_test_auc": _json_float(final_auc),
        "bytes_sent_per_iteration": float(np.mean([r["bytes_sent"] for r in records])),
        "bytes_received_per_iteration": float(np.mean([r["bytes_received"] for r in records])),
        "messages_received": master.n_received, "messages_stale": master.n_stale,
        "messages_sent_by_workers": sum(w.get("messages_sent", 0) for w in worker_stats),
        "worker_stats": worker_stats, "master_rss_bytes": master_rss, "first_iteration": run.start,
        "max_decode_residual": float(max(r["residual"] for r in records)),
        "lr": run.lr, "shared_memory": master.shared is not None,
        "dead_workers": {str(w + 1): at for w, at in sorted(master.dead.items())},
    }
    if not args.quiet:
        print(_table(summary, data.name), flush=True)
    if args.save_model:
        np.save(args.save_model, weights)
    if args.out:
        iterations = []
        for t, r in enumerate(records, start=run.start):
            loss, test_auc = evaluated.get(t, (None, None))
            iterations.append({
                "iteration": t, "time": r["time"],
                "train_loss": _json_float(loss), "test_auc": _json_float(test_auc),
                "arrival": [None if np.isnan(a) else float(a) for a in r["arrival"]],
                "used": r["used"], "decode_residual": r["residual"], "stale_messages": r["stale"],
                "bytes_sent": r["bytes_sent"], "bytes_received": r["bytes_received"],
            })
        config = dict(vars(args))
        config.update(n_workers=code.n_workers, n_stragglers=code.n_stragglers,
                      n_partitions=code.n_partitions, dataset_name=data.name,
                      n_train=data.X_train.shape[0], n_features=data.X_train.shape[1])
        with open(args.out, "w") as handle:
            json.dump({"config": config, "iterations": iterations, "summary": summary,
                       "message_worker": [int(w) + 1 for w in code.message_worker]}, handle)
    return summary


def _json_float(value):
    return None if value is None or not np.isfinite(value) else float(value)


def _table(summary, data_name):
    header = ("scheme", "n", "s", "mean ms/it", "median ms/it", "total s",
              "train loss", "test AUC", "KB sent/it", "KB recv/it")
    auc_value = summary["final_test_auc"]
    row = (summary["scheme"], summary["n_workers"], summary["n_stragglers"],
           f"{1e3 * summary['mean_iteration_s']:.2f}", f"{1e3 * summary['median_iteration_s']:.2f}",
           f"{summary['total_s']:.2f}", f"{summary['final_train_loss']:.6f}",
           "n/a" if auc_value is None else f"{auc_value:.4f}",
           f"{summary['bytes_sent_per_iteration'] / 1e3:.1f}",
           f"{summary['bytes_received_per_iteration'] / 1e3:.1f}")
    widths = [max(len(str(h)), len(str(v))) for h, v in zip(header, row)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))
    return f"data: {data_name}\n" + line(header) + "\n" + line(row)


def main(argv=None):
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(variable, "1")  # one thread per rank: ranks share the cores
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        return _fail_without_mpi(error)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    message = None
    try:
        run = setup(comm, args)
    except (UsageError, ValueError, OSError, MemoryError, ImportError) as error:
        message = str(error) or type(error).__name__
    from .runtime import gather_errors

    failed = [m for m in gather_errors(comm, message) if m]
    if failed:
        if rank == 0:
            print(f"gc_fast.train: error: {failed[0]}", file=sys.stderr, flush=True)
        return 2
    from .runtime import abort_on_error, exit_without_finalize, fault_tolerant

    with abort_on_error(comm):  # an unexpected error on one rank ends all, never a hang
        if rank != 0:
            code = run_worker(comm, args, run)
        else:
            try:
                code = run_master(comm, args, run)
            except RunFailed as error:
                print(f"gc_fast.train: error: {error}", file=sys.stderr, flush=True)
                code = 3
    if fault_tolerant():
        exit_without_finalize(code)
    return code


def _fail_without_mpi(error):
    """Argument errors are the same on every rank: print once (rank 0), exit 2."""
    rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or "0"
    if rank == "0":
        print(f"gc_fast.train: error: {error}", file=sys.stderr, flush=True)
    return 2


if __name__ == "__main__":
    sys.exit(main())
