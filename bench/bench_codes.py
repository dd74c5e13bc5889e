"""Numerical quality and decode speed of the gradient codes (gc_fast.codes).

Precision: CRC with the default construction ("cyclic-mds") and the paper's
("random"; seed 0 and the median over seeds 0-8 of every column) at
(n, s) = (12, 3), (50, 5), (100, 10), over every set of s stragglers (12, 3)
or 2,000 sampled ones (same sets for every construction):

- cond: condition number of B restricted to the arrived rows (worst, 99th
  percentile, median);
- refused: sets whose decode vector misses decode_tolerance (the decoder then
  reports "not decodable yet"; every other set decodes within it);
- f64 / f32 error: worst relative error |a @ M - sum_j g_j| / |sum_j g_j| of the
  decoded gradient over the decoded sets, where M = B @ G holds the messages
  of random partition gradients G (n x 1000, standard normal) rounded to
  float64 or float32.

For comparison, "centred block (g=1)" is the cyclic-MDS code with the plain
block of roots next to -1 (multiplier 1), not selectable through make_code
(nan: even the full set misses decode_tolerance).

Speed: time to get a decode vector for FRC and CRC at n = 10, 100, 1000: cold
(cache disabled, a new straggler set every call) and cached (the same set
again), and the time to build the default CRC code.

    python bench/bench_codes.py              # prints the tables
    python -m pytest bench/bench_codes.py    # pytest-benchmark; precision numbers in extra_info
"""
import os
import sys

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # single-core timings, as in bench_kernels.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's gc_fast

import itertools  # noqa: E402
import timeit  # noqa: E402
from math import comb  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gc_fast import codes, constructions  # noqa: E402

PRECISION_SIZES = ((12, 3), (50, 5), (100, 10))
N_PATTERNS = 2000
GRADIENT_DIM = 1000
RANDOM_SEEDS = range(9)
SPEED_SIZES = ((10, 1), (100, 9), (1000, 9))


def straggler_sets(n, s, n_samples=N_PATTERNS, seed=0):
    """Every s-subset when there are at most n_samples, else n_samples random ones."""
    if comb(n, s) <= n_samples:
        return np.array(list(itertools.combinations(range(n), s)), dtype=np.int64).reshape(-1, s)
    keys = np.random.default_rng(seed).random((n_samples, n))
    return np.sort(np.argpartition(keys, s, axis=1)[:, :s], axis=1)


def centred_block_code(n, s):
    """The cyclic-MDS code with multiplier g = 1 (the roots next to -1): a comparison point."""
    twist = 0 if (n - s) % 2 else 1
    zeros = (constructions.block_starts(n, s, twist, 1)[-1] + np.arange(s)) % n
    design = constructions.CyclicDesign(n, s, twist, 1, zeros,
                                        constructions.projected_ones(zeros, n, twist))
    return codes.CyclicRepetitionCode(n, s, n, design=design)


def precision(code, stragglers, gradients):
    """cond (worst, median), refused count and worst decoded-gradient errors (f64, f32)."""
    n = code.n_workers
    arrived = np.array([np.delete(np.arange(n), row) for row in stragglers])
    conditions = []
    for start in range(0, len(arrived), 250):
        singular = np.linalg.svd(code.B[arrived[start:start + 250]], compute_uv=False)
        conditions.append(singular[:, 0] / singular[:, -1])
    conditions = np.concatenate(conditions)
    exact = gradients.sum(axis=0)
    messages = {name: (code.B @ gradients).astype(dtype).astype(np.float64)
                for name, dtype in (("f64", np.float64), ("f32", np.float32))}
    errors = {"f64": 0.0, "f32": 0.0}
    refused = 0
    for rows in arrived:
        vector = code.decode(rows)
        if vector is None:
            refused += 1
            continue
        for name, values in messages.items():
            error = np.linalg.norm(vector @ values - exact) / np.linalg.norm(exact)
            errors[name] = max(errors[name], error)
    return {"cond_worst": float(conditions.max()), "cond_p99": float(np.quantile(conditions, 0.99)),
            "cond_median": float(np.median(conditions)),
            "refused": refused, "patterns": len(arrived), "err_f64": errors["f64"],
            "err_f32": errors["f32"]}


