"""gc_fast's trainer against the paper-style reference scripts, same data, same machine.

    python bench/compare_paper.py [--workers 8] [--iterations 100] [--baseline PATH]

Writes the Amazon-shaped data set as svmlight, then runs, for each case, the
paper-style stand-in (`../shared/baseline/paper_style.py`) and
`python -m gc_fast.train` under mpiexec with n + 1 ranks, and prints the mean
time per iteration of both and their ratio (median of --repeats interleaved runs). Cases: naive and CRC s = 1 with no
injected delay; CRC and FRC s = 3 with each worker delayed 0.1 s with
probability 0.25 each iteration (the baseline's `--p 0.25 --delay 0.1`, our
`--delay fixed:p=0.25,seconds=0.1`). Results also go to bench/results/compare_paper.json.
"""
import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from _mpi import environment, mpiexec

HERE = Path(__file__).resolve().parent
DEFAULT_BASELINE = HERE.parent.parent / "shared" / "baseline" / "paper_style.py"
BASELINE_ATTEMPTS = 3
RUN_TIMEOUT = 600  # seconds; the paper-style script can hang on MPICH's tcp netmods
CASES = [
    ("naive", 0, None),
    ("crc", 1, None),
    ("crc", 3, (0.25, 0.1)),
    ("frc", 3, (0.25, 0.1)),
    ("naive", 0, (0.25, 0.1)),
]


def run(argv, cwd, bed=None):
    """Run `argv` with one rank per host of `bed`, or under mpiexec on this machine."""
    n_ranks = int(argv[argv.index("-n") + 1])
    argv = argv[argv.index("-n") + 2:]
    try:
        if bed is None:
            result = subprocess.run([mpiexec(), "-n", str(n_ranks), *argv], cwd=cwd,
                                    env=environment(), capture_output=True, text=True,
                                    timeout=RUN_TIMEOUT)
        else:
            result = bed.run(argv, n_ranks, env=environment(), cwd=cwd, capture_output=True,
                             text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"timed out after {RUN_TIMEOUT} s: {' '.join(argv)}") from None
    if result.returncode:
        raise SystemExit(f"failed: {' '.join(argv)}\n{result.stdout}\n{result.stderr}")
    return result.stdout


def run_baseline(baseline, data_path, n_workers, scheme, s, straggle, iterations, cwd, bed=None):
    command = ["-n", str(n_workers + 1), sys.executable, str(baseline), str(data_path),
               "--scheme", scheme, "--s", str(s), "--iters", str(iterations)]
    if straggle:
        command += ["--p", str(straggle[0]), "--delay", str(straggle[1])]
    for attempt in range(BASELINE_ATTEMPTS):
        try:
            line = run(command, cwd, bed)
            break
        except SystemExit as failure:
            # The paper-style script posts every round's receives into one buffer up front;
            # MPICH's tcp netmods fail it now and then ("OFI poll failed ... Bad address") or
            # leave it hanging.
            if attempt == BASELINE_ATTEMPTS - 1:
                raise
            print(f"paper-style run failed, retrying: {str(failure).splitlines()[0]}",
                  file=sys.stderr)
    return float(re.search(r"mean_iter_s=([0-9.eE+-]+)", line).group(1))


