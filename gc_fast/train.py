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
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from . import __version__, checkpoint
from .approximate import DECODERS
from .codes import APPROXIMATE_SCHEMES, CONSTRUCTIONS, SCHEMES
from .data import SYNTHETIC, load_data
from .data.shards import ShardedDataset, is_sharded
from .driver import MESSAGE_DTYPES, Hook, RunFailed, Settings, solve
from .kernels import BACKENDS
from .launch import mpi_start_watchdog, use_one_thread
from .objective import auc, lipschitz_logistic, logistic_loss, logistic_smoothness
from .optim import OPTIMIZERS
from .problems import SparseLinearProblem
from .schedule import MODES as PRIORITY_MODES
from .stragglers import __doc__ as DELAY_DOC

SNAPSHOT_BYTES = 256 * 2**20
RESCUE_PATH = "gc_fast-rescue.npz"
RESCUE_SECONDS = 60.0  # default --rescue-every: how old the kept checkpoint may get
OUTPUT_FAILED = 4  # exit status: trained, but an output went to a fallback file


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
             "partial-*: two messages per worker for slow-but-alive workers; hetero-crc: exact, "
             "loads proportional to --speeds; comm-efficient: exact, messages 1/--split long; "
             "expander/pairwise/bernoulli: approximate, decode after --wait arrivals "
             "(docs/schemes.md)")
    add("--stragglers", "-s", type=int, default=1, metavar="S",
        help="stragglers tolerated, s (default 1; naive always uses 0)")
    add("--partitions-per-worker", "-P", type=int, default=None, metavar="P",
        help="pieces per worker for partial schemes, P >= s+2 (default s+2)")
    add("--construction", choices=CONSTRUCTIONS, default=None,
        help="CRC encoding matrix: cyclic-mds (default, well conditioned) or random (the paper's)")
    add("--wait", type=int, default=None, metavar="K",
        help="approximate schemes: decode after K arrivals (default n - s)")
    add("--wait-ms", type=float, default=None, metavar="T",
        help="approximate schemes: decode what has arrived T ms into an iteration (or at the "
             "first arrival after), unless --wait arrivals came first (then --wait defaults to n)")
    add("--decoder", choices=DECODERS, default=None,
        help="approximate schemes: optimal (default: least squares on the arrived workers) or "
             "fast (one weight for every arrived worker)")
    add("--speeds", default=None, metavar="S1,S2,...|measure",
        help="hetero-crc: each worker's relative speed, or measure (a short timed kernel on "
             "every worker before training)")
    add("--split", type=int, default=None, metavar="M",
        help="comm-efficient: messages are 1/M of the gradient's length, each worker holds "
             "s + M partitions (default 2)")
    add("--gradient-error-every", type=int, default=0, metavar="K",
        help="every K-th iteration also wait for every message and record the decoded "
             "gradient's relative error (--out: gradient_error; default 0: never)")
    add("--dataset", default="amazon-like", metavar="|".join(SYNTHETIC) + "|PATH",
        help="built-in synthetic set, a svmlight/libsvm or .npz file (every rank loads it), or "
             "a sharded folder (python -m gc_fast.data shard FILE OUT/: each worker reads only "
             "its partitions) (default amazon-like)")
    add("--rows", type=int, default=None, help="training rows of a synthetic set")
    add("--features", type=int, default=None, help="features of a synthetic set")
    add("--test-fraction", type=float, default=None,
        help="held-out fraction of a data file (default 0.2; a sharded folder's split is the one "
             "it was sharded with)")
    add("--iterations", "-T", type=int, default=100, help="iterations (default 100)")
    add("--lr", type=float, default=None,
        help="step size (default 1/L, L estimated by power iteration)")
    add("--l2", type=float, default=1e-4, help="L2 weight (default 1e-4)")
    add("--optimizer", choices=OPTIMIZERS, default="nag", help="nag (default) or gd")
    add("--backend", choices=BACKENDS, default="cython", help="compute kernels (default cython)")
    add("--delay", default="none", metavar="SPEC",
        help="injected stragglers (see below; default none)")
    add("--priorities", choices=PRIORITY_MODES, default="auto",
        help="CPU priority of the workers when ranks share cores: auto (default) ranks them, "
             "master first, then the workers the code needs first, when a node runs more ranks "
             "than it has cores; on: always; off: the OS shares the cores fairly")
    add("--shared-memory", choices=("auto", "off"), default="auto",
        help="auto (default): when every rank runs on one node (and --message-dtype is "
             "float64), the point and the workers' messages live in an MPI-3 shared-memory "
             "window and MPI carries only zero-length notifications; off: the point and the "
             "messages always travel as MPI messages")
    add("--message-dtype", choices=MESSAGE_DTYPES, default="float64",
        help="what the point and the messages travel as. float64 (default): exact; "
             "float32: half the bytes, inexact (rounds the point and messages to float32; "
             "computing, decoding and the step stay float64); always as MPI messages, never "
             "through shared memory")
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
    add("--rescue-every", type=rescue_seconds, default=RESCUE_SECONDS, metavar="SECONDS",
        help=f"keep a checkpoint at most SECONDS of training old (default {RESCUE_SECONDS:g}): "
             f"without --checkpoint the rescue checkpoint {RESCUE_PATH} in the working folder, "
             f"removed when the run finishes; with --checkpoint PATH, PATH also on this time "
             f"bound. 0: only --checkpoint-every, and the rescue checkpoint only if the run "
             f"stops early (docs/fault-tolerance.md)")
    add("--resume", default=None, metavar="PATH",
        help="continue from a checkpoint of the same data, scheme and workers, up to --iterations")
    add("--quiet", "-q", action="store_true", help="no progress line and no table")
    add("--version", action="version", version=f"gc_fast {__version__}")
    return parser


