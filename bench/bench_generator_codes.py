"""Conditioning of the generator codes (gc_fast.generator_codes): which G, and where to refuse.

comm-efficient (split m = 1, 2, 3) and hetero-crc (m = 1, the last two workers
at half speed, default n_partitions) at n in {6, 8, 10, 12, 14, 20, 30, 40},
s in {1, 2, 3}; F ranges over every set of n - s arrived workers (n <= 14) or
10,000 sampled ones plus the runs of s consecutive workers and points, the
same sets for every candidate. Worst over F of:

- cond: condition number of G[F] (G with B's unit rows, B = G @ T);
- |A|: largest row norm of the decode matrix;
- kappa: decode condition max_{u,c} sum_i |A_ui| |B_ic| (the module's score);
- resid: max|A @ B - E| of the decoder's float64 arithmetic;
- err: relative error of the decoded gradient sum_j g_j (standard normal g_j,
  p = 999; messages and decoding in float64);
- refused: sets whose residual misses DECODE_TOLERANCE (1e-9);
- checked (default only): the kappa the construction measured on its own
  check sample (every set, or 2,000 and the runs), what refusal is based on.

Candidates (phi = the functionals fixed to e_u, "the last m coordinates"):

- gauss0: a standard-normal G (seed 0), phi its last m coordinates;
- gauss: design="gaussian", the best of seeds 0-3 and two functionals;
- vander: monomials x^0..x^(r-1) on n Chebyshev points, phi the top powers;
- cheb: design="chebyshev" (Chebyshev basis, phi the lowest or top degrees);
- four-top: rows [1, cos t, sin t, cos 2t, ...] on t_i = 2 pi i / n (half-integer
  frequencies when r is even, so every r rows are invertible), phi the top ones;
- four-low: the same code, phi the lowest frequencies;
- fourier: design="fourier" (point orders g i mod n and layout orders, functionals);
- auto: the default (the fourier, gauss and cheb candidates).

MAX_CONDITION comes from the ratios printed last: resid / (eps kappa) and
err / (eps kappa) over every candidate and set measured.

    python bench/bench_generator_codes.py            # tables + bench/results/generator_codes.json
    python bench/bench_generator_codes.py --quick    # n <= 20, 2,000 sampled sets
    python -m pytest bench/bench_generator_codes.py  # pytest-benchmark: construction time
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's gc_fast

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gc_fast import generator_codes as gen  # noqa: E402
from gc_fast.codes import DECODE_TOLERANCE  # noqa: E402

SIZES = (6, 8, 10, 12, 14, 20, 30, 40)
STRAGGLERS = (1, 2, 3)
SPLITS = (1, 2, 3)
EXHAUSTIVE_UP_TO = 14
N_SAMPLED = 10_000
N_FEATURES = 999
EPS = np.finfo(np.float64).eps
CANDIDATES = ("gauss0", "gauss", "vander", "cheb", "four-top", "four-low", "fourier", "auto")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "generator_codes.json")


def layout(kind, n, s, m):
    """(holder sets, multiplicity, orders) of comm-efficient or hetero-crc (2 half-speed workers)."""
    if kind == "comm-efficient":
        return gen._comm_layout(n, s, m)
    speeds = np.ones(n)
    speeds[-2:] = 0.5
    return gen._hetero_layout(n, s, speeds, gen.default_partitions(n, s, speeds))[2]


def candidate(name, n, s, m, sets, counts, orders):
    """(_Design of candidate `name` or None when singular, its construction-time condition)."""
    r = n - s
    try:
        if name == "gauss0":
            space = gen._gaussian_space(n, r, m, 0)
            return gen._Design(space, "last", space.functionals["last"], sets, counts, m), None
        if name == "vander":
            x = np.cos(np.pi * (2 * np.arange(n) + 1) / (2 * n))
            space = gen._generator_space("vandermonde", np.vander(x, r, increasing=True), m)
            return gen._Design(space, "last", space.functionals["last"], sets, counts, m), None
        if name in ("four-top", "four-low"):
            space = gen._fourier_space(n, r, m, np.arange(n), "g=1")
            raw = space.functionals[name[len("four-"):]]
            return gen._Design(space, name[len("four-"):], raw, sets, counts, m), None
        design = {"gauss": "gaussian", "cheb": "chebyshev"}.get(name, name)
        return gen._select(n, s, m, sets, counts, orders, design=design)
    except np.linalg.LinAlgError:
        return None, None


def arrival_sets(n, s, design, n_sampled):
    """Straggler sets: all of them (n <= EXHAUSTIVE_UP_TO) or sampled plus structured runs."""
    limit = 10 ** 9 if n <= EXHAUSTIVE_UP_TO else n_sampled
    return gen._straggler_sets(n, s, limit, seed=7, orders=[np.arange(n)] + (
        [design.space.points] if design is not None else []))


def measure(design, stragglers, rng):
    """Worst cond, |A|, kappa, resid, err and the refused count over the straggler sets."""
    n, m = design.n, design.m
    G, _ = design.generator()
    arrived = np.array([np.setdiff1d(np.arange(n), row) for row in stragglers])
    conds = []
    for start in range(0, len(arrived), 500):
        singular = np.linalg.svd(G[arrived[start:start + 500]], compute_uv=False)
        conds.append(singular[:, 0] / singular[:, -1])
    pieces = rng.standard_normal((design.B.shape[1], -(-N_FEATURES // m)))
    messages = design.B @ pieces
    exact = design.E @ pieces
    norms, residuals, errors = [], [], []
    for row in stragglers:
        A = design.decode(np.asarray(row, dtype=np.int64))
        norms.append(np.linalg.norm(A, axis=1).max())
        residuals.append(np.abs(A @ design.B - design.E).max())
        errors.append(np.linalg.norm(A @ messages - exact) / np.linalg.norm(exact))
    with np.errstate(all="ignore"):
        kappa = np.nan_to_num(design.conditions(stragglers), nan=np.inf)
    residuals = np.array(residuals)
    return {"cond": float(np.concatenate(conds).max()), "norm": float(max(norms)),
            "kappa": float(kappa.max()), "resid": float(residuals.max()),
            "err": float(max(errors)), "refused": int((residuals > DECODE_TOLERANCE).sum()),
            "sets": len(stragglers),
            "resid_ratio": float((residuals / (EPS * kappa)).max()),
            "err_ratio": float((np.array(errors) / (EPS * kappa)).max())}


def rows(sizes=SIZES, n_sampled=N_SAMPLED):
    """Every (code, n, s, m, candidate) measurement."""
    out = []
    for kind, splits in (("comm-efficient", SPLITS), ("hetero-crc", (1,))):
        for n in sizes:
            for s in STRAGGLERS:
                for m in splits:
                    if s + m > n:
                        continue
                    sets, counts, orders = layout(kind, n, s, m)
                    common = arrival_sets(n, s, None, n_sampled)
                    for name in CANDIDATES:
                        started = time.perf_counter()
                        design, checked = candidate(name, n, s, m, sets, counts, orders)
                        built = time.perf_counter() - started
                        row = {"code": kind, "n": n, "s": s, "m": m, "candidate": name}
                        if design is None:
                            out.append({**row, "label": "singular"})
                            continue
                        stragglers = np.unique(np.concatenate(
                            [common, arrival_sets(n, s, design, 0)]), axis=0) \
                            if n > EXHAUSTIVE_UP_TO else common
                        out.append({**row, "label": design.label, "build_s": built,
                                    "checked_kappa": checked,
                                    **measure(design, stragglers, np.random.default_rng(1))})
                    print(f"  {kind} n={n} s={s} m={m} done", file=sys.stderr, flush=True)
    return out


def _fmt(value):
    return f"{value:8.1e}" if np.isfinite(value) else "     inf"


def report(results):
    print("Worst decode condition kappa = max_{u,c} sum_i |A_ui||B_ic| over the arrived sets "
          "(sing = construction singular; * = refused sets > 0)")
    print(f"{'code':<15}{'n':>3}{'s':>2}{'m':>2} " + "".join(f"{c:>10}" for c in CANDIDATES))
    keyed = {}
    for row in results:
        keyed.setdefault((row["code"], row["n"], row["s"], row["m"]), {})[row["candidate"]] = row
    for (code, n, s, m), by_name in keyed.items():
        cells = []
        for name in CANDIDATES:
            row = by_name[name]
            if row["label"] == "singular":
                cells.append(f"{'sing':>10}")
            else:
                cells.append(f"{_fmt(row['kappa'])}{'*' if row['refused'] else ' ':<2}")
        print(f"{code:<15}{n:>3}{s:>2}{m:>2} " + "".join(cells))
    print()
    print("The default (design='auto') in detail")
    print(f"{'code':<15}{'n':>3}{'s':>2}{'m':>2} {'sets':>6} {'cond G[F]':>9} {'|A|':>8} "
          f"{'kappa':>8} {'checked':>8} {'resid':>8} {'err':>8} {'refused':>7}  chosen")
    for (code, n, s, m), by_name in keyed.items():
        row = by_name["auto"]
        print(f"{code:<15}{n:>3}{s:>2}{m:>2} {row['sets']:>6} {_fmt(row['cond'])} "
              f"{_fmt(row['norm'])} {_fmt(row['kappa'])} {_fmt(row['checked_kappa'])} "
              f"{_fmt(row['resid'])} "
              f"{_fmt(row['err'])} {row['refused']:>7}  {row['label']}")
    measured = [row for row in results if row["label"] != "singular"]
    finite = [row for row in measured if np.isfinite(row["kappa"]) and not row["refused"]]
    print()
    print(f"over the {len(finite)} (code, n, s, m, candidate) without refusals: max resid / (eps kappa) = "
          f"{max(r['resid_ratio'] for r in finite):.2f}, max err / (eps kappa) = "
          f"{max(r['err_ratio'] for r in finite):.2f}; MAX_CONDITION = {gen.MAX_CONDITION:.0e}")
    beaten = [key for key, by_name in keyed.items() if by_name["auto"]["kappa"] > 1.01 * min(
        by_name[name].get("kappa", np.inf) for name in CANDIDATES[:-1])]
    chosen = {}
    for by_name in keyed.values():
        family = by_name["auto"]["label"].split()[0]
        chosen[family] = chosen.get(family, 0) + 1
    print(f"auto within 1% of the best candidate in {len(keyed) - len(beaten)} of {len(keyed)} "
          f"settings (beaten: {beaten or 'none'}); its choices: {chosen}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n <= 20, 2,000 sampled sets")
    args = parser.parse_args()
    sizes = tuple(n for n in SIZES if n <= 20) if args.quick else SIZES
    results = rows(sizes, 2000 if args.quick else N_SAMPLED)
    report(results)
    if not args.quick:
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "w") as handle:
            json.dump({"max_condition": gen.MAX_CONDITION, "rows": results}, handle, indent=1)
        print(f"saved {RESULTS}")


# ---- pytest-benchmark -------------------------------------------------------------------------

@pytest.mark.parametrize("n, s, m", [(20, 3, 3), (40, 3, 3), (100, 3, 2)])
def test_comm_efficient_construction(benchmark, n, s, m):
    code = benchmark.pedantic(gen.CommEfficientCode, args=(n, s, m), rounds=1, iterations=1)
    benchmark.extra_info.update(design=code.design, decode_condition=code.decode_condition)


@pytest.mark.parametrize("n, s", [(20, 3), (40, 3), (100, 3)])
def test_hetero_construction(benchmark, n, s):
    speeds = np.ones(n)
    speeds[-2:] = 0.5
    code = benchmark.pedantic(gen.HeteroCyclicCode, args=(n, s, speeds), rounds=1, iterations=1)
    benchmark.extra_info.update(design=code.design, decode_condition=code.decode_condition)


if __name__ == "__main__":
    main()
