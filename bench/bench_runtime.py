"""The master's decode-combine and whole trainer iterations, against the paper's way.

decode-combine: the trainer's GradientAssembler.combine (zero the gradient,
then one gc_fast.kernels.decode_combine pass over the arrived messages, each
only as long as its worker's support) against the paper's dense
`coef @ buffers` over n full-width float64 messages. Amazon-shaped data
(26,210 x 241,915, 44 non-zeros a row), the trainer's own supports and
placement, the decode vector the trainer would use when the arrivals come in
a random order with one worker missing. extra_info: message entries combined,
GB/s of message values read, speedup_vs_paper (minimum over rounds on both
sides, the paper's from its benchmark in the same session).

end to end: `mpiexec -n 5 python -m gc_fast.train --iterations 30` (a master
and 4 workers, CRC s = 1, the built-in Amazon-shaped data, no injected delay)
inside the benchmark; the benchmark's own time is the whole launch (start-up,
data, 30 iterations, shutdown), extra_info holds the trainer's mean and
median time per iteration from its --out JSON. The same for the paper-style
stand-in ../shared/baseline/paper_style.py (relative to the repository, when
it exists) on the same training rows written as svmlight
(gc_fast.data.dump_svmlight), same scheme, same iterations; the trainer's
extra_info then has speedup_vs_paper = paper mean / gc_fast mean per
iteration, both from this session. GC_BENCH_E2E_ITERATIONS overrides 30.

    python bench/bench_runtime.py                # the tables
    python -m pytest bench/bench_runtime.py      # pytest-benchmark
"""
import os
import sys

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # single-core timings, as the other benchmarks
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's gc_fast

import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import timeit  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from _mpi import environment, mpiexec  # noqa: E402

from gc_fast.assembly import GradientAssembler  # noqa: E402
from gc_fast.codes import make_code  # noqa: E402
from gc_fast.data import (  # noqa: E402
    Dataset,
    amazon_like,
    dump_svmlight,
    partition_bounds,
    worker_support,  # noqa: E402
)

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT.parent / "shared" / "baseline" / "paper_style.py"
COMBINE_CASES = (("crc", 8, 1), ("frc", 8, 1), ("crc", 12, 3))
E2E_ITERATIONS = int(os.environ.get("GC_BENCH_E2E_ITERATIONS", "30"))
E2E_RANKS = 5  # a master and 4 workers
E2E_SCHEME, E2E_STRAGGLERS = "crc", 1  # the trainer's defaults


def best_seconds(func, rounds=7, budget=0.5):
    """Minimum time of one call over `rounds` rounds of about budget / rounds seconds each."""
    func()
    number, seconds = timeit.Timer(func).autorange()
    number = max(1, round(number * (budget / rounds) / seconds))
    return min(timeit.Timer(func).repeat(rounds, number)) / number


# ---- decode-combine --------------------------------------------------------------------------

class CombineCase:
    """The master's combine for one (scheme, n, s), both ways, on the same messages."""

    def __init__(self, X, scheme, n, s, seed=0):
        rng = np.random.default_rng(seed)
        self.label = f"{scheme} n={n} s={s}"
        code = make_code(scheme, n, s)
        bounds = partition_bounds(X.shape[0], code.n_partitions)
        supports = [worker_support(X, bounds, code.partitions_of(w)) for w in range(n)]
        self.assembler = GradientAssembler(code, supports, X.shape[1])
        self.assembler.values[:] = rng.standard_normal(len(self.assembler.values))
        self.assembler.start()
        order = rng.permutation(code.n_messages)[:-1]  # arrivals in random order, one never comes
        for message in order:
            if self.assembler.add(int(message)):
                break
        else:
            raise RuntimeError(f"{self.label}: no decodable prefix")
        self.coef = np.array(self.assembler.decode_vector)
        self.out = np.zeros(X.shape[1])
        self.dense = np.zeros((code.n_messages, X.shape[1]))  # the paper's full-width buffers
        for m in range(code.n_messages):
            self.dense[m, supports[code.message_worker[m]]] = self.assembler.message_view(m)
        self.entries = int(sum(len(supports[code.message_worker[m]]) for m in np.flatnonzero(self.coef)))
        self.paper_seconds = None  # filled by the paper's benchmark (minimum over its rounds)
        self.ours()
        assert np.allclose(self.out, self.paper(), rtol=1e-12, atol=1e-12)

    def ours(self):
        return self.assembler.combine(self.out)

    def paper(self):
        return self.coef @ self.dense