def validate(args, n_workers):
    """The checks of flags only the command line has (the driver, the code, the optimiser
    and the data loader check the rest, on every rank); UsageError."""
    if n_workers < 1:
        raise UsageError("needs a master and at least one worker: start it as "
                         "mpirun -n N python -m gc_fast.train with N >= 2 (N = workers + 1)")
    if args.checkpoint_every < 1:
        raise UsageError("--checkpoint-every must be >= 1")
    if args.partitions_per_worker is not None and not args.scheme.startswith("partial"):
        raise UsageError("--partitions-per-worker applies to partial-frc/partial-crc only")
    if args.construction is not None and args.scheme not in ("crc", "partial-crc"):
        raise UsageError("--construction applies to crc/partial-crc only")
    approximate = ", ".join(APPROXIMATE_SCHEMES)
    for flag, value, schemes in (("--wait", args.wait, APPROXIMATE_SCHEMES),
                                 ("--wait-ms", args.wait_ms, APPROXIMATE_SCHEMES),
                                 ("--decoder", args.decoder, APPROXIMATE_SCHEMES),
                                 ("--speeds", args.speeds, ("hetero-crc",)),
                                 ("--split", args.split, ("comm-efficient",))):
        if value is not None and args.scheme not in schemes:
            raise UsageError(f"{flag} applies to {', '.join(schemes)} only")
    if args.scheme == "hetero-crc" and args.speeds is None:
        raise UsageError("hetero-crc needs --speeds S1,...,Sn (relative worker speeds) or "
                         "--speeds measure")
    if args.wait_ms is not None and not args.wait_ms > 0:
        raise UsageError(f"--wait-ms must be a positive number of milliseconds (the "
                         f"approximate schemes {approximate}), got {args.wait_ms:g}")
    if args.gradient_error_every < 0:
        raise UsageError("--gradient-error-every must be >= 0 (0: never)")


