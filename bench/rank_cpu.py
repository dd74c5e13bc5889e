"""CPU time per iteration of every rank of the trainer (master and workers).

    python bench/rank_cpu.py [--workers 8] [-- TRAINER OPTIONS, e.g. --scheme crc --stragglers 3]

Runs `mpirun -n N+1 python -m gc_fast.train` twice, with 50 and 550
iterations, each rank under a small wrapper that records the CPU time (user +
system) its trainer process used. The difference over the 500 extra
iterations is each rank's CPU per iteration, free of set-up costs; it is
compared with the wall time per iteration and the cores there are.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from _mpi import environment, mpiexec

SHORT, LONG = 50, 550


def wrap(record_dir, command):
    """Run command as this rank; append its CPU seconds to record_dir/rank-<rank>."""
    code = subprocess.call(command, close_fds=False)  # keep the MPI launcher's descriptors
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or "0"
    Path(record_dir, f"rank-{rank}").write_text(str(usage.ru_utime + usage.ru_stime))
    return code


def run(n_workers, iterations, trainer_options, directory):
    records = Path(directory) / str(iterations)
    records.mkdir()
    out = Path(directory) / f"run-{iterations}.json"
    command = [mpiexec(), "-n", str(n_workers + 1), sys.executable, __file__, "--wrap", str(records), "--",
               sys.executable, "-m", "gc_fast.train", "--iterations", str(iterations),
               "--eval-every", str(iterations), "--quiet", "--out", str(out), *trainer_options]
    result = subprocess.run(command, env=environment(), capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr}")
    cpu = [float((records / f"rank-{rank}").read_text()) for rank in range(n_workers + 1)]
    return cpu, json.loads(out.read_text())["summary"]["mean_iteration_s"]


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--wrap":
        separator = sys.argv.index("--")
        return wrap(sys.argv[2], sys.argv[separator + 1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("trainer_options", nargs="*", help="passed to gc_fast.train (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        short, _ = run(args.workers, SHORT, args.trainer_options, directory)
        long, wall = run(args.workers, LONG, args.trainer_options, directory)
    per_iteration = [1e3 * (b - a) / (LONG - SHORT) for a, b in zip(short, long)]
    cores = len(os.sched_getaffinity(0))
    print(f"options: {' '.join(args.trainer_options) or '(defaults)'}; {args.workers} workers, {cores} cores")
    print(f"master: {per_iteration[0]:.2f} ms CPU per iteration")
    workers = per_iteration[1:]
    print(f"workers: {min(workers):.2f} to {max(workers):.2f} ms each, {sum(workers):.2f} ms together")
    print(f"all ranks: {sum(per_iteration):.2f} ms CPU per {1e3 * wall:.2f} ms iteration "
          f"({sum(per_iteration) / (1e3 * wall):.2f} cores busy of {cores})")


if __name__ == "__main__":
    sys.exit(main())
