"""Simulator against the real trainer: predicted vs measured mean time per iteration.

    python -m gc_fast.simulate --calibrate       # once per machine
    python bench/validate_simulator.py [--iterations 50] [--delay fixed:p=0.2,seconds=0.05]

Runs the trainer (mpirun, this machine) for each configuration of the grid
with the same injected delays, then asks the simulator, loaded with the
calibrated cost file, to predict every run from its --out file
(`python -m gc_fast.simulate --validate` does the same for one file). Prints
the Markdown table the README shows and writes
bench/results/simulator_validation.json.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _mpi import ROOT, environment, mpiexec

GRID = [  # (scheme, n_workers, n_stragglers)
    ("naive", 4, 0), ("crc", 4, 1), ("frc", 4, 1),
    ("naive", 8, 0), ("crc", 8, 1), ("frc", 8, 1), ("frc", 8, 3), ("crc", 8, 3),
    ("crc", 12, 1), ("crc", 12, 3),
]


def run_trainer(scheme, n_workers, n_stragglers, delay, iterations, out):
    command = [mpiexec(), "-n", str(n_workers + 1), sys.executable, "-m", "gc_fast.train",
               "--scheme", scheme, "--stragglers", str(n_stragglers), "--delay", delay,
               "--iterations", str(iterations), "--eval-every", str(iterations), "--quiet",
               "--out", str(out)]
    result = subprocess.run(command, env=environment(), capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--delay", default="fixed:p=0.2,seconds=0.05")
    parser.add_argument("--costs", default=None, help="cost file (default: the calibrated one)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from gc_fast.simulate import DEFAULT_COSTS_PATH, CostModel, validate_run

    cost_path = Path(args.costs) if args.costs else DEFAULT_COSTS_PATH
    if not cost_path.exists():
        raise SystemExit(f"no cost file at {cost_path}: "
                         f"run python -m gc_fast.simulate --calibrate first")
    costs = CostModel.load(cost_path)
    rows = []
    print("| configuration | predicted | measured | error |\n| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as directory:
        for scheme, n, s in GRID:
            out = Path(directory) / f"{scheme}_{n}_{s}.json"
            run_trainer(scheme, n, s, args.delay, args.iterations, out)
            row = validate_run(out, costs)
            rows.append(row)
            label = ("naive" if scheme == "naive" else scheme.upper()) + (f" s = {s}" if s else "")
            print(f"| {label}, n = {n} | {1e3 * row['predicted_mean_s']:.1f} | "
                  f"{1e3 * row['measured_mean_s']:.1f} | {row['error_percent']:+.0f}% |",
                  flush=True)
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    record = {"delay": args.delay, "iterations": args.iterations, "costs": costs.to_dict(),
              "runs": rows}
    (results / "simulator_validation.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