@dataclass
class MasterData:
    """What the master keeps of the data set: its identity, the rows the training loss is
    computed on (all the training rows, or a sharded set's sample of them), the test rows and
    the step size's smoothness estimate."""

    name: str
    n_train: int
    n_features: int
    fingerprint: str
    X_loss: object
    y_loss: np.ndarray
    X_test: object
    y_test: np.ndarray
    lipschitz: object  # l2 -> the smoothness constant of the training loss

    @property
    def loss_sampled(self):
        """Whether the training loss is computed on a sample of the training rows."""
        return self.X_loss.shape[0] < self.n_train

    @classmethod
    def in_memory(cls, data, seed):
        X, y = data.X_train, data.y_train
        return cls(data.name, X.shape[0], X.shape[1], checkpoint.data_fingerprint(X, y), X, y,
                   data.X_test, data.y_test, lambda l2: lipschitz_logistic(X, l2, seed=seed))

    @classmethod
    def sharded(cls, shards):
        X_loss, y_loss = shards.loss_sample()
        X_test, y_test = shards.test_set()
        return cls(shards.name, shards.n_train, shards.n_features, shards.fingerprint, X_loss,
                   y_loss, X_test, y_test,
                   lambda l2: logistic_smoothness(shards.sigma_max_squared, shards.n_train, l2))


def resolve_dataset(args):
    """The sharded set of --dataset (None for a built-in set or a file), its flags checked
    and --test-fraction resolved (0.2 for a file; a sharded set's own split)."""
    if not is_sharded(args.dataset):
        if args.test_fraction is None:
            args.test_fraction = 0.2
        return None
    if args.rows is not None or args.features is not None:
        raise UsageError("--rows and --features apply to the synthetic data sets only, not to a "
                         "sharded folder")
    try:
        shards = ShardedDataset(args.dataset)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.test_fraction is not None and args.test_fraction != shards.test_fraction:
        raise UsageError(f"{args.dataset} was sharded with --test-fraction "
                         f"{shards.test_fraction:g}: drop --test-fraction, or re-shard with "
                         f"python -m gc_fast.data shard FILE OUT/ --test-fraction "
                         f"{args.test_fraction:g}")
    args.test_fraction = shards.test_fraction
    return shards


