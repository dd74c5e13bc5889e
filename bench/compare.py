"""Every scheme through the real MPI trainer, same data, same injected stragglers.

    python bench/compare.py                   # the default grid (every scheme, n = 8, 12, s = 1, 3)
    python bench/compare.py --workers 8,12 --stragglers 1,2,3 --repeats 3 --iterations 40 \\
        --delay fixed:p=0.2,seconds=0.05     # a larger grid
    python bench/compare.py --workers 4 --stragglers 1 --repeats 2 --iterations 10 \\
        --rows 2000 --features 5000 --out /tmp/c.json --figures /tmp/fig   # a smoke test
    python bench/compare.py --workers 8 --stragglers 1 --schemes naive,frc,crc,expander,pairwise,bernoulli \\
        --waits 4,5,6,7 --delay fixed:p=0.25,seconds=0.1 --iterations 60   # approximate codes against K
    python bench/compare.py --dataset gmm --schemes crc,comm-efficient --split 2 --stragglers 1
    python bench/compare.py --replot bench/results/compare.json   # tables and figures only
    python bench/compare.py --testbed t2.micro --workers 8 --stragglers 1,3 --delay none \\
        --natural-stragglers gap=10,seconds=2 --out bench/results/compare_t2.micro.json \\
        --figures docs/figures/t2.micro   # across an emulated cluster, its own stragglers (root)
    python bench/compare.py --testbed t2.micro --host 1:cpu=0.06 --host 2:cpu=0.06 \\
        --schemes crc,hetero-crc,frc --workers 8 --stragglers 1   # 2 of 8 hosts at half CPU

For each repetition r (seed = --seed + r) the script writes the data set
(--dataset: amazon-like, gc_fast.data.amazon_like, or gmm, the trainer's dense
Gaussian mixture gc_fast.data.gaussian_mixture, with that seed; --rows/--features
shrink it) to a temporary .npz once, computes the trainer's default step size
1/L on its training split once, and then runs, in a seeded random order,

    mpiexec -n N+1 python -m gc_fast.train --dataset DATA.npz --test-fraction F
        --scheme SCHEME --stragglers S --iterations T --delay SPEC --seed SEED
        --lr 1/L --eval-every 1 --quiet --out RUN.json [code options]

for every scheme (--schemes; default all of gc_fast.codes.SCHEMES) and every n
in --workers and s in --stragglers. Code options: the approximate schemes
(expander, pairwise, bernoulli) run once per K in --waits (--wait K; default
n - s only) and decoder in --decoders, plus once per --wait-ms T (a time
budget), each with --gradient-error-every E and --approximate-iterations
iterations if given (more than --iterations, so that they can reach naive's
final loss); hetero-crc gets --speeds (given,
measure, or with --testbed and capped host CPUs the hosts' CPU shares, so the
placement is known); comm-efficient gets --split M. Within a repetition every
scheme sees the same data, the same train/test split, the same step size and
the same straggler draws (the trainer's delays depend only on seed, iteration
and worker); repetitions differ in all of them. naive tolerates no straggler,
so it runs once per n and repetition (s = 0) and is the reference of every s.
Invalid combinations are skipped and listed: gc_fast.codes.make_code itself
decides (e.g. frc needs (s + 1) | n, pairwise (s + 1) | 2n and 2n > (s + 1)^2).

With --testbed PROFILE every run goes across the same emulated cluster (gc_fast.testbed:
one rank per host, shaped links, capped CPU, TCP), holding the machine's test-bed lock
(gc_fast.simulate.calibrate.testbed_lock); --host I:cpu=...,rate=... overrides single hosts
(host 0 is the master's, host w worker w) and --natural-stragglers slows random
hosts during each run from the same seeded schedule, counted from the run's launch; the
spells applied are kept with the run in --out.

Loading one .npz per rank instead of generating the data set on each of the
N + 1 ranks, and passing the step size the trainer would compute anyway, cut
a run's start-up on a small machine; the timed loop is the trainer's own.

Time per iteration is the trainer's record "time": from sending the point to
the decode. With --gradient-error-every E the master also waits for every
message on every E-th iteration (to measure the decoded gradient's error);
that wait comes after the decode and is not in "time", nor in the times to
target below (cumulative "time").

Outputs:
- --out (default bench/results/compare.json): the settings, the skipped
  combinations, every run (command, wall time, the trainer's whole --out JSON:
  config, summary, per-iteration records), the summary table and the bytes
  table.
- --figures DIR (default docs/figures):
  compare_time_per_iteration.png  mean time per iteration per scheme (and K), error
      bars = standard deviation over repetitions (min-max as whiskers), per n and s;
  compare_auc_vs_time.png  test AUC against cumulative iteration time (first
      repetition), one panel per (n, s);
  compare_loss_vs_time.png  training loss minus the best loss of any run of the panel
      (log scale) against cumulative iteration time (first repetition); the dotted line
      is the target, naive's final loss + 1e-3 relative;
  compare_gradient_error.png  approximate schemes: mean relative gradient error over the
      sampled iterations (and the mean decode error ||aB - 1||^2 / k) against K, one line
      per scheme and decoder, error bars over repetitions;
  compare_arrivals.png  arrival time of every worker's message per iteration,
      naive, crc and an approximate scheme (first n, smallest s, first repetition); cells
      not waited for (the master had decoded) are grey with a cross, a dot marks an
      injected delay.
- The tables on stdout. Per (scheme, n, s[, K]): time per iteration, bytes
  received per message used, the time to reach naive's final training loss
  within 1e-3 relative (cumulative record time at the first iteration whose
  training loss is <= naive_final * (1 + 1e-3), per repetition against that
  repetition's naive run), the mean decode and gradient errors, and an
  observation per (n, s): the fastest exact scheme and whether an approximate
  one reached the target sooner. The bytes table (the paper's schemes only: the
  others have no dense paper analogue) sets the trainer's sparse messages (the
  worker's support only) against the paper's dense ones: n full-width float64
  models sent, and n_features * 8 bytes for each message the paper's master
  waits for (naive n, ignore and crc n - s, frc the first of every group as
  counted in the run, the partial schemes' dense analogue n first messages plus
  the coded ones counted in the run), n of them on the wire each way.
"""
import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from _mpi import environment, mpiexec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # the checkout's gc_fast

from gc_fast.codes import APPROXIMATE_SCHEMES, PAPER_SCHEMES, SCHEMES, make_code  # noqa: E402

AMAZON_TRAIN, AMAZON_TEST = 26210, 6550
DATASETS = ("amazon-like", "gmm")
TARGET_TOLERANCE = 1e-3  # time to target: naive's final training loss within this, relative
ERROR_FLOOR = 1e-12  # the error figure's log axis: exact decodes are drawn here


def _code_is_exact(scheme):
    """The `exact` attribute of a small code of `scheme`."""
    n, s = 4, 0 if scheme == "naive" else 1
    options = {"speeds": [1.0] * n} if scheme == "hetero-crc" else {}
    try:
        return bool(make_code(scheme, n, s, **options).exact)
    except (ImportError, ValueError, TypeError):
        # its module is not there (yet) or not wired in: gc_fast.codes' docstring classes it
        return scheme not in APPROXIMATE_SCHEMES and scheme != "ignore"


ALL_SCHEMES = tuple(SCHEMES)
EXACT_SCHEMES = tuple(scheme for scheme in ALL_SCHEMES if _code_is_exact(scheme))
_PALETTE = {"naive": "#4d4d4d", "ignore": "#e6a817", "frc": "#1f77b4", "crc": "#d62728",
            "partial-frc": "#8fbcdb", "partial-crc": "#f4a3a3", "hetero-crc": "#9467bd",
            "comm-efficient": "#8c564b", "expander": "#2ca02c", "pairwise": "#17becf",
            "bernoulli": "#e377c2"}
COLOURS = {scheme: _PALETTE.get(scheme, f"C{i % 10}") for i, scheme in enumerate(ALL_SCHEMES)}


