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
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _mpi import environment, mpiexec

HERE = Path(__file__).resolve().parent
DEFAULT_BASELINE = HERE.parent.parent / "shared" / "baseline" / "paper_style.py"
CASES = [
    ("naive", 0, None),
    ("crc", 1, None),
    ("crc", 3, (0.25, 0.1)),
    ("frc", 3, (0.25, 0.1)),
]


def run(command, cwd):
    result = subprocess.run(command, cwd=cwd, env=environment(), capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stdout}\n{result.stderr}")
    return result.stdout


def run_baseline(baseline, data_path, n_workers, scheme, s, straggle, iterations, cwd):
    command = [mpiexec(), "-n", str(n_workers + 1), sys.executable, str(baseline), str(data_path),
               "--scheme", scheme, "--s", str(s), "--iters", str(iterations)]
    if straggle:
        command += ["--p", str(straggle[0]), "--delay", str(straggle[1])]
    line = run(command, cwd)
    return float(re.search(r"mean_iter_s=([0-9.eE+-]+)", line).group(1))


def run_ours(data_path, n_workers, scheme, s, straggle, iterations, cwd):
    out = Path(cwd) / f"ours_{scheme}_{s}.json"
    command = [mpiexec(), "-n", str(n_workers + 1), sys.executable, "-m", "gc_fast.train",
               "--dataset", str(data_path), "--test-fraction", "0", "--scheme", scheme,
               "--stragglers", str(s), "--iterations", str(iterations), "--quiet", "--out", str(out),
               "--eval-every", str(iterations)]
    if straggle:
        command += ["--delay", f"fixed:p={straggle[0]},seconds={straggle[1]}"]
    run(command, cwd)
    return json.loads(out.read_text())["summary"]["mean_iteration_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved runs of each side per case; the median is reported")
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE)
    args = parser.parse_args()
    args.baseline = args.baseline.resolve()
    if not args.baseline.exists():
        raise SystemExit(f"baseline script not found at {args.baseline}: pass --baseline PATH")
    from gc_fast.data import amazon_like, dump_svmlight

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_path = Path(tmp) / "amazon_like.svm"
        dump_svmlight(data_path, amazon_like(seed=args.seed))
        print(f"{'case':<24}{'paper-style ms/it':>20}{'gc_fast ms/it':>16}{'speed-up':>10}")
        for scheme, s, straggle in CASES:
            baselines, ourss = [], []
            for _ in range(args.repeats):  # interleaved, so machine noise hits both sides alike
                baselines.append(run_baseline(args.baseline, data_path, args.workers, scheme, s,
                                              straggle, args.iterations, tmp))
                ourss.append(run_ours(data_path, args.workers, scheme, s, straggle, args.iterations, tmp))
            baseline, ours = float(np.median(baselines)), float(np.median(ourss))
            label = f"{scheme} s={s}" + (f" p={straggle[0]} d={straggle[1]}" if straggle else "")
            rows.append({"case": label, "baseline_s": baseline, "gc_fast_s": ours,
                         "speedup": baseline / ours, "baseline_runs_s": baselines,
                         "gc_fast_runs_s": ourss})
            print(f"{label:<24}{1e3 * baseline:>20.2f}{1e3 * ours:>16.2f}{baseline / ours:>9.1f}x",
                  flush=True)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "compare_paper.json").write_text(json.dumps(
        {"workers": args.workers, "iterations": args.iterations, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