class Training:
    """The trainer's data and problem: every rank loads a data file (the master keeps it, for
    the step size, the checkpoint identity and the evaluation); from a sharded folder each
    worker reads only its partitions and the master only the manifest, the training loss's
    rows and the test rows."""

    def __init__(self, args, rank, n_workers, shards=None, speeds=None):
        self.args = args
        self.rank = rank
        self.n_workers = n_workers
        self.shards = shards
        self.speeds = speeds
        self.data = None
        self.settings = self._settings()

    def problem(self):
        """The logistic problem on the training rows (the driver's problem factory); the
        master first checks that it can write every output (check_output_paths)."""
        args = self.args
        if self.rank == 0:
            check_output_paths(args)
        if self.shards is not None:
            if self.rank == 0:
                self.data = MasterData.sharded(self.shards)
            n_features = self.shards.n_features
            problem = SparseLinearProblem(self.shards, None, "logistic", args.backend)
        else:
            data = load_data(args.dataset, rows=args.rows, features=args.features,
                             test_fraction=args.test_fraction, seed=args.seed)
            if self.rank == 0:
                self.data = MasterData.in_memory(data, args.seed)
            n_features = data.n_features
            problem = SparseLinearProblem(data.X_train, data.y_train, "logistic", args.backend)
        if args.eval_every is None:  # keep the snapshots under SNAPSHOT_BYTES
            snapshots_bytes = args.iterations * n_features * 8
            self.settings.eval_every = max(1, -(-snapshots_bytes // SNAPSHOT_BYTES))
        return problem

    def lr(self):
        """--lr, else 1/L with L estimated by power iteration (master only; a sharded set's
        estimate is its manifest's)."""
        if self.args.lr is not None:
            return self.args.lr
        return 1.0 / self.data.lipschitz(self.args.l2)

    def evaluate(self, x):
        """(training loss, test AUC) of the iterate x."""
        data = self.data
        test_auc = auc(data.y_test, data.X_test @ x) if data.X_test.shape[0] else float("nan")
        return logistic_loss(data.X_loss, data.y_loss, x, self.args.l2), test_auc

    def _settings(self):
        args = self.args
        options = {}
        if args.scheme.startswith("partial"):
            options["partitions_per_worker"] = (args.partitions_per_worker
                                                if args.partitions_per_worker is not None
                                                else args.stragglers + 2)
        if args.construction is not None:
            options["construction"] = args.construction
        if args.wait is not None or args.wait_ms is not None:
            # a time budget alone waits for every worker until it is spent
            options["wait"] = self.n_workers if args.wait is None else args.wait
        if args.decoder is not None:
            options["decoder"] = args.decoder
        if args.speeds is not None:
            options["speeds"] = self.speeds
        if args.split is not None:
            options["split"] = args.split
        return Settings(lr=self.lr, scheme=args.scheme, n_stragglers=args.stragglers,
                        code_options=options, optimizer=args.optimizer,
                        iterations=args.iterations, l2=args.l2, delay=args.delay, seed=args.seed,
                        backend=args.backend, deadline=args.deadline,
                        wait_seconds=None if args.wait_ms is None else args.wait_ms / 1e3,
                        gradient_error_every=args.gradient_error_every,
                        priorities=args.priorities,
                        shared_memory=args.shared_memory, message_dtype=args.message_dtype,
                        eval_every=1 if args.eval_every is None else args.eval_every,
                        objective=self.evaluate, keep_trajectory=bool(args.save_trajectory),
                        everywhere=False)


class Checkpoints(Hook):
    """--resume; the checkpoint kept while training, at most --rescue-every seconds of
    training old (RESCUE_SECONDS by default): --checkpoint, also every --checkpoint-every
    iterations and at the end, else the rescue checkpoint RESCUE_PATH, removed when the run
    finishes (also when the run resumed from it); the rescue checkpoint when the run stops
    early; and the start line (survival_note) after the first iteration, unless --quiet."""

    def __init__(self, training):
        args = training.args
        self.training = training
        self.identity = None
        self.rescued = None  # (iteration, path) of the rescue checkpoint
        self.path = args.checkpoint or RESCUE_PATH
        self.interval = args.rescue_every if args.rescue_every > 0 else None
        self.due = -np.inf  # perf_counter() of the next timed write; -inf: not started
        self.written = None  # os.stat identity of the rescue file this run last wrote
        self.announce = not args.quiet
        self.replaces = None  # the warning when a rescue file of another run is in the way
        self.failing = False  # whether the last write while training failed (said once)

    def setup(self, run):
        args, data, code = self.training.args, self.training.data, run.code
        self.identity = {
            "data": data.fingerprint,
            "scheme": code.scheme, "n_workers": code.n_workers,
            "n_stragglers": code.n_stragglers, "n_partitions": code.n_partitions,
            "optimizer": args.optimizer, "l2": args.l2, "lr": run.lr, "seed": args.seed,
        }
        if args.resume:
            run.start, state, _ = checkpoint.load(args.resume, expected_config=self.identity)
            if run.start >= args.iterations:
                raise ValueError(f"{args.resume} is at iteration {run.start} already: "
                                 f"ask for --iterations above {run.start}")
            run.optimizer.load_state(state)
            if (not args.checkpoint and os.path.exists(RESCUE_PATH)
                    and os.path.samefile(args.resume, RESCUE_PATH)):
                self.written = _file_identity(RESCUE_PATH)  # this run carries it on
        if self.interval and not args.checkpoint and self.written is None:
            self.replaces = _earlier_rescue()

    def after_iteration(self, run, iteration, record):
        args = self.training.args
        done = iteration + 1
        explicit = args.checkpoint and (done % args.checkpoint_every == 0
                                        or done == args.iterations)
        if explicit or time.perf_counter() >= self.due:  # per iteration: a clock read
            self._due(run, done, explicit)

    def _due(self, run, done, explicit):
        """--checkpoint-every or the time bound asks for a write, or the first iteration is
        done (the clock starts then, and the start line is printed)."""
        if self.due == -np.inf:
            self._restart_clock()
            if self.announce:
                args = self.training.args
                print(survival_note(run.code, args, self.interval), file=sys.stderr, flush=True)
            if self.replaces:
                print(self.replaces, file=sys.stderr, flush=True)
            if not explicit:
                return
        if not (explicit or done < self.training.args.iterations):  # the last: the outputs
            return
        try:
            self._save(self.path, done, run)
        except OSError as error:  # a full disk must not end a run that can go on
            self._restart_clock()
            if not self.failing:
                print(f"gc_fast.train: warning: could not write the checkpoint {self.path} "
                      f"({error.strerror or type(error).__name__}); training goes on and "
                      f"tries again", file=sys.stderr, flush=True)
            self.failing = True
        else:
            self.failing = False

    def failed(self, run, iteration, error):
        self._save(self.path, iteration, run)
        self.rescued = (iteration, self.path)

    def discard(self):
        """The run is done and its outputs are written: remove the rescue file it wrote or
        resumed from (unless another run has replaced it since)."""
        if self.written is None:
            return
        try:
            if _file_identity(RESCUE_PATH) == self.written:
                os.unlink(RESCUE_PATH)
        except OSError:
            pass

    def _save(self, path, iteration, run):
        checkpoint.save(path, iteration=iteration, optimizer_state=run.optimizer.state(),
                        config=self.identity)
        if not self.training.args.checkpoint:  # the rescue file, removed at a normal finish
            self.written = _file_identity(path)
        self._restart_clock()

    def _restart_clock(self):
        """The next timed write: --rescue-every seconds after the last write (never without)."""
        self.due = np.inf if self.interval is None else time.perf_counter() + self.interval


def _file_identity(path):
    """What tells one write of `path` from another (a checkpoint is a new file each time)."""
    status = os.stat(path)
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def _earlier_rescue():
    """The warning that this run's rescue checkpoint will replace another run's (None if there
    is none in the working folder)."""
    try:
        written = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.stat(RESCUE_PATH).st_mtime))
    except OSError:
        return None
    return (f"gc_fast.train: warning: {RESCUE_PATH} of an earlier run (written {written}) "
            f"will be replaced by this run's: move it away now, or stop and --resume it, "
            f"to keep it")