class Case(NamedTuple):
    """One configuration: scheme, n, s and, for the approximate schemes, K or a time budget."""

    scheme: str
    n: int
    s: int
    wait: int | None = None
    wait_ms: float | None = None
    decoder: str | None = None


def case_of(run):
    """The Case of a run record (old results lack the approximate fields)."""
    return Case(run["scheme"], run["n"], run["s"], run.get("wait"), run.get("wait_ms"),
                run.get("decoder"))


def label(case):
    """'crc', 'expander K=5', 'pairwise 40ms fast', ..."""
    text = case.scheme
    if case.wait is not None:
        text += f" K={case.wait}"
    if case.wait_ms is not None:
        text += f" {case.wait_ms:g}ms"
    if case.decoder not in (None, "optimal"):
        text += f" {case.decoder}"
    return text


def sort_key(case):
    inf = float("inf")
    return (case.n, case.s, ALL_SCHEMES.index(case.scheme), case.decoder not in (None, "optimal"),
            case.decoder or "", inf if case.wait is None else case.wait,
            inf if case.wait_ms is None else case.wait_ms)


# ---- planning --------------------------------------------------------------------------------

def int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def float_list(text):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def scheme_list(text):
    schemes = [v.strip() for v in text.split(",") if v.strip()]
    if schemes == ["all"]:
        return list(ALL_SCHEMES)
    if schemes == ["paper"]:
        return list(PAPER_SCHEMES)
    bad = [v for v in schemes if v not in ALL_SCHEMES]
    if bad or not schemes:
        raise argparse.ArgumentTypeError(f"unknown schemes {bad}; valid: {', '.join(ALL_SCHEMES)}, "
                                         "all or paper")
    return schemes


def decoder_list(text):
    from gc_fast.approximate import DECODERS

    decoders = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in decoders if v not in DECODERS]
    if bad or not decoders:
        raise argparse.ArgumentTypeError(f"unknown decoders {bad}; valid: {', '.join(DECODERS)}")
    return decoders


def speeds_option(text):
    if text == "measure":
        return text
    return float_list(text)


def code_options(case, speeds=None, split=None):
    """make_code's options for `case` (speeds: a list, or None for a placeholder)."""
    options = {}
    if case.scheme in APPROXIMATE_SCHEMES:
        options["wait"] = case.n if case.wait is None else case.wait  # a budget alone: wait for n
        if case.decoder is not None:
            options["decoder"] = case.decoder
    if case.scheme == "hetero-crc":
        options["speeds"] = list(speeds) if isinstance(speeds, list | tuple) else [1.0] * case.n
    if case.scheme == "comm-efficient" and split is not None:
        options["split"] = split
    return options


def invalid(case, speeds=None, split=None):
    """Why make_code refuses `case` (one line), or None."""
    if case.scheme == "hetero-crc" and isinstance(speeds, list | tuple) and len(speeds) != case.n:
        return f"--speeds has {len(speeds)} values, n = {case.n} needs {case.n}"
    try:
        make_code(case.scheme, case.n, case.s, seed=0, **code_options(case, speeds, split))
    except ValueError as error:
        return str(error)
    except (ImportError, TypeError) as error:  # a module missing or not wired in yet
        return f"{case.scheme} unavailable ({type(error).__name__}: {error})"
    return None


def plan_cases(schemes, workers, stragglers, *, waits=None, waits_ms=(), decoders=("optimal",),
               speeds=None, split=None):
    """(cases, skipped): cases are Case tuples; skipped are dicts with the reason.

    waits: K values for the approximate schemes (None: n - s only); waits_ms: extra time-budget
    runs of them; decoders: their decoders. make_code decides what is valid.
    """
    cases, skipped = [], []

    def consider(case):
        reason = invalid(case, speeds, split)
        if reason:
            skipped.append({"scheme": case.scheme, "n": case.n, "s": case.s, "wait": case.wait,
                            "wait_ms": case.wait_ms, "decoder": case.decoder, "label": label(case),
                            "reason": reason})
        else:
            cases.append(case)

    for n in workers:
        if "naive" in schemes:
            consider(Case("naive", n, 0))
        for s in stragglers:
            for scheme in schemes:
                if scheme == "naive":
                    continue
                if scheme not in APPROXIMATE_SCHEMES:
                    consider(Case(scheme, n, s))
                    continue
                for decoder in decoders:
                    for k in (waits or [n - s]):
                        consider(Case(scheme, n, s, wait=k, decoder=decoder))
                    for budget in waits_ms:
                        consider(Case(scheme, n, s, wait_ms=budget, decoder=decoder))
    return cases, skipped


# ---- running ---------------------------------------------------------------------------------