def precision_rows(n, s):
    """One table row per construction at (n, s)."""
    stragglers = straggler_sets(n, s)
    gradients = np.random.default_rng(1).standard_normal((n, GRADIENT_DIM))
    default = codes.make_code("crc", n, s)
    rows = [(f"cyclic-mds (g={default.multiplier}{', negacyclic' if default.negacyclic else ''})",
             precision(default, stragglers, gradients))]
    draws = [precision(codes.make_code("crc", n, s, construction="random", seed=seed),
                       stragglers, gradients) for seed in RANDOM_SEEDS]
    rows.append(("random, seed 0", draws[0]))
    rows.append((f"random, median of {len(draws)} seeds",
                 {key: float(np.median([draw[key] for draw in draws])) for key in draws[0]}))
    try:
        centred = precision(centred_block_code(n, s), stragglers, gradients)
    except RuntimeError:  # even the full set misses decode_tolerance
        centred = dict.fromkeys(rows[0][1], float("nan"))
    rows.append(("centred block (g=1)", centred))
    return rows


def _best_seconds(func, rounds=7):
    number, seconds = timeit.Timer(func).autorange()
    return min(timeit.Timer(func).repeat(rounds, number)) / number


class DecodeTiming:
    """A code and a stream of straggler sets to decode."""

    def __init__(self, scheme, n, s, cached):
        self.code = codes.make_code(scheme, n, s, cache_size=4096 if cached else 0)
        rng = np.random.default_rng(2)
        sets = [np.sort(rng.permutation(n)[s:]) for _ in range(1 if cached else 200)]
        self.sets = itertools.cycle(sets)
        if cached:
            self.code.decode(sets[0])

    def __call__(self):
        return self.code.decode(next(self.sets))


def speed_rows():
    rows = []
    for n, s in SPEED_SIZES:
        for scheme in ("frc", "crc"):
            cold = _best_seconds(DecodeTiming(scheme, n, s, cached=False), rounds=3)
            cached = _best_seconds(DecodeTiming(scheme, n, s, cached=True))
            rows.append((scheme, n, s, cold, cached))
    return rows


def main():
    print("Decoded-gradient precision, CRC (worst over the straggler sets; "
          f"{N_PATTERNS} sampled sets unless C(n, s) is smaller)")
    header = (f"{'n':>4} {'s':>3}  {'construction':<34} {'sets':>5} {'cond worst':>11} "
              f"{'cond p99':>9} {'cond median':>11} {'refused':>7} {'f64 error':>10} {'f32 error':>10}")
    print(header)
    for n, s in PRECISION_SIZES:
        for name, row in precision_rows(n, s):
            print(f"{n:>4} {s:>3}  {name:<34} {row['patterns']:>5.0f} {row['cond_worst']:>11.2e} "
                  f"{row['cond_p99']:>9.1e} {row['cond_median']:>11.2e} {row['refused']:>7.0f} "
                  f"{row['err_f64']:>10.1e} {row['err_f32']:>10.1e}")
    print()
    print("Decode-vector time (s stragglers; cold = new set, cache disabled; cached = same set)")
    print(f"{'scheme':<6} {'n':>5} {'s':>3} {'cold us':>10} {'cached us':>10}")
    for scheme, n, s, cold, cached in speed_rows():
        print(f"{scheme:<6} {n:>5} {s:>3} {cold * 1e6:>10.1f} {cached * 1e6:>10.2f}")
    for n, s in ((100, 10), (1000, 10)):
        seconds = _best_seconds(lambda n=n, s=s: codes.make_code("crc", n, s), rounds=1)
        print(f"building the default crc code at n={n}, s={s}: {seconds:.2f} s")


# ---- pytest-benchmark -------------------------------------------------------------------------

@pytest.mark.parametrize("n, s", PRECISION_SIZES)
def test_crc_precision(benchmark, n, s):
    rows = benchmark.pedantic(precision_rows, args=(n, s), rounds=1, iterations=1)
    for name, row in rows:
        benchmark.extra_info[name] = {key: float(value) for key, value in row.items()}


@pytest.mark.parametrize("n, s", SPEED_SIZES)
@pytest.mark.parametrize("scheme", ["frc", "crc"])
@pytest.mark.parametrize("cached", [False, True], ids=["cold", "cached"])
def test_decode_vector_time(benchmark, scheme, n, s, cached):
    benchmark(DecodeTiming(scheme, n, s, cached))


if __name__ == "__main__":
    main()
