"""Simulator against the trainer on the emulated cluster: predicted vs measured ms per iteration.

    python bench/validate_testbed.py [--calibrate] [--profile t2.micro] [--iterations 30]

Needs root (the test bed). Holds /tmp/testbed.lock while it uses the test bed (or inherits it
from `flock /tmp/testbed.lock python bench/validate_testbed.py ...`). Writes the Amazon-shaped
data set (amazon_like(seed=0), train and test rows) as svmlight, then runs
`python -m gc_fast.train --dataset FILE --test-fraction 0` across the test bed (one rank per
host: the master and n = 8 workers) for each case: naive, FRC and CRC at s = 1 and 3 without
delays, CRC and FRC s = 3 with `--delay fixed:p=0.25,seconds=0.1`. The simulator, loaded with
the test bed's cost file (`python -m gc_fast.simulate --calibrate --testbed-profile PROFILE`,
or --calibrate here, which runs it first under the same lock), predicts every run from its
--out file (gc_fast.simulate.validate_run, the same delays), and its workers' CPU seconds per
iteration (gc_fast.simulate.calibrate.worker_cpu_seconds). Prints the table and writes
bench/results/validate_testbed[_PROFILE].json (t2.micro: validate_testbed.json).
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _mpi import ROOT

sys.path.insert(0, str(ROOT))
from gc_fast.data import amazon_like, dump_svmlight, load_data  # noqa: E402
from gc_fast.simulate import CostModel, validate_run  # noqa: E402
from gc_fast.simulate.calibrate import (  # noqa: E402
    CalibrationError,
    calibrate_testbed,
    run_on_testbed,
    testbed,
    testbed_lock,
    worker_cpu_of_run,
)
from gc_fast.simulate.costs import testbed_costs_path  # noqa: E402
from gc_fast.testbed.hosts import PROFILES, host_specs  # noqa: E402

CASES = [  # (scheme, s, --delay)
    ("naive", 0, "none"),
    ("frc", 1, "none"),
    ("crc", 1, "none"),
    ("frc", 3, "none"),
    ("crc", 3, "none"),
    ("crc", 3, "fixed:p=0.25,seconds=0.1"),
    ("frc", 3, "fixed:p=0.25,seconds=0.1"),
]
TOLERANCE = 0.2  # the goal: every prediction within 20% of the measurement


def label(scheme, s, delay):
    name = "naive" if scheme == "naive" else f"{scheme.upper()} s={s}"
    return name + ("" if delay == "none" else f", {delay}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="t2.micro")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--costs", type=Path, default=None,
                        help="the test bed's cost file (default: costs-testbed-PROFILE.json "
                             "beside the default cost file)")
    parser.add_argument("--calibrate", action="store_true",
                        help="calibrate the test bed first (writes --costs)")
    parser.add_argument("--cases", default=None, help="comma-separated case numbers (default all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cost_path = args.costs or testbed_costs_path(args.profile)
    cases = CASES if args.cases is None else [CASES[int(i)] for i in args.cases.split(",")]
    hosts = host_specs(PROFILES[args.profile], args.workers + 1)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        data_path = Path(directory) / "amazon_like.svm"
        dump_svmlight(data_path, amazon_like(seed=args.seed))
        options = ["--dataset", str(data_path), "--test-fraction", "0", "--seed", str(args.seed)]
        try:
            with testbed_lock():
                if args.calibrate:
                    costs = calibrate_testbed(args.profile, hosts, str(data_path), seed=args.seed)
                    costs.save(cost_path)
                    print(f"wrote {cost_path}", flush=True)
                elif not cost_path.exists():
                    raise SystemExit(f"no cost file at {cost_path}: pass --calibrate or run "
                                     f"python -m gc_fast.simulate --calibrate --testbed-profile "
                                     f"{args.profile}")
                costs = CostModel.load(cost_path)
                print(f"costs: {costs.source}; network stack {1e9 * costs.net_byte_seconds:.2f} "
                      f"ns/byte, {1e3 * costs.wait_poll_seconds:.2f} ms polling per wait, "
                      f"{100 * costs.poll_load:.1f}% of a core polling while delayed", flush=True)
                print(f"{'case':<40}{'predicted ms':>14}{'measured ms':>13}{'ratio':>8}"
                      f"{'worker CPU pred/meas ms':>26}", flush=True)
                with testbed(args.profile, args.workers + 1) as bed:
                    for index, (scheme, s, delay) in enumerate(cases):
                        out = Path(directory) / f"run{index}.json"
                        run_on_testbed(bed, scheme, s, delay, args.iterations, out, options)
                        rows.append(compare_run(out, costs, label(scheme, s, delay)))
        except CalibrationError as error:
            raise SystemExit(f"validate_testbed.py: {error}") from None
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    out = args.out or results / ("validate_testbed.json" if args.profile == "t2.micro"
                                 else f"validate_testbed_{args.profile}.json")
    within = all(abs(row["ratio"] - 1) <= TOLERANCE for row in rows)
    out.write_text(json.dumps({"profile": args.profile, "workers": args.workers,
                               "iterations": args.iterations, "date": time.strftime("%Y-%m-%d"),
                               "command": " ".join(["python", "bench/validate_testbed.py",
                                                    *sys.argv[1:]]),
                               "costs": costs.to_dict(), "within_20_percent": within,
                               "rows": rows}, indent=2) + "\n")
    print(f"{'every' if within else 'NOT every'} prediction within {100 * TOLERANCE:.0f}% "
          f"of the measurement; wrote {out}")


def compare_run(out, costs, name):
    """One row: predicted and measured mean time and worker CPU per iteration of a run."""
    row = validate_run(out, costs)
    result = json.loads(out.read_text())
    config = result["config"]
    X = load_data(config["dataset"], test_fraction=config["test_fraction"],
                  seed=config["seed"]).X_train
    measured, predicted = worker_cpu_of_run(result, X, costs)
    predicted_cpu, measured_cpu = float(np.mean(predicted)), float(np.mean(measured))
    ratio = row["predicted_mean_s"] / row["measured_mean_s"]
    print(f"{name:<40}{1e3 * row['predicted_mean_s']:>14.1f}{1e3 * row['measured_mean_s']:>13.1f}"
          f"{ratio:>8.2f}{1e3 * predicted_cpu:>14.2f} / {1e3 * measured_cpu:.2f}", flush=True)
    return {"case": name, "scheme": row["scheme"], "n_stragglers": row["n_stragglers"],
            "delay": row["delay"], "predicted_mean_s": row["predicted_mean_s"],
            "measured_mean_s": row["measured_mean_s"], "ratio": ratio,
            "predicted_p50_s": row["predicted_p50_s"], "measured_p50_s": row["measured_p50_s"],
            "predicted_worker_cpu_s": predicted_cpu, "measured_worker_cpu_s": measured_cpu,
            "measured_master_cpu_s": result["summary"]["master_cpu_s"] / len(result["iterations"]),
            "worker_abandoned": [w.get("abandoned") for w in result["summary"]["worker_stats"]]}


if __name__ == "__main__":
    main()