def rescue_seconds(text):
    """--rescue-every's value: a number of seconds >= 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = np.nan
    if not (np.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0 (0: off), got {text!r}")
    return value


def survival_note(code, args, interval):
    """The start line: whether this MPI survives dead workers, the checkpoint kept, and how
    to get an MPI that survives them."""
    from mpi4py import MPI

    from .transports import fault_tolerant

    path = args.checkpoint or RESCUE_PATH
    ages = ([f"{args.checkpoint_every} iterations"] if args.checkpoint else []) + (
        [f"{interval:g} s"] if interval else [])
    kept = (f"a checkpoint at most {' or '.join(ages)} old is kept (--resume {path})" if ages
            else "no checkpoint is kept while training (--rescue-every 0)")
    if fault_tolerant():
        return (f"gc_fast.train: note: this MPI (Open MPI ULFM) survives up to s = "
                f"{code.n_stragglers} dead workers; {kept}")
    first = MPI.Get_library_version().replace("\0", "").strip().splitlines()[0]
    name = " ".join(first.split(",")[0].replace("Version:", "").split())
    if "Open MPI" in name:
        how = "start it with mpirun --with-ft ulfm"
    else:
        how = "pip install -e '.[ft]' in its own venv, mpirun --with-ft ulfm"
    return (f"gc_fast.train: note: this MPI ({name}) ends the whole job if a worker dies; "
            f"{kept}; to survive dead workers: {how} (docs/fault-tolerance.md)")


class Progress(Hook):
    """One progress line on stderr, refreshed a few times a second."""

    def __init__(self, n_iterations, enabled):
        self.n_iterations = n_iterations
        self.enabled = enabled and n_iterations > 1
        self.last = 0.0
        self.times = []
        self.skipped = 0

    def after_iteration(self, run, iteration, record):
        self.times.append(record["time"])
        self.skipped += int(np.sum(np.isnan(record["arrival"])))
        now = time.perf_counter()
        if self.enabled and (now - self.last > 0.25 or iteration + 1 == self.n_iterations):
            self.last = now
            print(f"\riteration {iteration + 1}/{self.n_iterations}  "
                  f"{1e3 * np.mean(self.times[-20:]):.2f} ms/iter  "
                  f"messages skipped {self.skipped}", end="", file=sys.stderr, flush=True)

    def failed(self, run, iteration, error):
        self.finished(run, None)

    def finished(self, run, result):
        if self.enabled:
            print(file=sys.stderr, flush=True)


def summarize(result, data):
    """The run's summary (the --out file's "summary" and the table's figures)."""
    stats, history = result.stats, result.history
    times = np.array([r["time"] for r in history])
    final_loss, final_auc = result.objective_values[-1]
    code = result.code
    return {
        "scheme": code.scheme, "n_workers": code.n_workers, "n_stragglers": code.n_stragglers,
        "mean_iteration_s": float(times.mean()), "median_iteration_s": float(np.median(times)),
        "total_s": result.wall_seconds, "master_cpu_s": stats["master_cpu_seconds"],
        "final_train_loss": float(final_loss), "final_test_auc": _json_float(final_auc),
        "train_loss_rows": int(data.X_loss.shape[0]), "train_loss_sampled": data.loss_sampled,
        "bytes_sent_per_iteration": float(np.mean([r["bytes_sent"] for r in history])),
        "bytes_received_per_iteration": float(np.mean([r["bytes_received"] for r in history])),
        "messages_received": stats["messages_received"],
        "messages_stale": stats["messages_stale"],
        "messages_sent_by_workers": sum(w.get("messages_sent", 0)
                                        for w in stats["worker_stats"]),
        "worker_stats": stats["worker_stats"], "master_rss_bytes": stats["master_rss_bytes"],
        "first_iteration": history[0]["iteration"],
        "max_decode_residual": float(max(r["residual"] for r in history)),
        "mean_decode_error": float(np.mean([r["decode_error"] for r in history])),
        "mean_gradient_error": _json_float(_mean_sampled([r["gradient_error"] for r in history])),
        "exact": bool(code.exact),
        "speeds": _json_list(getattr(code, "speeds", None)),
        "loads": _json_list(getattr(code, "loads", None)),
        "lr": result.lr, "shared_memory": stats["shared_memory"],
        "message_dtype": stats["message_dtype"],
        "dead_workers": {str(w + 1): at for w, at in sorted(stats["dead_workers"].items())},
    }