def prepare_data(directory, seed, rows, features, l2, dataset="amazon-like"):
    """Write repetition `seed`'s data set as .npz; return (path, test_fraction, lr, shape info)."""
    import scipy.sparse as sp

    from gc_fast.data import amazon_like, gaussian_mixture, load_dataset, save_npz_dataset
    from gc_fast.objective import lipschitz_logistic

    sizes = {}
    if rows is not None:  # as the trainer's --rows does
        sizes.update(n_train=rows, n_test=max(1, rows // 4))
    if features is not None:
        sizes["n_features"] = features
    make = {"amazon-like": amazon_like, "gmm": gaussian_mixture}[dataset]
    data = make(seed=seed, **sizes)
    n_train, n_test = data.X_train.shape[0], data.X_test.shape[0]
    path = Path(directory) / f"{dataset.replace('-', '_')}_seed{seed}.npz"
    save_npz_dataset(path, sp.vstack([data.X_train, data.X_test], format="csr"),
                     np.concatenate([data.y_train, data.y_test]))
    test_fraction = n_test / (n_train + n_test)
    split = load_dataset(path, test_fraction=test_fraction, seed=seed)  # the trainer's split
    lr = 1.0 / lipschitz_logistic(split.X_train, l2, seed=seed)  # the trainer's default step
    info = {"seed": seed, "dataset": dataset, "n_train": int(split.X_train.shape[0]),
            "n_test": int(split.X_test.shape[0]), "n_features": int(split.X_train.shape[1]),
            "nnz_per_row": float(split.X_train.nnz / split.X_train.shape[0]), "lr": lr}
    return path, test_fraction, lr, info


def run_speeds(args, n, bed=None):
    """hetero-crc's speeds for n workers: --speeds, else the test bed's worker CPU shares when
    every worker host is capped, else measure."""
    if args.speeds is not None:
        return args.speeds
    if bed is not None:
        shares = [spec.cpu for spec in bed.specs[1:n + 1]]
        if all(share is not None for share in shares):
            return shares
    return "measure"


def code_flags(case, args, bed=None):
    """The trainer's code options for `case`, and the speeds given to hetero-crc (or None)."""
    flags, speeds = [], None
    if case.scheme in APPROXIMATE_SCHEMES:
        if case.wait is not None:
            flags += ["--wait", str(case.wait)]
        if case.wait_ms is not None:
            flags += ["--wait-ms", repr(case.wait_ms)]
        if case.decoder is not None:
            flags += ["--decoder", case.decoder]
        if args.gradient_error_every:
            flags += ["--gradient-error-every", str(args.gradient_error_every)]
    if case.scheme == "hetero-crc":
        speeds = run_speeds(args, case.n, bed)
        flags += ["--speeds", speeds if speeds == "measure" else ",".join(f"{v:g}" for v in speeds)]
    if case.scheme == "comm-efficient" and args.split is not None:
        flags += ["--split", str(args.split)]
    return flags, speeds


def iterations_of(case, args):
    """--iterations, or --approximate-iterations for the approximate schemes."""
    if case.scheme in APPROXIMATE_SCHEMES and args.approximate_iterations:
        return args.approximate_iterations
    return args.iterations


def error_line(text, returncode):
    """The line of a failed run's output that says why: the last exception or error line, else
    the last line (MPI's launcher ends with its own boilerplate)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in reversed(lines):
        if re.search(r"(Error|Exception|error:|Killed|killed|Terminated|signal)", line) \
                and "FAQ" not in line:
            return line
    return lines[-1] if lines else f"exit status {returncode}"


def run_trainer(case, data_path, test_fraction, lr, seed, args, directory, bed=None):
    case = Case(*case)
    scheme, n, s = case.scheme, case.n, case.s
    name = label(case).replace(" ", "_").replace("=", "")
    out = Path(directory) / f"{name}_n{n}_s{s}_seed{seed}.json"
    flags, speeds = code_flags(case, args, bed)
    iterations = iterations_of(case, args)
    argv = [sys.executable, "-m", "gc_fast.train",
            "--dataset", str(data_path), "--test-fraction", repr(test_fraction),
            "--scheme", scheme, "--stragglers", str(s), "--iterations", str(iterations),
            "--delay", args.delay, "--seed", str(seed), "--lr", repr(lr), "--l2", repr(args.l2),
            "--eval-every", "1", "--quiet", "--out", str(out), *flags]
    pipes = dict(cwd=directory, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 text=True)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if bed is None:
            command = [mpiexec(), "-n", str(n + 1), *argv]
            process = subprocess.Popen(command, start_new_session=True, **pipes)
        else:
            process = bed.popen(argv, n + 1, **pipes)
            command = process.args
            if args.natural_stragglers is not None:
                from gc_fast.testbed.slowdowns import Slowdowns, SpellSettings

                log = out.with_suffix(".spells.jsonl")
                stack.enter_context(Slowdowns(bed, SpellSettings.parse(args.natural_stragglers),
                                              log))
        record = {"scheme": scheme, "n": n, "s": s, "wait": case.wait, "wait_ms": case.wait_ms,
                  "decoder": case.decoder, "label": label(case), "seed": seed,
                  "iterations": iterations,
                  "command": shlex.join(command)}
        if speeds is not None:
            record["speeds"] = speeds
        if scheme == "comm-efficient":
            record["split"] = args.split
        try:
            stdout, stderr = process.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the launcher and the ranks it started
            stdout, stderr = process.communicate()
            record.update(returncode=None, error=f"timed out after {args.timeout} s")
        else:
            record["returncode"] = process.returncode
            if process.returncode:
                record["error"] = error_line(stderr or stdout, process.returncode)
                record["output_tail"] = ((stderr or "") + (stdout or "")).splitlines()[-40:]
    record["wall_s"] = time.perf_counter() - started
    if not record.get("error"):
        record["result"] = json.loads(out.read_text())
        out.unlink()
    spells = out.with_suffix(".spells.jsonl")
    if spells.exists():
        record["spells"] = [json.loads(line) for line in spells.read_text().splitlines()]
    return record


def run_all(args):
    cases, skipped = plan_cases(args.schemes, args.workers, args.stragglers, waits=args.waits,
                                waits_ms=args.wait_ms, decoders=args.decoders,
                                speeds=args.speeds, split=args.split)
    for skip in skipped:
        print(f"skipping {skip['label']} n={skip['n']} s={skip['s']}: {skip['reason']}")
    if not cases:
        raise SystemExit("compare.py: no valid combination to run")
    n_runs = len(cases) * args.repeats
    print(f"{len(cases)} configurations x {args.repeats} repetitions = {n_runs} trainer runs, "
          f"{args.iterations} iterations each, --delay {args.delay}", flush=True)
    results = {
        "settings": {
            "argv": sys.argv[1:], "workers": args.workers, "stragglers": args.stragglers,
            "schemes": args.schemes, "repeats": args.repeats, "iterations": args.iterations,
            "approximate_iterations": args.approximate_iterations,
            "delay": args.delay, "base_seed": args.seed, "dataset": args.dataset,
            "rows": args.rows, "features": args.features, "l2": args.l2,
            "waits": args.waits, "wait_ms": args.wait_ms, "decoders": args.decoders,
            "gradient_error_every": args.gradient_error_every, "speeds": args.speeds,
            "split": args.split, "testbed": args.testbed, "hosts": args.host,
            "natural_stragglers": args.natural_stragglers, "python": platform.python_version(),
            "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "skipped": skipped, "data": [], "runs": [],
    }
    started = time.perf_counter()
    done = 0
    with contextlib.ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="gc_compare_"))
        bed = None
        if args.testbed:
            from gc_fast.simulate.calibrate import testbed_lock
            from gc_fast.testbed import Testbed, TestbedUnavailable

            print("waiting for the test-bed lock", flush=True)
            stack.enter_context(testbed_lock())  # one timed test-bed job at a time
            try:
                bed = stack.enter_context(Testbed.from_profile(
                    args.testbed, max(args.workers) + 1, overrides=args.host))
            except TestbedUnavailable as error:
                raise SystemExit(f"compare.py: {error}") from None
            results["settings"]["host_specs"] = [
                {"cpu": spec.cpu, "rate_bits": spec.rate_bits, "memory_bytes": spec.memory_bytes}
                for spec in bed.specs]
        for repetition in range(args.repeats):
            seed = args.seed + repetition
            data_path, test_fraction, lr, info = prepare_data(directory, seed, args.rows,
                                                              args.features, args.l2, args.dataset)
            results["data"].append(info)
            order = np.random.default_rng([args.seed, repetition]).permutation(len(cases))
            for index in order:
                case = cases[index]
                record = run_trainer(case, data_path, test_fraction, lr, seed, args, directory, bed)
                record["repetition"] = repetition
                results["runs"].append(record)
                done += 1
                what = (f"{1e3 * record['result']['summary']['mean_iteration_s']:8.2f} ms/it"
                        if "result" in record else f"FAILED: {record['error']}")
                print(f"[{done:>3}/{n_runs} {time.perf_counter() - started:6.0f} s] rep {repetition} "
                      f"{label(case):<22} n={case.n:<3} s={case.s}  {what}  ({record['wall_s']:.1f} s)",
                      flush=True)
            save(results, args.out)  # keep what is done if a later run is interrupted
    results["settings"]["wall_s"] = time.perf_counter() - started
    results["settings"]["loadavg_end"] = os.getloadavg()
    return results


def save(results, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, allow_nan=False))
    temporary.replace(path)


# ---- analysis --------------------------------------------------------------------------------

def completed(results):
    return [run for run in results["runs"] if "result" in run]


def groups(runs):
    """{Case: [runs]} in table order."""
    grouped = {}
    for run in runs:
        grouped.setdefault(case_of(run), []).append(run)
    return {case: grouped[case] for case in sorted(grouped, key=sort_key)}


def paper_waited_messages(run):
    """Messages the paper's dense master waits for per iteration (mean), and on the wire."""
    scheme, n, s = run["scheme"], run["n"], run["s"]
    iterations = run["result"]["iterations"]
    arrived = np.mean([sum(a is not None for a in it["arrival"]) for it in iterations])
    if scheme == "naive":
        waited = n
    elif scheme in ("ignore", "crc"):
        waited = n - s  # the paper's code waits for exactly n - s and solves least squares
    elif scheme == "frc":
        waited = arrived  # first message of every group: the same rule as the trainer's
    else:  # partial: no paper code; dense analogue, all n first messages + the coded ones it needed
        waited = arrived
    on_wire = 2 * n if scheme.startswith("partial") else n
    return float(waited), on_wire, float(arrived)


def loss_targets(runs):
    """{(n, repetition): naive's final training loss * (1 + TARGET_TOLERANCE)}; an exact run
    stands in where naive did not run (exact schemes follow naive's iterates)."""
    finals = {}
    for run in sorted(runs, key=lambda r: r["scheme"] != "naive"):
        key = (run["n"], run["repetition"])
        if key not in finals and run["scheme"] in EXACT_SCHEMES:
            loss = run["result"]["summary"]["final_train_loss"]
            if loss is not None and np.isfinite(loss):
                finals[key] = loss * (1 + TARGET_TOLERANCE)  # a logistic loss is >= 0
    return finals


def time_to_target(run, target):
    """(cumulative record time, iterations) at the first iteration whose training loss is
    <= target; (None, None) if none is."""
    if target is None:
        return None, None
    elapsed = 0.0
    for count, it in enumerate(run["result"]["iterations"], start=1):
        elapsed += it["time"]
        if it["train_loss"] is not None and it["train_loss"] <= target:
            return elapsed, count
    return None, None


def bytes_per_message(run):
    """Bytes received at the master per message used in a decode (stale ones included), over
    the iterations not sampled for the gradient error (which receive every message)."""
    records = run["result"]["iterations"]
    records = [it for it in records if it.get("gradient_error") is None] or records
    used = sum(len(it["used"]) for it in records)
    return float(sum(it["bytes_received"] for it in records) / used) if used else None


def _mean(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def _sampled_gradient_errors(run):
    return [it["gradient_error"] for it in run["result"]["iterations"]
            if it.get("gradient_error") is not None]


def summary_rows(results):
    """One row per (scheme, n, s[, K]): spread over repetitions, paired speed-ups vs naive,
    bytes per message, time to naive's final loss, decode and gradient errors."""
    runs = completed(results)
    naive = {(r["n"], r["repetition"]): r for r in runs if r["scheme"] == "naive"}
    targets = loss_targets(runs)
    reach = {}
    for r in runs:
        reach[id(r)] = time_to_target(r, targets.get((r["n"], r["repetition"])))
    rows = []
    for case, group in groups(runs).items():
        summaries = [r["result"]["summary"] for r in group]
        means = np.array([x["mean_iteration_s"] for x in summaries])
        medians = np.array([x["median_iteration_s"] for x in summaries])
        # geometric mean of the per-repetition ratios (same seed, data and delays on both sides)
        speedups = [np.log(naive[(case.n, r["repetition"])]["result"]["summary"]["mean_iteration_s"]
                           / r["result"]["summary"]["mean_iteration_s"])
                    for r in group if (case.n, r["repetition"]) in naive]
        target_speedups = []
        for r in group:
            reference = naive.get((case.n, r["repetition"]))
            mine = reach[id(r)][0]
            theirs = reach[id(reference)][0] if reference is not None else None
            if mine and theirs:
                target_speedups.append(np.log(theirs / mine))
        aucs = [x["final_test_auc"] for x in summaries]
        aucs = [a for a in aucs if a is not None]
        skipped_fraction = np.mean([
            np.mean([a is None for it in r["result"]["iterations"] for a in it["arrival"]]) for r in group])
        reached = [reach[id(r)] for r in group if reach[id(r)][0] is not None]
        decode_errors = [x.get("mean_decode_error") for x in summaries]
        gradient_errors = [x.get("mean_gradient_error") for x in summaries]
        sampled = [e for r in group for e in _sampled_gradient_errors(r)]
        rows.append({
            "scheme": case.scheme, "n": case.n, "s": case.s, "wait": case.wait,
            "wait_ms": case.wait_ms, "decoder": case.decoder, "label": label(case),
            "exact": case.scheme in EXACT_SCHEMES, "repeats": len(group),
            "mean_ms": 1e3 * float(means.mean()), "std_ms": 1e3 * float(means.std(ddof=1)) if len(means) > 1 else 0.0,
            "min_ms": 1e3 * float(means.min()), "max_ms": 1e3 * float(means.max()),
            "median_ms": 1e3 * float(np.median(medians)),
            "speedup_vs_naive": float(np.exp(np.mean(speedups))) if speedups else None,
            "final_test_auc": float(np.mean(aucs)) if aucs else None,
            "final_train_loss": float(np.mean([x["final_train_loss"] for x in summaries])),
            "max_decode_residual": float(max(x["max_decode_residual"] for x in summaries)),
            "messages_skipped_fraction": float(skipped_fraction),
            "bytes_per_message": _mean([bytes_per_message(r) for r in group]),
            "target_reached": len(reached),
            "time_to_target_s": float(np.mean([t for t, _ in reached])) if reached else None,
            "iterations_to_target": float(np.mean([k for _, k in reached])) if reached else None,
            "target_speedup_vs_naive": (float(np.exp(np.mean(target_speedups)))
                                        if target_speedups else None),
            "mean_decode_error": _mean(decode_errors),
            "mean_gradient_error": _mean(gradient_errors),
            "gradient_error_sd": float(np.std(sampled)) if sampled else None,
            "gradient_error_samples": len(sampled),
        })
    return rows


def bytes_rows(results):
    """Per (scheme, n, s) of the paper's schemes: the trainer's bytes per iteration against
    the paper's dense messages (the other schemes have no dense paper analogue)."""
    runs = [r for r in completed(results) if r["scheme"] in PAPER_SCHEMES]
    rows = []
    for case, group in groups(runs).items():
        scheme, n, s = case.scheme, case.n, case.s
        n_features = group[0]["result"]["config"]["n_features"]
        dense = 8 * n_features
        counts = [paper_waited_messages(r) for r in group]
        waited = float(np.mean([c[0] for c in counts]))
        on_wire = counts[0][1]
        sent = float(np.mean([r["result"]["summary"]["bytes_sent_per_iteration"] for r in group]))
        received = float(np.mean([r["result"]["summary"]["bytes_received_per_iteration"] for r in group]))
        rows.append({
            "scheme": scheme, "n": n, "s": s, "n_features": n_features,
            "sent_bytes": sent, "received_bytes": received,
            "messages_received_before_decode": float(np.mean([c[2] for c in counts])),
            "paper_sent_bytes": float(n * dense), "paper_messages_waited": waited,
            "paper_received_waited_bytes": waited * dense,
            "paper_messages_on_wire": on_wire, "paper_received_on_wire_bytes": float(on_wire * dense),
            "sent_ratio_paper_over_ours": n * dense / sent,
            "received_ratio_paper_waited_over_ours": waited * dense / received,
        })
    return rows


def _seconds(value):
    return "never" if value is None else f"{value:.2f} s"


def observations(rows):
    """Short lines on which scheme wins where, derived from the summary rows."""
    lines = []
    by_case = {}
    for row in rows:
        by_case.setdefault((row["n"], row["s"]), []).append(row)
    naive = {row["n"]: row for row in rows if row["scheme"] == "naive"}
    for (n, s), group in sorted(by_case.items()):
        if s == 0:
            continue
        exact = [r for r in group if r["exact"]] + ([naive[n]] if n in naive else [])
        approximate = [r for r in group if r["scheme"] in APPROXIMATE_SCHEMES]
        if exact:
            best = min(exact, key=lambda r: r["mean_ms"])
            line = (f"n={n} s={s}: fastest exact scheme {best['label']} {best['mean_ms']:.1f} ms/it"
                    + (f" ({best['speedup_vs_naive']:.2f}x naive's {naive[n]['mean_ms']:.1f})"
                       if n in naive and best["speedup_vs_naive"] else ""))
            ignore = [r for r in group if r["scheme"] == "ignore"]
            if ignore and ignore[0]["final_test_auc"] is not None and best["final_test_auc"] is not None:
                line += (f"; ignore {ignore[0]['mean_ms']:.1f} ms/it, final test AUC "
                         f"{ignore[0]['final_test_auc']:.4f} vs {best['final_test_auc']:.4f} exact")
            lines.append(line)
            crc = [r for r in group if r["scheme"] == "crc"]
            for other in (r for r in group if r["exact"] and r["scheme"] not in PAPER_SCHEMES):
                if crc:
                    text = (f"n={n} s={s}: {other['label']} {other['mean_ms']:.1f} ms/it vs crc "
                            f"{crc[0]['mean_ms']:.1f} ({crc[0]['mean_ms'] / other['mean_ms']:.2f}x)")
                    if other["bytes_per_message"] and crc[0]["bytes_per_message"]:
                        text += (f"; {other['bytes_per_message'] / 1e3:.1f} vs "
                                 f"{crc[0]['bytes_per_message'] / 1e3:.1f} KB per message")
                    lines.append(text)
        if not approximate:
            continue
        timed = [r for r in exact if r["time_to_target_s"] is not None]
        best_exact = min(timed, key=lambda r: r["time_to_target_s"]) if timed else None
        arrived = [r for r in approximate if r["time_to_target_s"] is not None]
        target = f"naive's final training loss within {TARGET_TOLERANCE:g} relative"
        if not arrived:
            closest = min(approximate, key=lambda r: r["final_train_loss"])
            lines.append(f"n={n} s={s}: no approximate scheme reached {target} within the run; "
                         f"lowest final loss {closest['label']} {closest['final_train_loss']:.6f}"
                         + (f" vs naive's {naive[n]['final_train_loss']:.6f}" if n in naive else ""))
            continue
        always = [r for r in arrived if r["target_reached"] == r["repeats"]]
        fastest = min(always or arrived, key=lambda r: r["time_to_target_s"])
        text = (f"n={n} s={s}: {fastest['label']} reached {target} in "
                f"{_seconds(fastest['time_to_target_s'])} ({fastest['iterations_to_target']:.0f} "
                f"iterations, {fastest['target_reached']}/{fastest['repeats']} repetitions, "
                f"{fastest['mean_ms']:.1f} ms/it)")
        if best_exact is None:
            text += "; no exact scheme's time to target to compare with"
        else:
            ratio = best_exact["time_to_target_s"] / fastest["time_to_target_s"]
            verdict = "faster" if ratio > 1 else "not faster"
            text += (f" vs the best exact {best_exact['label']} "
                     f"{_seconds(best_exact['time_to_target_s'])} "
                     f"({best_exact['iterations_to_target']:.0f} iterations): {verdict}, {ratio:.2f}x")
        text += (f"; {len(always)} of {len(approximate)} approximate configurations reached it "
                 "in every repetition")
        sometimes = min(arrived, key=lambda r: r["time_to_target_s"])
        if always and sometimes is not fastest:
            text += (f" (fastest where reached: {sometimes['label']} "
                     f"{_seconds(sometimes['time_to_target_s'])} in {sometimes['target_reached']}/"
                     f"{sometimes['repeats']} repetitions)")
        lines.append(text)
    return lines


def _spread(row):
    return f"{row['mean_ms']:.1f} ± {row['std_ms']:.1f} [{row['min_ms']:.1f}-{row['max_ms']:.1f}]"


def _row_label(row):
    return row.get("label") or row["scheme"]


def _number(value, form, missing="-"):
    return missing if value is None else format(value, form)


def _iterations_text(settings):
    text = f"{settings['iterations']} iterations"
    if settings.get("approximate_iterations"):
        text += f" ({settings['approximate_iterations']} for the approximate schemes)"
    return text


def print_tables(results):
    rows, byte_rows = results["summary"], results["bytes"]
    settings = results["settings"]
    print("\nTime per iteration (the records' time, from sending the point to the decode; mean over "
          "repetitions of each run's mean; ± sd [min-max]; vs naive: geometric mean of the "
          f"per-repetition ratios), {_iterations_text(settings)}, --delay {settings['delay']}")
    print(f"{'scheme':<22}{'n':>4}{'s':>3}{'reps':>5}  {'mean ms/it ± sd [min-max]':<30}{'median':>8}"
          f"{'vs naive':>10}{'test AUC':>10}{'train loss':>12}{'skipped':>9}")
    for r in rows:
        speedup = f"{r['speedup_vs_naive']:.2f}x" if r["speedup_vs_naive"] else "-"
        auc_text = f"{r['final_test_auc']:.4f}" if r["final_test_auc"] is not None else "n/a"
        print(f"{_row_label(r):<22}{r['n']:>4}{r['s']:>3}{r['repeats']:>5}  {_spread(r):<30}"
              f"{r['median_ms']:>8.1f}{speedup:>10}{auc_text:>10}{r['final_train_loss']:>12.6f}"
              f"{100 * r['messages_skipped_fraction']:>8.1f}%")
    if any("time_to_target_s" in r for r in rows):
        every = settings.get("gradient_error_every")
        every = f"every {every}-th" if every else "none sampled"
        print(f"\nTime to naive's final training loss within {TARGET_TOLERANCE:g} relative (cumulative "
              "record time, mean over the repetitions that reached it; vs naive: geometric mean of "
              "the per-repetition ratios), bytes received per message used, decode error "
              "||aB-1||^2/k (mean over iterations), gradient error ||g_dec - g||/||g|| (mean over "
              f"the iterations sampled, {every}); KB/msg leaves the sampled iterations out")
        print(f"{'scheme':<22}{'n':>4}{'s':>3}{'reached':>8}{'to target':>11}{'iters':>7}{'vs naive':>10}"
              f"{'KB/msg':>9}{'decode err':>12}{'grad err':>10}")
        for r in rows:
            speedup = _number(r.get("target_speedup_vs_naive"), ".2f")
            print(f"{_row_label(r):<22}{r['n']:>4}{r['s']:>3}"
                  f"{r.get('target_reached', 0):>5}/{r['repeats']:<2}"
                  f"{_number(r.get('time_to_target_s'), '.2f', 'never'):>11}"
                  f"{_number(r.get('iterations_to_target'), '.0f'):>7}"
                  f"{speedup + ('x' if speedup != '-' else ''):>10}"
                  f"{_number(r['bytes_per_message'] and r['bytes_per_message'] / 1e3, '.1f'):>9}"
                  f"{_number(r.get('mean_decode_error'), '.2e'):>12}"
                  f"{_number(r.get('mean_gradient_error'), '.3f'):>10}")
    print("\nBytes per iteration at the master: gc_fast (sparse, the worker's support) vs the paper "
          "(dense, n_features float64 per message); the paper's schemes only")
    print(f"{'scheme':<12}{'n':>4}{'s':>3}{'sent KB':>10}{'recv KB':>10}{'msgs':>6}"
          f"{'paper sent KB':>15}{'waited':>8}{'paper recv KB':>15}{'on wire KB':>12}{'sent x':>8}{'recv x':>8}")
    for r in byte_rows:
        print(f"{r['scheme']:<12}{r['n']:>4}{r['s']:>3}{r['sent_bytes'] / 1e3:>10.0f}"
              f"{r['received_bytes'] / 1e3:>10.0f}{r['messages_received_before_decode']:>6.1f}"
              f"{r['paper_sent_bytes'] / 1e3:>15.0f}{r['paper_messages_waited']:>8.1f}"
              f"{r['paper_received_waited_bytes'] / 1e3:>15.0f}{r['paper_received_on_wire_bytes'] / 1e3:>12.0f}"
              f"{r['sent_ratio_paper_over_ours']:>7.1f}x{r['received_ratio_paper_waited_over_ours']:>7.1f}x")
    print("  msgs: messages received before the decode (gc_fast); waited: the messages the paper's "
          "master waits for; on wire: all n (2n partial) dense messages the workers send;\n"
          "  sent x / recv x: paper dense bytes / gc_fast bytes (recv: waited-for messages only); gc_fast recv "
          "also counts stale messages of earlier iterations landing in this one")
    others = sorted({r["scheme"] for r in rows if r["scheme"] not in PAPER_SCHEMES},
                    key=ALL_SCHEMES.index)
    if others:
        print(f"  not in this table: {', '.join(others)} (no dense paper code to set them against; "
              "their bytes per message are in the table above)")
    if results["skipped"]:
        print("\nSkipped: " + "; ".join(f"{k.get('label', k['scheme'])} n={k['n']} s={k['s']} ({k['reason']})"
                                        for k in results["skipped"]))
    print("\nObservations:")
    for line in results["observations"]:
        print("  " + line)


# ---- figures ---------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _variant_style(case, waits):
    """(colour, linestyle, hatch) of a case: its scheme's colour, lighter for larger K."""
    from matplotlib.colors import to_rgb

    colour = np.array(to_rgb(COLOURS[case.scheme]))
    if case.wait is not None and len(waits) > 1:
        position = sorted(waits).index(case.wait) / (len(waits) - 1)
        colour = colour * (1 - 0.55 * position) + 0.55 * position  # mix with white
    linestyle = "--" if case.scheme == "ignore" or case.decoder == "fast" else "-"
    hatch = None
    if case.wait_ms is not None:
        linestyle, hatch = ":", "//"
    elif case.decoder == "fast":
        hatch = ".."
    return tuple(colour), linestyle, hatch


def _waits_of(cases, scheme):
    return sorted({c.wait for c in cases if c.scheme == scheme and c.wait is not None})


def _settings_where(settings):
    where = (f"across an emulated {settings['testbed']} cluster" if settings.get("testbed")
             else "under mpiexec on one machine")
    if settings.get("hosts"):
        where += f" (hosts {', '.join(settings['hosts'])})"
    if settings.get("natural_stragglers") is not None:
        where += f",\nnatural stragglers {settings['natural_stragglers'] or 'default'}"
    return where


def plot_time_per_iteration(results, path):
    plt = _pyplot()
    rows = results["summary"]
    workers = sorted({r["n"] for r in rows})
    stragglers = sorted({r["s"] for r in rows if r["s"] > 0}) or [0]
    variants = sorted({Case(r["scheme"], r["n"], r["s"], r.get("wait"), r.get("wait_ms"),
                            r.get("decoder"))._replace(n=0, s=0) for r in rows}, key=sort_key)
    all_cases = [case_of(r) for r in rows]
    fig, axes = plt.subplots(1, len(workers), figsize=(max(6.2, 0.45 * len(variants) * len(stragglers)) * len(workers), 4.4),
                             squeeze=False, sharey=True)
    width = 0.8 / len(variants)
    for ax, n in zip(axes[0], workers, strict=True):
        for k, variant in enumerate(variants):
            xs, means, errors, lows, highs = [], [], [], [], []
            for i, s in enumerate(stragglers):
                match = [r for r in rows if case_of(r)._replace(n=0, s=0) == variant and r["n"] == n
                         and (r["s"] == s or variant.scheme == "naive")]
                if not match:
                    continue
                r = match[0]
                xs.append(i + (k - (len(variants) - 1) / 2) * width)
                means.append(r["mean_ms"])
                errors.append(r["std_ms"])
                lows.append(r["min_ms"])
                highs.append(r["max_ms"])
            if not xs:
                continue
            colour, _, hatch = _variant_style(variant, _waits_of(all_cases, variant.scheme))
            ax.bar(xs, means, width, yerr=errors, capsize=2, color=colour, hatch=hatch,
                   label=label(variant) + (" (s=0)" if variant.scheme == "naive" else ""),
                   edgecolor="black", linewidth=0.4)
            ax.vlines(xs, lows, highs, color="black", linewidth=0.6, alpha=0.5)
        ax.set_xticks(range(len(stragglers)))
        ax.set_xticklabels([f"s = {s}" for s in stragglers])
        ax.set_title(f"n = {n} workers")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("mean time per iteration (ms)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    settings = results["settings"]
    _title(fig, f"Time per iteration (send to decode), gc_fast trainer {_settings_where(settings)}, "
                f"--delay {settings['delay']}, {_iterations_text(settings)}\nbars: mean of "
                f"{settings['repeats']} repetitions (each the mean of one run), error bars: sd, "
                "thin lines: min-max")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _panels(runs):
    """(workers, columns): a row per n; a column per (s, approximate scheme), every approximate
    scheme in its own panel beside the exact schemes (one panel per s without any)."""
    workers = sorted({r["n"] for r in runs})
    stragglers = sorted({r["s"] for r in runs if r["s"] > 0}) or [0]
    approximate = [a for a in APPROXIMATE_SCHEMES if any(r["scheme"] == a for r in runs)]
    return workers, [(s, a) for s in stragglers for a in (approximate or [None])]


def _panel_runs(runs, n, s, approximate="all"):
    """The runs of panel (n, s) in table order: naive's (s = 0) and those of s; of the
    approximate schemes only `approximate`'s ("all": every one)."""
    return [r for r in sorted(runs, key=lambda r: sort_key(case_of(r)))
            if r["n"] == n and (r["s"] == s or r["scheme"] == "naive")
            and (approximate == "all" or r["scheme"] not in APPROXIMATE_SCHEMES
                 or r["scheme"] == approximate)]


def _figure_legend(fig, axes, runs):
    """One legend for every panel, right of them, in table order (then any extra lines)."""
    handles = {}
    for ax in axes.ravel():
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(text, handle)
    order = [label(c) for c in sorted({case_of(r)._replace(n=0, s=0) for r in runs}, key=sort_key)]
    order = [text for text in order if text in handles]
    order += [text for text in handles if text not in order]
    fig.legend([handles[k] for k in order], order, fontsize=7, loc="center right",
               ncol=1 if len(order) <= 24 else 2)


def _title(fig, text):
    """A suptitle wrapped to the figure's width."""
    import textwrap

    width = int(fig.get_figwidth() * 13)
    fig.suptitle("\n".join(textwrap.fill(part, width) for part in text.split("\n")), fontsize=9)


def _plot_against_time(results, path, value, ylabel, title, log=False, decorate=None):
    """value(run, everything) and decorate(ax, everything): `everything` is every run of the
    panel's (n, s), shown or not, so that panels of one (n, s) share their reference."""
    plt = _pyplot()
    runs = [r for r in completed(results) if r["repetition"] == 0]
    workers, columns = _panels(runs)
    all_cases = [case_of(r) for r in runs]
    fig, axes = plt.subplots(len(workers), len(columns),
                             figsize=(4.6 * len(columns) + 2.2, 3.6 * len(workers) + 0.8),
                             squeeze=False, sharey="row")
    for i, n in enumerate(workers):
        for j, (s, approximate) in enumerate(columns):
            ax = axes[i][j]
            everything = _panel_runs(runs, n, s)
            for run in _panel_runs(runs, n, s, approximate):
                case = case_of(run)
                records = run["result"]["iterations"]
                elapsed = np.cumsum([it["time"] for it in records])
                colour, linestyle, _ = _variant_style(case, _waits_of(all_cases, case.scheme))
                ax.plot(elapsed, value(run, everything), linestyle, color=colour, label=label(case),
                        linewidth=1.2)
            if decorate is not None:
                decorate(ax, everything)
            if log:
                ax.set_yscale("log")
            ax.set_title(f"n = {n}, s = {s}" + (f": exact schemes and {approximate}"
                                                if approximate else ""), fontsize=9)
            ax.grid(alpha=0.3)
            if i == len(workers) - 1:
                ax.set_xlabel("wall-clock time (s, cumulative iteration time)")
            if j == 0:
                ax.set_ylabel(ylabel)
    _figure_legend(fig, axes, runs)
    settings = results["settings"]
    _title(fig, f"{title}, --delay {settings['delay']} (repetition 0, seed {settings['base_seed']}), "
                f"{_settings_where(settings)}")
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_auc_vs_time(results, path):
    def auc(run, everything):
        return [np.nan if it["test_auc"] is None else it["test_auc"] for it in run["result"]["iterations"]]

    _plot_against_time(results, path, auc, "test AUC", "Test AUC against training time")


def _loss(run):
    return np.array([np.nan if it["train_loss"] is None else it["train_loss"]
                     for it in run["result"]["iterations"]])


def plot_loss_vs_time(results, path):
    """Training loss minus the best of the (n, s), plus an offset: a hundredth of the target's
    gap to the best (1e-6 |best| if naive's final is the best), on a log axis."""
    targets = loss_targets([r for r in completed(results) if r["repetition"] == 0])

    def floor(everything):
        best = float(np.nanmin([np.nanmin(_loss(r)) for r in everything]))
        target = targets.get((everything[0]["n"], 0))
        gap = target - best if target is not None else 0.0
        return best, target, (1e-2 * gap if gap > 1e-6 * abs(best) else 1e-6 * max(abs(best), 1e-12))

    def excess(run, everything):
        best, _, eps = floor(everything)
        return _loss(run) - best + eps

    def decorate(ax, everything):
        best, target, eps = floor(everything)
        if target is not None:
            ax.axhline(target - best + eps, color="black", linestyle=":", linewidth=1.0,
                       label=f"target: naive final + {TARGET_TOLERANCE:g} rel.")

    _plot_against_time(results, path, excess,
                       "training loss - best loss of (n, s) + offset",
                       "Training loss above the best of any run of the same (n, s), log scale "
                       "(offset: 1/100 of the target's gap to that best); dotted: the target, "
                       f"naive's final loss + {TARGET_TOLERANCE:g} relative", log=True,
                       decorate=decorate)


def plot_gradient_error(results, path):
    """Approximate schemes: mean gradient error (and decode error) against K, per (n, s)."""
    plt = _pyplot()
    rows = [r for r in results["summary"]
            if r["scheme"] in APPROXIMATE_SCHEMES and r.get("wait") is not None]
    if not rows:
        return None
    runs = completed(results)
    panels = sorted({(r["n"], r["s"]) for r in rows})
    fig, axes = plt.subplots(2, len(panels), figsize=(5.0 * len(panels) + 2.0, 6.8), squeeze=False,
                             sharex="col")
    clipped = False
    for j, (n, s) in enumerate(panels):
        lines = sorted({(r["scheme"], r.get("decoder")) for r in rows if (r["n"], r["s"]) == (n, s)},
                       key=lambda k: (ALL_SCHEMES.index(k[0]), k[1] or ""))
        for scheme, decoder in lines:
            group = sorted((r for r in rows if (r["n"], r["s"], r["scheme"], r.get("decoder"))
                            == (n, s, scheme, decoder)), key=lambda r: r["wait"])
            text = scheme + ("" if decoder in (None, "optimal") else f" ({decoder})")
            style = "--" if decoder == "fast" else "-"
            for ax, per_run in ((axes[0][j], "mean_gradient_error"), (axes[1][j], "mean_decode_error")):
                ks, ys, lows, highs = [], [], [], []
                for r in group:
                    values = [x["result"]["summary"].get(per_run) for x in runs
                              if case_of(x) == case_of(r)]
                    values = [v for v in values if v is not None]
                    if not values:
                        continue
                    clipped |= min(values) < ERROR_FLOOR
                    values = np.maximum(values, ERROR_FLOOR)  # exact decodes: 0 up to rounding
                    ks.append(r["wait"])
                    ys.append(values.mean())
                    lows.append(values.mean() - values.min())
                    highs.append(values.max() - values.mean())
                if ks:
                    ax.errorbar(ks, ys, yerr=[lows, highs], fmt="o" + style, color=COLOURS[scheme],
                                label=text, capsize=3, linewidth=1.3, markersize=4)
        axes[0][j].set_title(f"n = {n}, s = {s}", fontsize=9)
        axes[1][j].set_xlabel("K, arrivals decoded")
        for ax in axes[:, j]:
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
            ax.xaxis.get_major_locator().set_params(integer=True)
            if clipped:
                ax.axhline(ERROR_FLOOR, color="grey", linewidth=0.6)
        for ax in axes[:, j]:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
                break
    axes[0][0].set_ylabel("gradient error ||g_dec - g|| / ||g||\n(mean over sampled iterations)")
    axes[1][0].set_ylabel("decode error ||aB - 1||^2 / k\n(mean over iterations)")
    settings = results["settings"]
    _title(fig, f"Approximate codes: error of the decoded gradient against K, --delay "
                f"{settings['delay']}, every {settings.get('gradient_error_every')}-th iteration "
                f"sampled; points: mean of the {settings['repeats']} repetitions' means, bars: "
                f"min-max" + (f"; grey line: {ERROR_FLOOR:g}, where exact decodes (0 up to rounding) "
                                "are drawn" if clipped else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _rebuild_code(run):
    """The run's code, built with its options; None when it cannot be rebuilt (ignore has no
    zero coefficients to show; measured speeds are not in the run's output; a module missing)."""
    scheme, n, s = run["scheme"], run["n"], run["s"]
    if scheme == "ignore":
        return None
    config = run["result"]["config"]
    speeds = run.get("speeds")
    if scheme == "hetero-crc" and not isinstance(speeds, list):
        return None
    options = code_options(case_of(run), speeds, run.get("split") or config.get("split"))
    if config.get("construction") and scheme in ("crc", "partial-crc"):
        options["construction"] = config["construction"]
    if config.get("partitions_per_worker") and scheme.startswith("partial-"):
        options["partitions_per_worker"] = config["partitions_per_worker"]
    try:
        return make_code(scheme, n, s, n_partitions=config.get("n_partitions"), seed=run["seed"],
                         **options)
    except (ValueError, ImportError, TypeError):
        return None


def _arrival_panel(run):
    """(arrival ms [worker, iteration], state [worker, iteration], injected delay mask)."""
    from gc_fast.stragglers import parse_delay

    result = run["result"]
    n = run["n"]
    records = result["iterations"]
    message_worker = np.array(result["message_worker"]) - 1
    T = len(records)
    arrival = np.full((n, T), np.nan)
    state = np.zeros((n, T), dtype=int)  # 0 used, 1 arrived with coefficient 0, 2 not waited for
    code = _rebuild_code(run)
    if code is not None and code.n_messages != len(message_worker):
        code = None
    for t, it in enumerate(records):
        values = np.array([np.nan if a is None else a for a in it["arrival"]])
        coefficient = None
        if code is not None:
            coefficient = code.decode(it["used"])
            if coefficient is None and hasattr(code, "decode_now") and it["used"]:
                coefficient = code.decode_now(code._arrived_mask(it["used"]))  # a time budget
            if coefficient is not None:  # comm-efficient decodes to a matrix, a row per piece
                coefficient = np.abs(np.atleast_2d(coefficient)).max(axis=0)
        for m, worker in enumerate(message_worker):
            if np.isnan(values[m]):
                state[worker, t] = max(state[worker, t], 2)
                continue
            arrival[worker, t] = np.nanmax([arrival[worker, t], 1e3 * values[m]])
            if coefficient is not None and coefficient[m] == 0.0:
                state[worker, t] = max(state[worker, t], 1)
    delays = parse_delay(result["config"]["delay"]).delays_matrix(run["seed"], range(T), n).T
    return arrival, state, delays > 0


def plot_arrivals(results, path):
    plt = _pyplot()

    runs = [r for r in completed(results) if r["repetition"] == 0]
    workers = sorted({r["n"] for r in runs})
    if not workers:
        return None
    n = workers[0]
    stragglers = sorted({r["s"] for r in runs if r["n"] == n and r["s"] > 0})
    s = stragglers[0] if stragglers else 0
    chosen = [r for r in runs if r["n"] == n and r["scheme"] == "naive"]
    chosen += [r for r in runs if r["n"] == n and r["scheme"] == "crc" and r["s"] == s]
    approximate = sorted((r for r in runs if r["n"] == n and r["s"] == s
                          and r["scheme"] in APPROXIMATE_SCHEMES),  # the default K and decoder first
                         key=lambda r: (r.get("wait") != n - s, sort_key(case_of(r))))
    chosen += approximate[:1]
    if not chosen:
        return None
    panels = [(run, *_arrival_panel(run)) for run in chosen]
    vmax = max(np.nanmax(p[1]) for p in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 1.0 + 0.33 * n * len(panels)), squeeze=False)
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("#dddddd")
    for ax, (run, arrival, state, delayed) in zip(axes[:, 0], panels, strict=True):
        T = arrival.shape[1]
        image = ax.imshow(arrival, aspect="auto", cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest",
                          extent=(-0.5, T - 0.5, n + 0.5, 0.5))
        skipped = np.argwhere(state == 2)
        ax.scatter(skipped[:, 1], skipped[:, 0] + 1, marker="x", color="#b00000", s=22, linewidths=1.0,
                   label="not waited for (skipped)")
        unused = np.argwhere(state == 1)
        if len(unused):
            ax.scatter(unused[:, 1], unused[:, 0] + 1, marker="s", facecolors="none", edgecolors="white",
                       s=26, linewidths=0.9, label="arrived, coefficient 0")
        injected = np.argwhere(delayed)
        ax.scatter(injected[:, 1] - 0.3, injected[:, 0] + 1 - 0.25, marker="v", color="#ff9900",
                   edgecolors="black", linewidths=0.3, s=14, label="injected delay")
        times = 1e3 * np.array([it["time"] for it in run["result"]["iterations"]])
        ax.set_yticks(range(1, n + 1))
        ax.set_ylabel("worker (rank)")
        summary = run["result"]["summary"]
        ax.set_title(f"{label(case_of(run))} (n = {n}, s = {run['s']}): mean "
                     f"{1e3 * summary['mean_iteration_s']:.1f} ms/iteration, {int(np.sum(state == 2))} "
                     f"of {state.size} messages skipped; longest iteration {times.max():.0f} ms",
                     fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.08, 1.0), facecolor="#9a9a9a",
                  framealpha=1.0)
        fig.colorbar(image, ax=ax, pad=0.01, label="arrival (ms)")
    axes[-1][0].set_xlabel("iteration")
    fig.suptitle(f"Arrival time of each worker's message after the master sent the model; "
                 f"--delay {results['settings']['delay']}, seed {chosen[0]['seed']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def analyse(results, figures):
    results["summary"] = summary_rows(results)
    results["bytes"] = bytes_rows(results)
    results["observations"] = observations(results["summary"])
    figures = Path(figures)
    figures.mkdir(parents=True, exist_ok=True)
    paths = {"time_per_iteration": figures / "compare_time_per_iteration.png",
             "auc_vs_time": figures / "compare_auc_vs_time.png",
             "loss_vs_time": figures / "compare_loss_vs_time.png",
             "gradient_error": figures / "compare_gradient_error.png",
             "arrivals": figures / "compare_arrivals.png"}
    plot_time_per_iteration(results, paths["time_per_iteration"])
    plot_auc_vs_time(results, paths["auc_vs_time"])
    plot_loss_vs_time(results, paths["loss_vs_time"])
    if plot_gradient_error(results, paths["gradient_error"]) is None:
        del paths["gradient_error"]
    if plot_arrivals(results, paths["arrivals"]) is None:
        del paths["arrivals"]
    results["figures"] = {key: os.path.relpath(path, ROOT) for key, path in paths.items()}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    add = parser.add_argument
    add("--workers", type=int_list, default=[8, 12], help="n values, comma-separated (default 8,12)")
    add("--stragglers", type=int_list, default=[1, 3], help="s values, comma-separated (default 1,3)")
    add("--schemes", type=scheme_list, default=list(ALL_SCHEMES),
        help="comma-separated, all (default) or paper (the paper's six)")
    add("--dataset", choices=DATASETS, default="amazon-like",
        help="amazon-like (default: sparse, Amazon-shaped) or gmm (the dense Gaussian mixture)")
    add("--repeats", type=int, default=2, help="repetitions, seeds --seed, --seed+1, ... (default 2)")
    add("--iterations", type=int, default=30, help="iterations per run (default 30)")
    add("--approximate-iterations", type=int, default=None, metavar="T",
        help="iterations of the approximate schemes' runs (default --iterations): more, so that "
             "they can reach naive's final loss")
    add("--delay", default="fixed:p=0.2,seconds=0.05", help="the trainer's --delay SPEC "
        "(default fixed:p=0.2,seconds=0.05)")
    add("--seed", type=int, default=0, help="seed of repetition 0 (default 0)")
    add("--rows", type=int, default=None,
        help=f"training rows (default the data set's: Amazon's {AMAZON_TRAIN}, gmm 20000; test rows = rows/4)")
    add("--features", type=int, default=None, help="features (default Amazon-like 241,915, gmm 100)")
    add("--l2", type=float, default=1e-4, help="L2 weight (default 1e-4, the trainer's)")
    add("--waits", type=int_list, default=None, metavar="K1,K2,...",
        help="approximate schemes: one run per K (--wait K; default n - s only)")
    add("--wait-ms", type=float_list, default=[], metavar="T1,...",
        help="approximate schemes: extra runs with a time budget of T ms (--wait-ms T)")
    add("--decoders", type=decoder_list, default=["optimal"], metavar="optimal,fast",
        help="approximate schemes: one run per decoder (default optimal)")
    add("--gradient-error-every", type=int, default=5, metavar="E",
        help="approximate schemes: every E-th iteration the master also waits for every message "
             "and records the gradient error (default 5; 0: never; the wait is not in the "
             "records' time)")
    add("--speeds", type=speeds_option, default=None, metavar="S1,...,Sn|measure",
        help="hetero-crc's relative worker speeds (default measure; with --testbed and capped "
             "worker CPUs, the hosts' CPU shares)")
    add("--split", type=int, default=None, metavar="M",
        help="comm-efficient: messages 1/M long (default the trainer's, 2)")
    add("--timeout", type=float, default=600.0, help="seconds before a run is killed (default 600)")
    add("--testbed", metavar="PROFILE", default=None,
        help="run every scheme across an emulated cluster of this profile (e.g. t2.micro; "
             "root), one rank per host")
    add("--host", action="append", default=[], metavar="I:SETTINGS",
        help="with --testbed: one host's settings, e.g. 3:cpu=0.06,rate=50mbit (host 0 the "
             "master's, host w worker w; repeatable)")
    add("--natural-stragglers", metavar="SETTINGS", default=None,
        help="with --testbed: slow random hosts during each run (gc_fast.testbed's "
             "--natural-stragglers settings, e.g. gap=10,seconds=2,seed=0)")
    add("--out", default=str(HERE / "results" / "compare.json"), help="results JSON")
    add("--figures", default=str(ROOT / "docs" / "figures"), help="directory of the PNG figures")
    add("--replot", metavar="JSON", default=None,
        help="redo tables and figures from a saved results JSON, run nothing")
    args = parser.parse_args(argv)
    if args.replot:
        results = json.loads(Path(args.replot).read_text())
    else:
        if args.repeats < 1 or args.iterations < 1 or (args.approximate_iterations or 1) < 1:
            parser.error("--repeats, --iterations and --approximate-iterations must be >= 1")
        if args.gradient_error_every < 0:
            parser.error("--gradient-error-every must be >= 0")
        if (args.natural_stragglers is not None or args.host) and not args.testbed:
            parser.error("--natural-stragglers and --host need --testbed PROFILE")
        if args.testbed:
            from gc_fast.testbed import PROFILES, host_specs

            if args.testbed not in PROFILES:
                parser.error(f"unknown test-bed profile {args.testbed!r}; valid: {', '.join(PROFILES)}")
            try:
                host_specs(PROFILES[args.testbed], max(args.workers) + 1, overrides=args.host)
            except ValueError as error:
                parser.error(str(error))
        from gc_fast.stragglers import parse_delay

        try:
            parse_delay(args.delay)
        except ValueError as error:
            parser.error(str(error))
        results = run_all(args)
    if not completed(results):
        raise SystemExit("no run completed; see the errors above")
    analyse(results, args.figures)
    out = args.replot if args.replot and args.out == parser.get_default("out") else args.out
    save(results, out)
    print_tables(results)
    failed = [r for r in results["runs"] if "result" not in r]
    if failed:
        print(f"\n{len(failed)} runs failed:")
        for r in failed:
            print(f"  {r.get('label', r['scheme'])} n={r['n']} s={r['s']} seed={r['seed']}: {r['error']}")
    print("\nwrote " + ", ".join([os.path.relpath(out)] + list(results["figures"].values())))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
