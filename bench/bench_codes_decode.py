"""Decode-vector time of FRC and CRC at n = 10, 100, 1000 (s = 1), against the paper's way.

For an arrived set of n - s workers (one straggler, drawn at random) the
master needs the decode vector a (zero outside the set, a @ B = 1):

- cached: gc_fast.codes' decoder asked for the same set again (its LRU cache,
  default 4096 sets) - the steady state when the same few workers straggle;
- cold: cache disabled (make_code(..., cache_size=0)) and a different set on
  every call, cycling through 200 sets - the worst case, every set new;
- paper: what the paper's master does every iteration. CRC: least squares
  np.linalg.lstsq(B[arrived].T, ones) on the arrived rows (an (n - s) x n
  problem). FRC: walk the arrivals in order and take the first worker of
  every group (0/1 coefficients, no solve).

extra_info: us_per_decode, speedup_vs_paper (paper time / this time, both the
minimum over the rounds of this session's benchmarks; a baseline not
benchmarked in this session, e.g. under -k, is timed on the spot) and for
cached, speedup_vs_cold. CRC at n = 1000 builds in well under a second (s = 1), so
the full grid runs.

    python bench/bench_codes_decode.py               # the table
    python -m pytest bench/bench_codes_decode.py     # pytest-benchmark
"""
import os
import sys

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # single-core timings, as the other benchmarks
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's gc_fast

import itertools  # noqa: E402
import time  # noqa: E402
import timeit  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gc_fast import codes  # noqa: E402

SIZES = (10, 100, 1000)
N_STRAGGLERS = 1
SCHEMES = ("frc", "crc")
N_SETS = 200


def arrival_orders(n, s, count, seed=0):
    """`count` arrival orders of n - s workers (random stragglers, random order)."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(n)[s:] for _ in range(count)]


class PaperDecoder:
    """The paper's per-iteration decoding, written from its description."""

    def __init__(self, code):
        self.scheme = code.scheme
        self.B = code.B
        self.n = code.n_workers
        self.s = code.n_stragglers
        self.ones = np.ones(code.n_partitions)
        self.group_size = self.s + 1
        self.n_groups = self.n // self.group_size

    def __call__(self, order):
        coef = np.zeros(self.n)
        if self.scheme == "frc":
            left = set(range(self.n_groups))
            for worker in order:
                group = worker // self.group_size
                if group in left:
                    left.discard(group)
                    coef[worker] = 1.0
                    if not left:
                        break
        else:
            arrived = np.sort(order)
            coef[arrived] = np.linalg.lstsq(self.B[arrived].T, self.ones, rcond=None)[0]
        return coef


class Cycle:
    """Call func on the next of a fixed list of arguments, round robin."""

    def __init__(self, func, items):
        self.func = func
        self.items = itertools.cycle(items)

    def __call__(self):
        return self.func(next(self.items))


class Case:
    """One (scheme, n): its code, arrival orders and the three ways of decoding."""

    def __init__(self, scheme, n, s=N_STRAGGLERS):
        self.scheme, self.n, self.s = scheme, n, s
        started = time.perf_counter()
        self.cached_code = codes.make_code(scheme, n, s)
        self.build_seconds = time.perf_counter() - started
        self.cold_code = codes.make_code(scheme, n, s, cache_size=0)
        self.orders = arrival_orders(n, s, N_SETS)
        self.paper_decoder = PaperDecoder(self.cold_code)
        self.measured = {}
        self._check()
        self.cached_code.decode(self.orders[0])  # fill the cache with the set `cached` asks for

    def _check(self):
        for order in self.orders[:5]:
            ours, paper = self.cold_code.decode(order), self.paper_decoder(order)
            assert ours is not None
            assert np.abs(paper @ self.cold_code.B - 1).max() < 1e-6
            assert np.abs(ours @ self.cold_code.B - 1).max() <= self.cold_code.decode_tolerance

    def seconds(self, method):
        """Minimum seconds per call of `method`: this session's benchmark of it, else measured now."""
        if method not in self.measured:
            self.measured[method] = best_seconds(self.func(method),
                                                 rounds=3 if self.n >= 1000 and method == "paper" else 5)
        return self.measured[method]

    def func(self, method):
        if method == "cached":
            return lambda: self.cached_code.decode(self.orders[0])
        if method == "cold":
            return Cycle(self.cold_code.decode, self.orders)
        return Cycle(self.paper_decoder, self.orders)


def best_seconds(func, rounds=5, budget=0.5):
    """Minimum time of one call over `rounds` rounds of about budget / rounds seconds each."""
    func()
    number, seconds = timeit.Timer(func).autorange()
    number = max(1, round(number * (budget / rounds) / seconds))
    return min(timeit.Timer(func).repeat(rounds, number)) / number


# ---- pytest-benchmark -------------------------------------------------------------------------

@pytest.fixture(scope="module", params=[(scheme, n) for n in SIZES for scheme in SCHEMES],
                ids=lambda p: f"{p[0]}-n={p[1]}")
def case(request):
    return Case(*request.param)


def _record(benchmark, case, method):
    benchmark.extra_info.update(scheme=case.scheme, n=case.n, s=case.s,
                                build_seconds=round(case.build_seconds, 4))
    if benchmark.stats is None:  # --benchmark-disable
        return
    seconds = case.measured[method] = benchmark.stats.stats.min
    benchmark.extra_info["us_per_decode"] = round(seconds * 1e6, 3)
    benchmark.extra_info["speedup_vs_paper"] = round(case.seconds("paper") / seconds, 2)
    if method == "cached":
        benchmark.extra_info["speedup_vs_cold"] = round(case.seconds("cold") / seconds, 2)


@pytest.mark.parametrize("method", ("paper", "cold", "cached"))
def test_decode_vector(benchmark, case, method):
    benchmark.group = f"decode vector {case.scheme} n={case.n} s={case.s}"
    if case.n >= 1000 and method == "paper" and case.scheme == "crc":
        benchmark.pedantic(case.func(method), rounds=3, iterations=1)  # ~0.4 s a call
    else:
        benchmark(case.func(method))
    _record(benchmark, case, method)


def main():
    print(f"Decode-vector time, s = {N_STRAGGLERS}, one random straggler; minimum over rounds")
    print(f"{'scheme':<6}{'n':>6}{'build s':>9}{'paper us':>12}{'cold us':>10}{'cached us':>11}"
          f"{'cold vs paper':>15}{'cached vs paper':>17}")
    for n in SIZES:
        for scheme in SCHEMES:
            case = Case(scheme, n)
            paper, cold, cached = (case.seconds(method) for method in ("paper", "cold", "cached"))
            print(f"{scheme:<6}{n:>6}{case.build_seconds:>9.3f}{paper * 1e6:>12.1f}{cold * 1e6:>10.1f}"
                  f"{cached * 1e6:>11.2f}{paper / cold:>14.1f}x{paper / cached:>16.0f}x")


if __name__ == "__main__":
    main()