def write_results(args, result, summary, data, path):
    """The --out JSON at `path`: configuration, per-iteration records, summary, message
    senders."""
    evaluated = dict(zip(result.objective_iterations.tolist(), result.objective_values.tolist(),
                         strict=True))
    iterations = []
    for r in result.history:
        loss, test_auc = evaluated.get(r["iteration"], (None, None))
        iterations.append({
            "iteration": r["iteration"], "time": r["time"],
            "train_loss": _json_float(loss), "test_auc": _json_float(test_auc),
            "arrival": [None if np.isnan(a) else float(a) for a in r["arrival"]],
            "used": r["used"], "decode_residual": r["residual"],
            "decode_error": r["decode_error"], "gradient_error": _json_float(r["gradient_error"]),
            "stale_messages": r["stale"],
            "bytes_sent": r["bytes_sent"], "bytes_received": r["bytes_received"],
        })
    code = result.code
    config = dict(vars(args))
    config.update(n_workers=code.n_workers, n_stragglers=code.n_stragglers,
                  n_partitions=code.n_partitions, dataset_name=data.name,
                  n_train=data.n_train, n_features=data.n_features)
    with open(path, "w") as handle:
        json.dump({"config": config, "iterations": iterations, "summary": summary,
                   "message_worker": [int(w) + 1 for w in code.message_worker]}, handle)