@pytest.fixture(scope="module")
def amazon_X():
    return amazon_like(n_test=0).X_train


@pytest.fixture(scope="module", params=COMBINE_CASES, ids=lambda c: f"{c[0]}-n={c[1]}-s={c[2]}")
def combine_case(request, amazon_X):
    return CombineCase(amazon_X, *request.param)


@pytest.mark.parametrize("method", ("paper", "ours"))
def test_decode_combine_throughput(benchmark, combine_case, method):
    benchmark.group = f"decode-combine {combine_case.label}"
    benchmark(getattr(combine_case, method))
    benchmark.extra_info["message_entries"] = combine_case.entries
    if benchmark.stats is not None:
        seconds = benchmark.stats.stats.min
        if method == "paper":
            combine_case.paper_seconds = seconds
        elif combine_case.paper_seconds is None:  # selected alone: time the baseline now
            combine_case.paper_seconds = best_seconds(combine_case.paper)
        benchmark.extra_info["us_per_combine"] = round(seconds * 1e6, 2)
        benchmark.extra_info["gb_per_s"] = round(8 * combine_case.entries / seconds / 1e9, 3)
        benchmark.extra_info["speedup_vs_paper"] = round(combine_case.paper_seconds / seconds, 2)


# ---- end to end ------------------------------------------------------------------------------





def _run(command, cwd):
    result = subprocess.run(command, cwd=cwd, env=environment(), capture_output=True, text=True,
                            timeout=600)
    if result.returncode:
        raise RuntimeError(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-2000:]}")
    return result.stdout


def run_trainer(directory, iterations=E2E_ITERATIONS):
    """The trainer's mean and median seconds per iteration (its --out JSON) and the launch's wall time."""
    out = Path(directory) / "trainer.json"
    command = [mpiexec(), "-n", str(E2E_RANKS), sys.executable, "-m", "gc_fast.train",
               "--scheme", E2E_SCHEME, "--stragglers", str(E2E_STRAGGLERS),
               "--iterations", str(iterations), "--eval-every", str(iterations),
               "--quiet", "--out", str(out)]
    started = time.perf_counter()
    _run(command, directory)
    wall = time.perf_counter() - started
    summary = json.loads(out.read_text())["summary"]
    return {"mean_iteration_s": summary["mean_iteration_s"], "median_iteration_s": summary["median_iteration_s"],
            "wall_s": wall}


def baseline_data(directory):
    """The trainer's built-in training rows (amazon_like, seed 0) as svmlight, in the same order."""
    path = Path(directory) / "amazon_like_train.svm"
    if not path.exists():
        data = amazon_like(seed=0)
        dump_svmlight(path, Dataset(data.X_train, data.y_train, data.X_train[:0], data.y_train[:0], data.name))
    return path


def run_paper_style(directory, iterations=E2E_ITERATIONS):
    """The paper-style script's mean and median seconds per iteration and the launch's wall time."""
    command = [mpiexec(), "-n", str(E2E_RANKS), sys.executable, str(BASELINE), str(baseline_data(directory)),
               "--scheme", E2E_SCHEME, "--s", str(E2E_STRAGGLERS), "--iters", str(iterations)]
    started = time.perf_counter()
    line = _run(command, directory)
    wall = time.perf_counter() - started
    mean = re.search(r"mean_iter_s=([0-9.eE+-]+)", line)
    median = re.search(r"median_iter_s=([0-9.eE+-]+)", line)
    if mean is None:
        raise RuntimeError(f"unexpected output of {BASELINE}: {line!r}")
    return {"mean_iteration_s": float(mean.group(1)),
            "median_iteration_s": float(median.group(1)) if median else None, "wall_s": wall}