def run_ours(data_path, n_workers, scheme, s, straggle, iterations, cwd, bed=None, extra=()):
    out = Path(cwd) / f"ours_{scheme}_{s}.json"
    command = ["-n", str(n_workers + 1), sys.executable, "-m", "gc_fast.train",
               "--dataset", str(data_path), "--test-fraction", "0", "--scheme", scheme,
               "--stragglers", str(s), "--iterations", str(iterations), "--quiet", "--out", str(out),
               "--eval-every", str(iterations), *extra]
    if straggle:
        command += ["--delay", f"fixed:p={straggle[0]},seconds={straggle[1]}"]
    run(command, cwd, bed)
    return json.loads(out.read_text())["summary"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved runs of each side per case; the median is reported")
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE)
    parser.add_argument("--testbed", metavar="PROFILE", default=None,
                        help="run both sides across an emulated cluster of this profile "
                             "(e.g. t2.micro; needs root), one rank per host")
    parser.add_argument("--cases", default=None,
                        help="comma-separated case numbers to run (default: all)")
    parser.add_argument("--ours-only", action="store_true",
                        help="skip the paper-style runs (no ratio)")
    parser.add_argument("--trainer-args", default="",
                        help="extra arguments for gc_fast.train, e.g. '--message-dtype float32'")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default bench/results/compare_paper[_PROFILE].json)")
    args = parser.parse_args()
    args.baseline = args.baseline.resolve()
    if not args.baseline.exists():
        raise SystemExit(f"baseline script not found at {args.baseline}: pass --baseline PATH")
    cases = CASES if args.cases is None else [CASES[int(i)] for i in args.cases.split(",")]
    with contextlib.ExitStack() as stack:
        bed = None
        if args.testbed:
            from gc_fast.testbed import Testbed, TestbedUnavailable

            try:
                bed = stack.enter_context(Testbed.from_profile(args.testbed, args.workers + 1))
            except TestbedUnavailable as error:
                raise SystemExit(f"compare_paper.py: {error}") from None
        rows = compare(args, cases, bed)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    out = args.out or results / ("compare_paper.json" if not args.testbed
                                 else f"compare_paper_{args.testbed}.json")
    out.write_text(json.dumps({"workers": args.workers, "iterations": args.iterations,
                               "testbed": args.testbed, "date": time.strftime("%Y-%m-%d"),
                               "rows": rows}, indent=2))


def compare(args, cases, bed):
    """Each case, both sides interleaved; rows of medians, ratios and bounds."""
    from gc_fast.data import amazon_like, dump_svmlight
    from gc_fast.simulate.calibrate import kernel_seconds_per_nnz

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_path = Path(tmp) / "amazon_like.svm"
        data = amazon_like(seed=args.seed)
        dump_svmlight(data_path, data)
        X = sp.vstack([data.X_train, data.X_test], format="csr")
        nnz_seconds = (kernel_seconds_per_nnz(X, np.concatenate([data.y_train, data.y_test]))
                       if bed else None)
        print(f"{'case':<24}{'paper-style ms/it':>20}{'gc_fast ms/it':>16}{'speed-up':>10}"
              f"{'bound ms/it':>13}{'of bound':>10}", flush=True)
        for scheme, s, straggle in cases:
            baselines, summaries = [], []
            for _ in range(args.repeats):  # interleaved, so machine noise hits both sides alike
                if not args.ours_only:
                    baselines.append(run_baseline(args.baseline, data_path, args.workers, scheme,
                                                  s, straggle, args.iterations, tmp, bed))
                summaries.append(run_ours(data_path, args.workers, scheme, s, straggle,
                                          args.iterations, tmp, bed, args.trainer_args.split()))
            ourss = [summary["mean_iteration_s"] for summary in summaries]
            baseline = float(np.median(baselines)) if baselines else float("nan")
            ours = float(np.median(ourss))
            bound = (bound_of(bed, X, scheme, args.workers, s, straggle, nnz_seconds).seconds
                     if bed else float("nan"))
            label = f"{scheme} s={s}" + (f" p={straggle[0]} d={straggle[1]}" if straggle else "")
            rows.append({"case": label, "baseline_s": baseline, "gc_fast_s": ours,
                         "speedup": baseline / ours, "bound_s": bound,
                         "baseline_runs_s": baselines, "gc_fast_runs_s": ourss,
                         "worker_cpu_s_per_iteration": worker_cpu(summaries, args.iterations)})
            print(f"{label:<24}{1e3 * baseline:>20.2f}{1e3 * ours:>16.2f}{baseline / ours:>9.1f}x"
                  f"{1e3 * bound:>13.2f}{ours / bound:>9.2f}x", flush=True)
    return rows


def bound_of(bed, X, scheme, n_workers, s, straggle, nnz_seconds):
    """The network bound of a case on the test bed's hosts (gc_fast.simulate.bound)."""
    from gc_fast import make_code
    from gc_fast.simulate import build_workload
    from gc_fast.simulate.bound import network_bound

    code = make_code(scheme, n_workers, s)
    workload = build_workload(scheme, n_workers, s, X, code=code)
    return network_bound(workload, bed.specs, nnz_seconds, code=code, delay=straggle)


def worker_cpu(summaries, iterations):
    """Mean CPU seconds per iteration of a worker, over the runs."""
    return float(np.mean([np.mean([w["cpu_seconds"] for w in summary["worker_stats"]])
                          for summary in summaries]) / iterations)


if __name__ == "__main__":
    main()