def _mean_sampled(values):
    """Mean of the sampled values (nan where not sampled); None if none was."""
    values = np.array(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else None


def _json_list(values):
    return None if values is None else np.asarray(values).tolist()


def _json_float(value):
    return None if value is None or not np.isfinite(value) else float(value)


def table(summary, data_name):
    """The summary as the two-line table the trainer prints."""
    header = ("scheme", "n", "s", "mean ms/it", "median ms/it", "total s",
              "train loss", "test AUC", "KB sent/it", "KB recv/it")
    auc_value = summary["final_test_auc"]
    row = (summary["scheme"], summary["n_workers"], summary["n_stragglers"],
           f"{1e3 * summary['mean_iteration_s']:.2f}", f"{1e3 * summary['median_iteration_s']:.2f}",
           f"{summary['total_s']:.2f}", f"{summary['final_train_loss']:.6f}",
           "n/a" if auc_value is None else f"{auc_value:.4f}",
           f"{summary['bytes_sent_per_iteration'] / 1e3:.1f}",
           f"{summary['bytes_received_per_iteration'] / 1e3:.1f}")
    widths = [max(len(str(h)), len(str(v))) for h, v in zip(header, row, strict=True)]

    def line(cells):
        return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True))

    inexact = ("  (point and messages rounded to float32: inexact)"
               if summary["message_dtype"] == "float32" else "")
    sampled = (f"  (train loss on a sample of {summary['train_loss_rows']} training rows)"
               if summary["train_loss_sampled"] else "")
    approximate = ""
    if not summary["exact"]:
        approximate = f"  (approximate: mean decode error {summary['mean_decode_error']:.3g}"
        if summary["mean_gradient_error"] is not None:
            approximate += f", mean gradient error {summary['mean_gradient_error']:.3g}"
        approximate += ")"
    return (f"data: {data_name}{inexact}{sampled}{approximate}\n" + line(header) + "\n"
            + line(row))


def report(args, training, result):
    """What the master prints and writes once training is done."""
    stats = result.stats
    if stats["silent_workers"]:
        print(f"gc_fast.train: warning: workers {[w + 1 for w in stats['silent_workers']]} did "
              f"not acknowledge STOP", file=sys.stderr, flush=True)
    if stats["dead_workers"]:
        died = ", ".join(f"{w + 1} (at iteration {at})"
                         for w, at in sorted(stats["dead_workers"].items()))
        print(f"gc_fast.train: note: workers {died} died; training went on without them",
              file=sys.stderr, flush=True)
    summary = summarize(result, training.data)
    if not args.quiet:
        print(table(summary, training.data.name), flush=True)
    writes = [("--save-trajectory", args.save_trajectory,
               lambda path: np.save(path, result.trajectory)),
              ("--save-model", args.save_model, lambda path: np.save(path, result.w)),
              ("--out", args.out,
               lambda path: write_results(args, result, summary, training.data, path))]
    failed = [flag for flag, path, write in writes if path and not save(flag, path, write)]
    return OUTPUT_FAILED if failed else 0


def output_paths(args):
    """(flag, path) of every file the run may write: the outputs and the checkpoint (the
    rescue checkpoint's path without --checkpoint)."""
    paths = [("--out", args.out), ("--save-model", args.save_model),
             ("--save-trajectory", args.save_trajectory),
             ("--checkpoint", args.checkpoint or RESCUE_PATH)]
    return [(flag, path) for flag, path in paths if path]


def check_output_paths(args):
    """Every file the run may write must be writable before any work: ValueError naming the
    flag and the fix."""
    for flag, path in output_paths(args):
        folder = os.path.dirname(os.path.abspath(path))
        what = (f"{flag} {path}" if flag != "--checkpoint" or args.checkpoint else
                f"the rescue checkpoint {RESCUE_PATH} (written in the working folder while "
                f"training and if the run stops early)")
        if os.path.isdir(path):
            raise ValueError(f"{what} is a folder: name a file in it")
        if not os.path.isdir(folder):
            raise ValueError(f"{what}: folder {folder} does not exist: create it or choose "
                             f"another path")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"{what}: folder {folder} is not writable: choose another path"
                             + ("" if args.checkpoint else " or pass --checkpoint PATH"))


