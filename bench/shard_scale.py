"""Sharded data at scale: per-worker memory and start-up against the whole file, and a set larger
than a host trained across the emulated cluster.

    python bench/shard_scale.py memory [--rows 500000] [--testbed PROFILE]
    python bench/shard_scale.py large [--rows 6000000] [--testbed t2.micro]

Both write an Amazon-shaped svmlight file (amazon_like blocks of 250,000 rows, seeds 0, 1, ...,
the data set's 241,915 columns), shard it with `python -m gc_fast.data shard FILE OUT/`
(timed, its peak memory from getrusage) and run `python -m gc_fast.train --scheme crc
--stragglers 1` on it.

memory: for n = 4 and n = 8 workers, the trainer from the file (every rank parses it) and from
the folder (each worker reads its partitions), under mpiexec on this machine, or with --testbed
across the emulated cluster (one rank per host): each worker's peak resident memory and set-up
time (the trainer's worker_stats: peak_rss_bytes, setup_seconds).

large: the folder across the test bed's hosts (1 GiB each with t2.micro), then the whole file
on this machine (naive, one worker: the reference trajectory), and compares the trajectories;
also tries the whole file on the test bed, which must refuse in one line. Writes
bench/results/shard_scale_{memory,large}.json.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _mpi import ROOT, environment, mpiexec

sys.path.insert(0, str(ROOT))
from gc_fast.data import amazon_like  # noqa: E402

BLOCK_ROWS = 250_000
RESULTS = ROOT / "bench" / "results"


def write_file(path, rows):
    """An Amazon-shaped svmlight file of `rows` rows, written block by block."""
    from sklearn.datasets import dump_svmlight_file

    with open(path, "wb") as handle:
        for seed, start in enumerate(range(0, rows, BLOCK_ROWS)):
            block = amazon_like(n_train=min(BLOCK_ROWS, rows - start), n_test=0, seed=seed)
            dump_svmlight_file(block.X_train, block.y_train, handle, zero_based=False)


def shard(path, out):
    """Run the shard command; (seconds, peak resident bytes of the command)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gc_fast.data", "shard", str(path), str(out)],
                   check=True, env=environment())
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return time.perf_counter() - started, peak


def trainer(dataset, n_workers, out, args, extra=(), testbed=None, check=True):
    """The trainer on `dataset`, on this machine or across the test bed; its --out record."""
    command = [sys.executable, "-m", "gc_fast.train", "--dataset", str(dataset), "--quiet",
               "--scheme", "crc", "--stragglers", "1", "--iterations", str(args.iterations),
               "--eval-every", str(args.iterations), "--out", str(out), *extra]
    if testbed is None:
        command = [mpiexec(), "-n", str(n_workers + 1), *command]
    else:
        command = [sys.executable, "-m", "gc_fast.testbed", "--hosts", str(n_workers + 1),
                   "--profile", testbed, "--", *command]
    result = subprocess.run(command, capture_output=True, text=True,
                            env=environment())
    if check and result.returncode:
        raise SystemExit(f"trainer failed: {result.stderr.strip()[-2000:]}")
    return result


def worker_figures(out):
    stats = json.loads(Path(out).read_text())["summary"]["worker_stats"]
    return {"peak_rss_mb": [round(s["peak_rss_bytes"] / 2**20, 1) for s in stats],
            "setup_s": [round(s["setup_seconds"], 2) for s in stats]}


def memory(args, directory):
    path, folder = directory / "amazon.svm", directory / "amazon"
    write_file(path, args.rows)
    shard_seconds, shard_peak = shard(path, folder)
    rows = []
    for n in (4, 8):
        for name, dataset, extra in (("file", path, ["--test-fraction", "0"]),
                                     ("sharded", folder, [])):
            out = directory / f"{name}-{n}.json"
            trainer(dataset, n, out, args, extra, args.testbed)
            rows.append({"workers": n, "data": name, **worker_figures(out)})
            print(f"n={n} {name:8s} worker peak MB {np.mean(rows[-1]['peak_rss_mb']):8.1f}  "
                  f"set-up s {np.mean(rows[-1]['setup_s']):6.2f}", flush=True)
    return {"file_bytes": path.stat().st_size, "shard_seconds": round(shard_seconds, 1),
            "shard_peak_rss_mb": round(shard_peak / 2**20, 1), "testbed": args.testbed,
            "runs": rows}


def large(args, directory):
    path, folder = directory / "amazon.svm", directory / "amazon"
    write_file(path, args.rows)
    shard_seconds, shard_peak = shard(path, folder)
    print(f"file {path.stat().st_size / 2**30:.2f} GiB, sharded in {shard_seconds:.0f} s "
          f"(peak {shard_peak / 2**20:.0f} MB)", flush=True)
    testbed = args.testbed or "t2.micro"
    sharded_out = directory / "sharded.json"
    trainer(folder, 8, sharded_out, args, ["--save-trajectory", str(directory / "sharded.npy")],
            testbed)
    refused = trainer(path, 8, directory / "refused.json", args, ["--test-fraction", "0"],
                      testbed, check=False)
    reference_out = directory / "file.json"
    trainer(path, 1, reference_out, args, ["--test-fraction", "0", "--scheme", "naive",
                                           "--save-trajectory", str(directory / "file.npy")])
    sharded, reference = (np.load(directory / f"{name}.npy") for name in ("sharded", "file"))
    scale = np.maximum(np.linalg.norm(reference, axis=1), 1e-300)
    difference = float(np.max(np.linalg.norm(sharded - reference, axis=1) / scale))
    summary = json.loads(sharded_out.read_text())["summary"]
    result = {"file_bytes": path.stat().st_size, "shard_seconds": round(shard_seconds, 1),
              "shard_peak_rss_mb": round(shard_peak / 2**20, 1),
              "testbed": testbed, "sharded": worker_figures(sharded_out),
              "sharded_mean_iteration_ms": round(1e3 * summary["mean_iteration_s"], 1),
              "whole_file_on_testbed": {"exit": refused.returncode,
                                        "stderr": refused.stderr.strip()[-500:]},
              "max_relative_difference_to_file": difference}
    print(json.dumps(result, indent=1))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("memory", "large"))
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--testbed", default=None, metavar="PROFILE")
    parser.add_argument("--directory", type=Path, default=None,
                        help="where the file and the folder go (default a temporary one)")
    args = parser.parse_args()
    args.rows = args.rows or (500_000 if args.mode == "memory" else 6_000_000)
    with tempfile.TemporaryDirectory(dir=args.directory) as directory:
        result = (memory if args.mode == "memory" else large)(args, Path(directory))
    result.update(mode=args.mode, rows=args.rows, iterations=args.iterations,
                  date=time.strftime("%Y-%m-%d"),
                  command=" ".join(["python", "bench/shard_scale.py", *sys.argv[1:]]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"shard_scale_{args.mode}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
