"""CPU time per iteration of every rank of the trainer (master and workers).

    python bench/rank_cpu.py [--workers 8] [--iterations 500] [-- TRAINER OPTIONS, e.g. --scheme crc --stragglers 3]

Runs `mpirun -n N+1 python -m gc_fast.train` once. The trainer's JSON output
reports the CPU time (user + system) the master spent in its timed loop and
each worker from its first point to STOP, and each worker's nice (see
--priorities); divided by the iterations, that is each rank's CPU per
iteration, free of set-up costs, compared here with the wall time per
iteration and the cores there are.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _mpi import environment, mpiexec


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("trainer_options", nargs="*", help="passed to gc_fast.train (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "run.json"
        command = [mpiexec(), "-n", str(args.workers + 1), sys.executable, "-m", "gc_fast.train",
                   "--iterations", str(args.iterations), "--eval-every", str(args.iterations),
                   "--quiet", "--out", str(out), *args.trainer_options]
        result = subprocess.run(command, env=environment(), capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr}")
        summary = json.loads(out.read_text())["summary"]
    per_iteration = 1e3 / args.iterations
    master = summary["master_cpu_s"] * per_iteration
    workers = [w["cpu_seconds"] * per_iteration for w in summary["worker_stats"]]
    wall = 1e3 * summary["mean_iteration_s"]
    cores = len(os.sched_getaffinity(0))
    print(f"options: {' '.join(args.trainer_options) or '(defaults)'}; {args.workers} workers, {cores} cores")
    print(f"master: {master:.2f} ms CPU per iteration")
    print("workers (nice): " + ", ".join(f"{cpu:.2f} ({w['nice']})"
                                         for cpu, w in zip(workers, summary["worker_stats"], strict=True)))
    print(f"workers together: {sum(workers):.2f} ms")
    total = master + sum(workers)
    print(f"all ranks: {total:.2f} ms CPU per {wall:.2f} ms iteration "
          f"({total / wall:.2f} cores busy of {cores})")


if __name__ == "__main__":
    sys.exit(main())