def save(flag, path, write):
    """write(path); if that fails, write to a fallback file (working folder, else the temporary
    one) and say where in one line: trained work is never thrown away. Whether path got it."""
    try:
        write(path)
        return True
    except OSError as error:
        reason = error.strerror or type(error).__name__
    name = f"gc_fast-unsaved-{os.path.basename(path)}"
    for folder in (os.getcwd(), tempfile.gettempdir()):
        fallback = os.path.join(folder, name)
        try:
            write(fallback)
        except OSError:
            continue
        print(f"gc_fast.train: error: could not write {flag} {path} ({reason}); it is saved "
              f"as {fallback} instead", file=sys.stderr, flush=True)
        return False
    print(f"gc_fast.train: error: could not write {flag} {path} ({reason}), nor a copy in the "
          f"working or temporary folder: free some disk space", file=sys.stderr, flush=True)
    return False


def worker_speeds(comm, spec):
    """--speeds as a list of floats, one per worker: given, or measured on every worker by
    a short timed kernel (collective; None without --speeds)."""
    if spec is None:
        return None
    if spec == "measure":
        from .transports import measure_speeds

        return list(measure_speeds(comm))
    try:
        speeds = [float(part) for part in spec.split(",")]
    except ValueError:
        speeds = None
    if speeds is None:
        raise UsageError(f"--speeds must be comma-separated numbers or measure, got {spec!r}")
    if len(speeds) != comm.Get_size() - 1:
        raise UsageError(f"--speeds needs one speed per worker: {comm.Get_size() - 1}, got "
                         f"{len(speeds)}")
    return speeds


def train(comm, args):
    """Run the trainer on this rank; the process's exit status."""
    rank, n_workers = comm.Get_rank(), comm.Get_size() - 1
    validate(args, n_workers)
    speeds = worker_speeds(comm, args.speeds)
    training = Training(args, rank, n_workers, resolve_dataset(args), speeds)
    checkpoints = Checkpoints(training)
    hooks = [checkpoints, Progress(args.iterations, enabled=not args.quiet and rank == 0)]
    try:
        result = solve(training.problem, training.settings, comm=comm, hooks=hooks)
    except ValueError as error:
        if rank == 0:
            print(f"gc_fast.train: error: {error}", file=sys.stderr, flush=True)
        return 2
    except RunFailed as error:
        iteration, path = checkpoints.rescued
        print(f"gc_fast.train: error: {error}. Checkpoint of iteration {iteration} written to "
              f"{path}: fix the workers and continue with --resume {path}",
              file=sys.stderr, flush=True)
        return 3
    if rank == 0:
        status = report(args, training, result)
        if status == 0:  # every output written: the rescue checkpoint has served
            checkpoints.discard()
        return status
    return 0


def main(argv=None):
    use_one_thread()  # ranks share the cores
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        return _fail_without_mpi(error)
    with mpi_start_watchdog():
        from mpi4py import MPI

    comm = MPI.COMM_WORLD
    try:
        status = train(comm, args)
    except UsageError as error:
        if comm.Get_rank() == 0:
            print(f"gc_fast.train: error: {error}", file=sys.stderr, flush=True)
        status = 2
    from .transports import exit_without_finalize, fault_tolerant

    if fault_tolerant():
        exit_without_finalize(status)
    return status


def _fail_without_mpi(error):
    """Argument errors are the same on every rank: print once (rank 0), exit 2."""
    rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or "0"
    if rank == "0":
        print(f"gc_fast.train: error: {error}", file=sys.stderr, flush=True)
    return 2


if __name__ == "__main__":
    sys.exit(main())
