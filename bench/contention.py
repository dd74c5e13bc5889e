"""How much do ranks sharing the cores slow the worker kernel? (no MPI)

    python bench/contention.py [--processes 1 2 8] [--scheme crc --stragglers 3 --workers 8]

For each count P, starts P processes at once; each runs one worker's coded
gradient step (the trainer's SparseLinearTask on the Amazon-shaped data) 200
times with a 2 ms pause between steps, as a worker waits for its next point,
and reports its CPU time per step. P = 1 is the baseline of the same run.
With P above the core count, the steps take turns on each core's caches.
"""
import argparse
import subprocess
import sys
import time
from pathlib import Path

STEPS = 200


def one_process(args):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import numpy as np

    from gc_fast.codes import make_code
    from gc_fast.data import amazon_like, build_worker_data, partition_bounds
    from gc_fast.problems import SparseLinearTask

    data = amazon_like(seed=0)
    code = make_code(args.scheme, args.workers, args.stragglers)
    bounds = partition_bounds(data.X_train.shape[0], code.n_partitions)
    worker_data = build_worker_data(data.X_train, data.y_train, bounds, code, args.worker % args.workers,
                                    row_scale=1.0 / data.X_train.shape[0])
    task = SparseLinearTask(worker_data)
    point = np.random.default_rng(0).standard_normal(len(task.support)) * 0.01
    outs = [np.zeros(length) for length in task.message_lengths]
    while time.time() < args.start_at:  # all processes start together
        time.sleep(0.001)
    cpu = 0.0
    for _ in range(STEPS):
        started = time.thread_time()
        for _ in task.run(point, outs):
            pass
        cpu += time.thread_time() - started
        time.sleep(0.002)
    print(cpu / STEPS)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--scheme", default="crc")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--stragglers", type=int, default=3)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        return one_process(args)
    print(f"{args.scheme} s={args.stragglers} n={args.workers}: CPU ms per worker step")
    baseline = None
    for count in args.processes:
        start_at = time.time() + 8.0  # time to build the data in every process
        children = [subprocess.Popen([sys.executable, __file__, "--scheme", args.scheme,
                                      "--workers", str(args.workers), "--stragglers", str(args.stragglers),
                                      "--worker", str(worker), "--start-at", str(start_at)],
                                     stdout=subprocess.PIPE, text=True) for worker in range(count)]
        per_step = sorted(1e3 * float(child.communicate()[0]) for child in children)
        median = per_step[len(per_step) // 2]
        baseline = baseline or median
        print(f"{count:3d} processes: median {median:.2f} ms (min {per_step[0]:.2f}, max {per_step[-1]:.2f}), "
              f"{median / baseline:.2f}x the first row", flush=True)


if __name__ == "__main__":
    main()
