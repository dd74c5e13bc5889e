"""Kernel throughput on an Amazon-shaped worker block, against the paper's SciPy code.

One worker of n = 10 under cyclic repetition (CRC) holds s + 1 partitions of
26,210 / 10 rows of binary one-hot data (241,915 columns, 44 non-zeros per row,
Zipf-skewed columns). Its per-iteration work is timed three ways:

- paper: what the paper's code does, X.dot(w) then X.T.dot(r) with SciPy on the
  full-width CSR matrix of the worker's rows (the baseline);
- each backend of gc_fast.kernels: gather w onto the worker's support, zero the
  local output and run coded_gradient on every partition block ("step"), and the
  coded_gradient calls alone ("kernel").

The master's decode_combine of 10 and 100 sparse messages is timed against
NumPy fancy indexing, np.add.at and the paper's dense `coef @ buffers`.
Times are the best of 15 rounds in which every method is timed in turn (so all see
the same machine load), reported per non-zero (ns/nnz).

    python bench/bench_kernels.py              # prints the tables
    python -m pytest bench/bench_kernels.py    # pytest-benchmark; ns/nnz and speedups in extra_info
"""
import os
import sys

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # a fair single-core comparison with the baseline
os.environ["NUMBA_NUM_THREADS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's gc_fast

import timeit  # noqa: E402
from functools import partial  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from gc_fast import kernels  # noqa: E402
from gc_fast.data import amazon_like, partition_bounds  # noqa: E402

N_WORKERS = 10
STRAGGLER_COUNTS = (1, 3)
COMPILED = ("cython", "numba")


def _best_seconds(funcs, rounds=15, round_seconds=0.01):
    """Best time of one call of each function, timed in turns so that all see the same machine load."""
    timers = {}
    for name, func in funcs.items():
        func()  # warm up: JIT compile, page in, fill caches
        number, seconds = timeit.Timer(func).autorange()
        timers[name] = (timeit.Timer(func), max(1, round(number * round_seconds / seconds)))
    best = dict.fromkeys(funcs, float("inf"))
    for _ in range(rounds):
        for name, (timer, number) in timers.items():
            best[name] = min(best[name], timer.timeit(number) / number)
    return best


class WorkerBlock:
    """Worker 0's CRC rows (partitions 0..s), laid out both ways: paper (full width) and gc_fast."""

    def __init__(self, X, y, n_stragglers, seed=0):
        rng = np.random.default_rng(seed)
        bounds = partition_bounds(X.shape[0], N_WORKERS)
        partitions = range(n_stragglers + 1)
        coefficients = rng.standard_normal(len(partitions))  # B[worker, j]: any non-zeros time the same
        slices = [X[bounds[j]:bounds[j + 1]] for j in partitions]
        self.w = rng.normal(0.0, 0.1, X.shape[1])

        self.X = sp.vstack(slices, format="csr")
        self.y = np.concatenate([y[bounds[j]:bounds[j + 1]] for j in partitions])
        self.row_weight = np.concatenate([np.full(part.shape[0], c) for part, c in zip(slices, coefficients, strict=True)])
        self.nnz = self.X.nnz

        self.support = np.unique(self.X.indices).astype(np.int64)
        self.blocks = [
            (
                part.indptr.astype(np.int64),
                np.searchsorted(self.support, part.indices).astype(np.int32),
                y[bounds[j]:bounds[j + 1]].copy(),
                np.full(part.shape[0], c),
            )
            for j, part, c in zip(partitions, slices, coefficients, strict=True)
        ]
        self.w_local = np.empty(len(self.support))
        self.out = np.empty(len(self.support))

    def paper(self):
        """The paper's worker: full-width SciPy products, a new gradient vector each call."""
        X, y = self.X, self.y
        return -X.T.dot(self.row_weight * y / (np.exp(X.dot(self.w) * y) + 1.0))

    def kernel(self, backend):
        """The coded_gradient calls alone, on an already gathered model."""
        for indptr, indices, y, row_weight in self.blocks:
            kernels.coded_gradient(indptr, indices, None, y, row_weight, self.w_local, self.out,
                                   backend=backend)

    def step(self, backend):
        """A worker iteration: gather the model, zero the message, accumulate every block."""
        kernels.gather(self.w, self.support, self.w_local, backend=backend)
        self.out.fill(0.0)
        self.kernel(backend)


class DecodeProblem:
    """The master's decoding of n CRC messages (s = 1) on the full 241,915-long gradient."""

    def __init__(self, X, n_workers, seed=0):
        rng = np.random.default_rng(seed)
        bounds = partition_bounds(X.shape[0], n_workers)
        supports = []
        for worker in range(n_workers):
            rows = [X[bounds[j]:bounds[j + 1]] for j in (worker, (worker + 1) % n_workers)]
            supports.append(np.unique(np.concatenate([part.indices for part in rows])).astype(np.int64))
        self.ptr = np.concatenate([[0], np.cumsum([len(s) for s in supports])]).astype(np.int64)
        self.idx = np.concatenate(supports)
        self.values = rng.standard_normal(len(self.idx))
        self.coef = rng.standard_normal(n_workers)
        self.coef[rng.integers(n_workers)] = 0.0  # one straggler
        self.entries = int(sum(len(s) for s, c in zip(supports, self.coef, strict=True) if c != 0.0))
        self.out = np.zeros(X.shape[1])
        self.dense = np.zeros((n_workers, X.shape[1]))  # the paper's full-width message buffers
        for i, support in enumerate(supports):
            self.dense[i, support] = self.values[self.ptr[i]:self.ptr[i + 1]]

    def paper(self):
        return self.coef @ self.dense

    def fancy_index(self):
        out, ptr = self.out, self.ptr
        for i in np.flatnonzero(self.coef):
            out[self.idx[ptr[i]:ptr[i + 1]]] += self.coef[i] * self.values[ptr[i]:ptr[i + 1]]

    def add_at(self):
        out, ptr = self.out, self.ptr
        for i in np.flatnonzero(self.coef):
            np.add.at(out, self.idx[ptr[i]:ptr[i + 1]], self.coef[i] * self.values[ptr[i]:ptr[i + 1]])

    def kernel(self, backend):
        kernels.decode_combine(self.out, self.ptr, self.idx, self.coef, self.values, backend=backend)


def _amazon():
    data = amazon_like(n_test=0)
    return data.X_train, data.y_train


def coded_gradient_table(X, y):
    """Rows of (s, method, nnz, seconds, speedup vs paper) for one worker's coded gradient."""
    rows = []
    for n_stragglers in STRAGGLER_COUNTS:
        block = WorkerBlock(X, y, n_stragglers)
        funcs = {"paper scipy (full width)": block.paper}
        funcs.update({f"{backend} step": partial(block.step, backend) for backend in kernels.BACKENDS})
        funcs.update({f"{backend} kernel only": partial(block.kernel, backend) for backend in COMPILED})
        best = _best_seconds(funcs)
        paper = best["paper scipy (full width)"]
        rows += [(n_stragglers, name, block.nnz, seconds, paper / seconds) for name, seconds in best.items()]
    return rows


def decode_table(X):
    """Rows of (n, method, entries, seconds, speedup vs paper) for the master's decoding."""
    rows = []
    for n_messages in (10, 100):
        problem = DecodeProblem(X, n_messages)
        funcs = {"paper dense coef @ buffers": problem.paper, "numpy fancy index": problem.fancy_index,
                 "numpy add.at": problem.add_at}
        funcs.update({backend: partial(problem.kernel, backend) for backend in COMPILED})
        best = _best_seconds(funcs)
        paper = best["paper dense coef @ buffers"]
        rows += [(n_messages, name, problem.entries, seconds, paper / seconds) for name, seconds in best.items()]
    return rows


def _print_table(title, key, rows):
    print(f"\n{title}\n{key:>4}  {'method':<28}{'nnz':>9}{'us':>10}{'ns/nnz':>9}{'speedup':>9}")
    for k, name, nnz, seconds, speedup in rows:
        print(f"{k:>4}  {name:<28}{nnz:>9}{seconds * 1e6:>10.1f}{seconds * 1e9 / nnz:>9.2f}{speedup:>8.2f}x")


# ---- pytest-benchmark -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def amazon():
    return _amazon()


@pytest.fixture(scope="module", params=STRAGGLER_COUNTS, ids=lambda s: f"s={s}")
def worker_block(request, amazon):
    block = WorkerBlock(*amazon, request.param)
    block.paper_seconds = _best_seconds({"paper": block.paper}, rounds=60)["paper"]  # ratios' baseline
    return block


def _record(benchmark, nnz, baseline_seconds):
    """Put ns/nnz and the speedup over the baseline into the benchmark's extra_info."""
    if benchmark.stats is None:  # --benchmark-disable
        return
    seconds = benchmark.stats.stats.min
    benchmark.extra_info["ns_per_nnz"] = round(seconds * 1e9 / nnz, 3)
    benchmark.extra_info["speedup_vs_paper"] = round(baseline_seconds / seconds, 2)


def test_coded_gradient_paper(benchmark, worker_block):
    benchmark(worker_block.paper)
    _record(benchmark, worker_block.nnz, worker_block.paper_seconds)


@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_coded_gradient_step(benchmark, worker_block, backend):
    worker_block.step(backend)  # warm up (JIT compile)
    benchmark(worker_block.step, backend)
    _record(benchmark, worker_block.nnz, worker_block.paper_seconds)


@pytest.mark.parametrize("backend", COMPILED)
def test_coded_gradient_kernel(benchmark, worker_block, backend):
    worker_block.step(backend)  # warm up (JIT compile) and gather the model
    benchmark(worker_block.kernel, backend)
    _record(benchmark, worker_block.nnz, worker_block.paper_seconds)


@pytest.fixture(scope="module", params=(10, 100), ids=lambda n: f"messages={n}")
def decode_problem(request, amazon):
    problem = DecodeProblem(amazon[0], request.param)
    problem.paper_seconds = _best_seconds({"paper": problem.paper}, rounds=60)["paper"]
    return problem


@pytest.mark.parametrize("method", ("paper", "fancy_index", "add_at"))
def test_decode_combine_numpy(benchmark, decode_problem, method):
    benchmark(getattr(decode_problem, method))
    _record(benchmark, decode_problem.entries, decode_problem.paper_seconds)


@pytest.mark.parametrize("backend", COMPILED)
def test_decode_combine(benchmark, decode_problem, backend):
    decode_problem.kernel(backend)  # warm up (JIT compile)
    benchmark(decode_problem.kernel, backend)
    _record(benchmark, decode_problem.entries, decode_problem.paper_seconds)


if __name__ == "__main__":
    X, y = _amazon()
    print(f"Amazon-shaped data: {X.shape[0]} rows x {X.shape[1]} columns, {X.nnz / X.shape[0]:.1f} nnz/row; "
          f"n = {N_WORKERS} workers (CRC), one worker's coded gradient; best of 15 interleaved rounds")
    _print_table("coded gradient of one worker (speedup vs paper scipy)", "s", coded_gradient_table(X, y))
    _print_table("decode_combine, CRC s = 1, one zero coefficient (speedup vs dense coef @ buffers)",
                 "n", decode_table(X))