_E2E = {}  # results of this session, so the trainer's ratio uses the baseline run just before it


@pytest.fixture(scope="module")
def e2e_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


def _record_e2e(benchmark, result):
    benchmark.extra_info.update(
        iterations=E2E_ITERATIONS, ranks=E2E_RANKS, scheme=E2E_SCHEME, stragglers=E2E_STRAGGLERS,
        mean_iteration_ms=round(1e3 * result["mean_iteration_s"], 3),
        median_iteration_ms=None if result["median_iteration_s"] is None
        else round(1e3 * result["median_iteration_s"], 3),
        launch_wall_s=round(result["wall_s"], 2))


@pytest.mark.skipif(not BASELINE.exists(), reason=f"no paper-style baseline at {BASELINE}")
def test_e2e_paper_style(benchmark, e2e_dir):
    baseline_data(e2e_dir)  # written outside the timed launch
    benchmark.group = "end to end: mpiexec -n 5, 30 iterations"
    result = benchmark.pedantic(run_paper_style, args=(e2e_dir,), rounds=1, iterations=1)
    _E2E["paper"] = result
    _record_e2e(benchmark, result)
    benchmark.extra_info["speedup_vs_paper"] = 1.0


def test_e2e_trainer(benchmark, e2e_dir):
    benchmark.group = "end to end: mpiexec -n 5, 30 iterations"
    result = benchmark.pedantic(run_trainer, args=(e2e_dir,), rounds=1, iterations=1)
    _record_e2e(benchmark, result)
    if "paper" not in _E2E and BASELINE.exists():  # selected alone: measure the baseline now
        _E2E["paper"] = run_paper_style(e2e_dir)
    if "paper" in _E2E:
        paper = _E2E["paper"]
        benchmark.extra_info["paper_mean_iteration_ms"] = round(1e3 * paper["mean_iteration_s"], 3)
        benchmark.extra_info["speedup_vs_paper"] = round(paper["mean_iteration_s"] / result["mean_iteration_s"], 2)
        if paper["median_iteration_s"]:
            benchmark.extra_info["median_speedup_vs_paper"] = round(
                paper["median_iteration_s"] / result["median_iteration_s"], 2)


def main():
    X = amazon_like(n_test=0).X_train
    print("decode-combine, Amazon-shaped gradient (241,915 entries); minimum over rounds")
    print(f"{'case':<14}{'entries':>10}{'paper us':>11}{'gc_fast us':>12}{'GB/s':>7}{'speed-up':>10}")
    for scheme, n, s in COMBINE_CASES:
        case = CombineCase(X, scheme, n, s)
        paper, ours = best_seconds(case.paper), best_seconds(case.ours)
        print(f"{case.label:<14}{case.entries:>10}{paper * 1e6:>11.1f}{ours * 1e6:>12.1f}"
              f"{8 * case.entries / ours / 1e9:>7.2f}{paper / ours:>9.1f}x")
    with tempfile.TemporaryDirectory() as directory:
        print(f"\nend to end, mpiexec -n {E2E_RANKS}, {E2E_SCHEME} s={E2E_STRAGGLERS}, {E2E_ITERATIONS} iterations")
        ours = run_trainer(directory)
        print(f"gc_fast.train   {1e3 * ours['mean_iteration_s']:8.2f} ms/iteration "
              f"(median {1e3 * ours['median_iteration_s']:.2f}), launch {ours['wall_s']:.1f} s")
        if BASELINE.exists():
            paper = run_paper_style(directory)
            print(f"paper_style.py  {1e3 * paper['mean_iteration_s']:8.2f} ms/iteration "
                  f"(median {1e3 * paper['median_iteration_s']:.2f}), launch {paper['wall_s']:.1f} s")
            print(f"speed-up (mean per iteration): {paper['mean_iteration_s'] / ours['mean_iteration_s']:.1f}x")


if __name__ == "__main__":
    main()
