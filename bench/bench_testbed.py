"""End to end on the emulated t2.micro cluster: the trainer against the paper-style script.

Both run across the same 9 emulated hosts (gc_fast.testbed, profile t2.micro: a 1-core master
on 1 Gbit/s, 8 workers at 12% of a core on 100 Mbit/s, 1 GiB each, TCP between hosts), on the
Amazon-shaped data (train and test rows, written as svmlight), for the cases of
bench/compare_paper.py: naive and CRC s = 1 without delay, CRC and FRC s = 3 with each worker
delayed 0.1 s with probability 0.25. The benchmark's time is the trainer's whole launch;
extra_info holds its mean time per iteration, the paper-style script's (run just before, in
the same session), speedup_vs_paper, the network bound of the case
(gc_fast.simulate.bound) and how far above it the run is, and the workers' CPU per iteration.
Needs root and network namespaces: skipped with the reason elsewhere. GC_BENCH_E2E_ITERATIONS
(default 30) sets the iterations.

    python -m pytest bench/bench_testbed.py
"""
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_paper  # noqa: E402

ITERATIONS = int(os.environ.get("GC_BENCH_E2E_ITERATIONS", "30"))
N_WORKERS = 8
CASES = compare_paper.CASES[:4]


@pytest.fixture(scope="module")
def bed():
    from gc_fast.testbed import Testbed, TestbedUnavailable

    try:
        with Testbed.from_profile("t2.micro", N_WORKERS + 1) as testbed:
            yield testbed
    except TestbedUnavailable as error:
        pytest.skip(f"no emulated cluster here: {error}")


@pytest.fixture(scope="module")
def amazon(tmp_path_factory):
    from gc_fast.data import amazon_like, dump_svmlight
    from gc_fast.simulate.calibrate import kernel_seconds_per_nnz

    path = tmp_path_factory.mktemp("testbed") / "amazon_like.svm"
    data = amazon_like(seed=0)
    dump_svmlight(path, data)
    X = sp.vstack([data.X_train, data.X_test], format="csr")
    y = np.concatenate([data.y_train, data.y_test])
    return path, X, kernel_seconds_per_nnz(X, y)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-s{c[1]}" + ("-delay" if c[2] else ""))
def test_testbed_trainer_vs_paper_style(benchmark, bed, amazon, case):
    if not compare_paper.DEFAULT_BASELINE.exists():
        pytest.skip(f"no paper-style script at {compare_paper.DEFAULT_BASELINE}")
    path, X, nnz_seconds = amazon
    scheme, s, straggle = case
    with tempfile.TemporaryDirectory() as tmp:
        paper = compare_paper.run_baseline(compare_paper.DEFAULT_BASELINE, path, N_WORKERS,
                                           scheme, s, straggle, ITERATIONS, tmp, bed)
        summary = benchmark.pedantic(compare_paper.run_ours, args=(
            path, N_WORKERS, scheme, s, straggle, ITERATIONS, tmp, bed), rounds=1, iterations=1)
    bound = compare_paper.bound_of(bed, X, scheme, N_WORKERS, s, straggle, nnz_seconds)
    mean = summary["mean_iteration_s"]
    benchmark.extra_info.update(
        mean_iteration_ms=round(1e3 * mean, 2),
        paper_mean_iteration_ms=round(1e3 * paper, 2),
        speedup_vs_paper=round(paper / mean, 2),
        bound_ms=round(1e3 * bound.seconds, 2),
        of_bound=round(mean / bound.seconds, 3),
        worker_cpu_ms_per_iteration=round(
            1e3 * compare_paper.worker_cpu([summary], ITERATIONS), 2),
        shared_memory=summary["shared_memory"])
    assert summary["shared_memory"] is False
