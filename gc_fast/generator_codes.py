"""Exact gradient codes built from an MDS generator restricted to each partition's holders.

The construction (both codes). G is an n x r real matrix, r = n - s, every r
rows of which are invertible: an [n, r] MDS code C = col(G). Base column c of
the encoding matrix (a partition, or piece u of one) is held by the workers
H_c and not by Z_c, with |Z_c| = r - m. Its column t_c of T (r x columns)
lies in null(G[Z_c]) (dimension m) with its last m coordinates equal to e_u,
and B = G @ T, exactly 0 on Z_c. Any r arrived workers F decode: A = the last
m rows of inv(G[F]) gives A @ B[F] = E, E[u, c] = 1 iff c is a piece-u column.
Fewer arrivals may decode too (least squares on the arrived rows of B, then
the residual check against DECODE_TOLERANCE, as CRC does).

* ``HeteroCyclicCode`` ("hetero-crc", m = 1; Wang, Guo et al., ICDCS 2019):
  worker loads proportional to their speeds, worker i holding the cyclic range
  [L_{i-1}, L_i) mod k of the k partitions, L the cumulative loads.
* ``CommEfficientCode`` ("comm-efficient", m = split; Ye & Abbe, ICML 2018):
  worker i holds partitions i, ..., i + s + m - 1 (mod n) and sends one vector
  of length ceil(p / m) instead of p; its decoder is an (m, n) matrix.

Computation. The last m coordinates are linear functionals phi on C with
representers W (n x m, in C): phi(v) = W^T v. With an orthonormal basis N
(n x s) of C's orthogonal complement, the decode for the missing set M,
|M| <= s, is A^T = W + N X with N[M] X = -W[M] (s x s; for |M| = s exactly
the A above), as the CRC decoder does. Columns: b_c is supported on H_c and
orthogonal to N[H_c] (an (s + m) x s null space), scaled so W[H_c]^T b = e_u.
Rows of B are then scaled to unit norm (G with them), as CRC's are.

Designs (``design=``), i.e. C and phi; each candidate is scored by its worst
decode condition (below) on a fixed sample of s-straggler sets, the best kept:

* "fourier": real trigonometric polynomials on t_i = 2 pi (g i mod n) / n,
  frequencies 0, +-1, ..., +-(r-1)/2 (r odd, cyclic) or +-1/2, ..., +-(r-1)/2
  (r even, negacyclic): unisolvent on any r distinct points, so MDS for every
  n and r; candidates: multipliers g (up to 8) and, for hetero-crc, workers
  at consecutive points in the order of their ranges, times functionals (the
  lowest frequencies, their half-integer or projected versions, the top ones).
* "gaussian": seeded Gaussian draws (seeds 0-3), phi the projected mean or the
  draw's last m coordinates.
* "chebyshev": polynomials of degree < r on the n Chebyshev points
  (Chebyshev basis), worker i at point i or in the layout's order; phi the
  lowest or the top degrees.
* "auto" (default): all of the above. In bench/bench_generator_codes.py (n <=
  40, s, m <= 3, every straggler set) it is never beaten by another candidate
  and picks Fourier for comm-efficient (kappa <= 210; Gaussian draws reach
  1e4-1e6), Fourier in range order for hetero-crc with s = 1 (kappa = 1 from
  n = 8) and mostly Chebyshev-top for s >= 2 (kappa <= 46, though cond(G[F])
  reaches 7e6 at n = 40: the decoder never solves with G[F]).

Decode condition of an arrived set: max over pieces u and columns c of
sum_i |A[u, i]| |B[i, c]| (rows of B of unit norm), the factor by which
rounding in B, in the messages and in A @ B is amplified (measured residuals:
bench/bench_generator_codes.py). A construction whose worst sampled condition
exceeds MAX_CONDITION is refused with a ValueError naming a smaller s or n
that passes; sets outside the sample are still checked at decode time.
"""
from collections import OrderedDict
from itertools import combinations
from math import ceil, comb, gcd

import numpy as np

from .codes import DECODE_TOLERANCE, DEFAULT_CACHE_SIZE, GradientCode, check_integer

__all__ = ["DESIGNS", "MAX_CONDITION", "DEFAULT_RESOLUTION", "HeteroCyclicCode",
           "CommEfficientCode", "heterogeneous_loads", "default_partitions"]

DESIGNS = ("auto", "fourier", "gaussian", "chebyshev")
# Refusal threshold on the worst sampled decode condition kappa. Measured by
# bench/bench_generator_codes.py (662 valid (code, n, s, m, design) settings, n <= 40,
# s, m <= 3, exhaustive or 10,000 sets each): the worst float64 residual max|A @ B - E|
# stays below 26 eps kappa_worst (below 225 eps kappa per set, at small kappa), decoded
# gradients within 70 eps kappa relative, and the first sets missing DECODE_TOLERANCE
# appear at kappa_worst = 1.3e6 (a Vandermonde design). 1e5 bounds the residual by
# 26 * 2.2e-16 * 1e5 = 6e-10 < 1e-9, a factor 13 below that onset (float32 messages
# would be ~1e-2 off there; the default designs stay below 210 at n <= 40, s, m <= 3).
MAX_CONDITION = 1e5
DEFAULT_RESOLUTION = 4  # default n_partitions: the slowest worker's ideal load >= 4 partitions
SELECT_SAMPLES = 256  # straggler sets that score each candidate design (plus structured runs)
CHECK_SAMPLES = 2000  # straggler sets that check the chosen one
MAX_MULTIPLIERS = 8
GAUSSIAN_SEEDS = range(4)
_SAMPLE_SEED = 20180302


class _Space:
    """One candidate MDS code: orthonormal bases of C (n x r) and of its complement (n x s).

    points: each worker's position for the structured straggler runs (contiguous
    positions are the worst-conditioned sets of the Fourier and Chebyshev codes).
    functionals: name -> raw n x m matrices whose projections onto C define phi.
    """

    def __init__(self, label, basis, parity, points, functionals):
        self.label, self.basis, self.parity, self.points = label, basis, parity, points
        self.functionals = functionals


def _trig_columns(points, n, twice_frequencies):
    """Orthonormal real Fourier columns cos / sin(f t) on t = 2 pi points / n, f = twice / 2."""
    columns = []
    for f2 in twice_frequencies:
        angle = np.pi * ((f2 * points) % (2 * n)) / n  # reduced exactly: accurate phases
        if f2 == 0 or f2 == n:
            columns.append(np.cos(angle) / np.sqrt(n))
        else:
            columns += [np.cos(angle) * np.sqrt(2.0 / n), np.sin(angle) * np.sqrt(2.0 / n)]
    return np.column_stack(columns) if columns else np.zeros((n, 0))


def _fourier_space(n, r, m, points, label):
    """The Fourier code with worker i at point points[i] (a permutation of range(n))."""
    basis = _trig_columns(points, n, range(r % 2 == 0, r, 2))
    parity = _trig_columns(points, n, range(r + 1, n + 1, 2))
    t = 2 * np.pi * points / n
    integer = [np.ones(n)] + [f(j * t) for j in range(1, m + 1) for f in (np.cos, np.sin)]
    half = [f((j + 0.5) * t) for j in range(m) for f in (np.cos, np.sin)]
    swapped = [f((j + 0.5) * t) for j in range(m) for f in (np.sin, np.cos)]
    functionals = {"low": integer[:m], "low-pair": integer[1:m + 1], "half": half[:m],
                   "half-sin": swapped[:m], "top": list(basis[:, r - m:].T)}
    return _Space(f"fourier {label}", basis, parity, np.argsort(points),
                  {k: np.column_stack(v) for k, v in functionals.items()})


def _generator_space(label, G, m, functionals=None):
    """The code col(G) of a given n x r generator, phi = G's last m coordinates ("last")."""
    n, r = G.shape
    q, upper = np.linalg.qr(G, mode="complete")
    last = q[:, :r] @ np.linalg.inv(upper[:r]).T[:, r - m:]  # rows r-m.. of pinv(G), transposed
    return _Space(label, q[:, :r], q[:, r:], np.arange(n), {**(functionals or {}), "last": last})


def _gaussian_space(n, r, m, seed):
    draw = np.random.default_rng(seed).standard_normal((n, r))
    return _generator_space(f"gaussian seed={seed}", draw, m,
                            {"low": np.vander(np.linspace(-1.0, 1.0, n), m, increasing=True)})


def _chebyshev_space(n, r, m, points=None, label=""):
    """Polynomials of degree < r on the n Chebyshev points, worker i at point points[i]."""
    points = np.arange(n) if points is None else points
    theta = np.pi * (2 * points + 1) / (2 * n)
    columns = np.cos(theta[:, None] * np.arange(n)[None, :]) * np.sqrt(2.0 / n)
    columns[:, 0] /= np.sqrt(2.0)  # discrete orthogonality on the Chebyshev points
    return _Space(f"chebyshev{label}", columns[:, :r], columns[:, r:], np.argsort(points),
                  {"low": columns[:, :m], "top": columns[:, r - m:r]})


def _multipliers(n, d):
    """Up to MAX_MULTIPLIERS point orders g (gcd(g, n) = 1, g <= n / 2): 1, then near n / j."""
    units = [g for g in range(1, n // 2 + 1) if gcd(g, n) == 1] or [1]
    if len(units) <= MAX_MULTIPLIERS:
        return units
    chosen = [1]
    for j in (d, d + 1, d - 1, d + 2, 2, 3, d + 3, d - 2, 4, 5, 6, 7, 8):
        if j >= 2:
            g = min(units, key=lambda u: (abs(u - n / j), u))
            for candidate in (g, min(pow(g, -1, n), n - pow(g, -1, n))):
                if candidate not in chosen and len(chosen) < MAX_MULTIPLIERS:
                    chosen.append(candidate)
    return chosen


def _spaces(n, r, m, design, orders):
    if design in ("auto", "fourier"):
        for g in _multipliers(n, n - r + m):
            yield _fourier_space(n, r, m, (g * np.arange(n)) % n, f"g={g}")
        for name, order in orders.items():
            yield _fourier_space(n, r, m, np.argsort(order, kind="stable"), name)
    if design in ("auto", "gaussian"):
        for seed in GAUSSIAN_SEEDS:
            yield _gaussian_space(n, r, m, seed)
    if design in ("auto", "chebyshev"):
        yield _chebyshev_space(n, r, m)
        for name, order in orders.items():
            yield _chebyshev_space(n, r, m, np.argsort(order, kind="stable"), f" {name}")


def _straggler_sets(n, s, limit, seed=_SAMPLE_SEED, orders=()):
    """All s-subsets of range(n) if at most `limit`, else `limit` random ones plus, for each
    order in `orders`, the n runs of s consecutive entries of it (cyclically)."""
    if comb(n, s) <= limit:
        return np.array(list(combinations(range(n), s)), dtype=np.int64).reshape(comb(n, s), s)
    keys = np.random.default_rng(seed).random((limit, n))
    sets = [np.argpartition(keys, s, axis=1)[:, :s]]
    for order in orders:
        sets.append(np.asarray(order)[(np.arange(n)[:, None] + np.arange(s)) % n])
    return np.unique(np.sort(np.concatenate(sets), axis=1), axis=0)


class _Design:
    """A code space with its functionals, laid out on the distinct holder sets of a code.

    holder_sets: (n_sets, s + m) workers holding each distinct base column group;
    multiplicity: how many partitions share each set (for the row norms). B (n x
    n_sets * m, unit rows) has column j * m + u for piece u of set j.
    """

    def __init__(self, space, name, raw, holder_sets, multiplicity, m):
        self.space, self.m = space, m
        self.label = f"{space.label} {name}"
        basis, parity = space.basis, space.parity
        n, r = basis.shape
        self.n, self.s, self.r = n, n - r, r
        # phi's representers in C (orthonormalised: phi is then W^T restricted to C)
        coordinates, upper = np.linalg.qr(basis.T @ raw)
        if np.abs(np.diag(upper)).min(initial=np.inf) < 1e-8 * np.sqrt(n):
            raise np.linalg.LinAlgError("functional degenerate on the code")
        self.W = basis @ coordinates
        self.holder_sets = holder_sets
        if self.s:
            null = np.linalg.svd(parity[holder_sets], full_matrices=True)[0][:, :, self.s:]
        else:
            null = np.broadcast_to(np.eye(m), (len(holder_sets), m, m))
        normal = np.transpose(self.W[holder_sets], (0, 2, 1)) @ null  # (sets, m, m)
        if np.linalg.cond(normal).max() > 1e12:
            raise np.linalg.LinAlgError("functional singular on a holder set")
        self.values = null @ np.linalg.inv(normal)  # (sets, s + m, m): W[H]^T b = I
        squares = (self.values ** 2).sum(axis=2) * np.asarray(multiplicity)[:, None]
        self.scale = np.sqrt(np.bincount(holder_sets.ravel(), weights=squares.ravel(),
                                         minlength=n))
        if not self.scale.min() > 0:
            raise np.linalg.LinAlgError("a worker's row of B vanishes")
        self.values /= self.scale[holder_sets][:, :, None]
        self.B = np.zeros((n, len(holder_sets) * m))
        for u in range(m):
            self.B[holder_sets, (np.arange(len(holder_sets)) * m + u)[:, None]] = \
                self.values[:, :, u]
        self.E = np.tile(np.eye(m), len(holder_sets))
        self.coordinates = coordinates

    def decode(self, missing):
        """A (m, n) for the missing workers, |missing| <= s: (W + N X)^T scaled, 0 on missing."""
        W, N = self.W, self.space.parity
        vector = W.copy()
        if len(missing) and self.s:
            vector += N @ np.linalg.lstsq(N[missing], -W[missing], rcond=None)[0]
        vector *= self.scale[:, None]
        vector[missing] = 0.0
        return np.ascontiguousarray(vector.T)

    def conditions(self, missing_sets):
        """Decode condition of each row of missing workers (each of size s)."""
        sets = np.asarray(missing_sets)
        W, N = self.W, self.space.parity
        vectors = np.broadcast_to(W, (len(sets),) + W.shape).copy()
        if self.s:
            try:
                vectors += N @ np.linalg.solve(N[sets], -W[sets])  # solved: (S, s, m)
            except np.linalg.LinAlgError:  # a singular set: not MDS in floating point
                return np.full(len(sets), np.inf)
        vectors *= self.scale[:, None]
        np.put_along_axis(vectors, sets[:, :, None], 0.0, axis=1)
        weights = np.abs(vectors)[:, self.holder_sets]  # (S, sets, s + m, m)
        amplification = np.swapaxes(weights, 2, 3) @ np.abs(self.values)  # (S, sets, m, m)
        return amplification.reshape(len(sets), -1).max(axis=1)

    def solve(self, mask):
        """Candidate A (m, n) for the arrived mask, or None (unchecked)."""
        missing = np.flatnonzero(~mask)
        if missing.size <= self.s:
            return self.decode(missing)
        if (mask[self.holder_sets].sum(axis=1) < self.m).any():
            return None
        arrived = np.flatnonzero(mask)
        A = np.zeros((self.m, self.n))
        A[:, arrived] = np.linalg.lstsq(self.B[arrived].T, self.E.T, rcond=None)[0].T
        return A

    def refine(self, A, mask):
        """Up to two steps of iterative refinement by least squares on the arrived rows."""
        arrived = np.flatnonzero(mask)
        rows = self.B[arrived].T
        A = A.copy()
        for _ in range(2):
            residual = self.E - A @ self.B
            if np.abs(residual).max() <= 0.1 * DECODE_TOLERANCE:
                break
            A[:, arrived] += np.linalg.lstsq(rows, residual.T, rcond=None)[0].T
        return A

    def generator(self):
        """(G, T on the distinct columns): B = G @ T, T's last m rows = E, rows of G scaled."""
        r, m = self.r, self.m
        full = np.linalg.qr(self.coordinates, mode="complete")[0]
        inverse = np.vstack([full[:, m:].T, self.coordinates.T])  # orthogonal: rows = coordinates
        G = (self.space.basis @ inverse.T) / self.scale[:, None]
        T = inverse @ (self.space.basis.T @ (self.B * self.scale[:, None]))
        T[r - m:] = self.E  # exactly, as defined (computed: within rounding)
        return G, T


def _candidates(n, s, m, holder_sets, multiplicity, design, orders):
    for space in _spaces(n, n - s, m, design, orders):
        for name, raw in space.functionals.items():
            try:
                yield _Design(space, name, raw, holder_sets, multiplicity, m)
            except np.linalg.LinAlgError:
                continue


def _select(n, s, m, holder_sets, multiplicity, orders=None, *, design="auto"):
    """(best candidate design or None, its worst decode condition on the check sample).

    orders: name -> worker order (extra Fourier point orders: workers at
    consecutive points in that order).
    """
    best, best_score = None, np.inf
    for candidate in _candidates(n, s, m, holder_sets, multiplicity, design, orders or {}):
        sets = _straggler_sets(n, s, SELECT_SAMPLES, orders=[np.arange(n), candidate.space.points])
        with np.errstate(all="ignore"):
            score = float(np.nan_to_num(candidate.conditions(sets), nan=np.inf).max())
        if score < best_score:
            best, best_score = candidate, score
    if best is None:
        return None, np.inf
    check = _straggler_sets(n, s, CHECK_SAMPLES, orders=[np.arange(n), best.space.points])
    with np.errstate(all="ignore"):
        return best, float(np.nan_to_num(best.conditions(check), nan=np.inf).max())


def _design_or_refuse(scheme, n, s, m, layout, design, what, retry):
    """The selected design and its condition, or a one-line ValueError naming smaller
    parameters that pass. layout: (holder_sets, multiplicity, orders); retry(n, s) gives
    the layout for other parameters."""
    chosen, condition = _select(n, s, m, *layout, design=design)
    if chosen is not None and condition <= MAX_CONDITION:
        return chosen, condition
    fewer = next((t for t in range(s - 1, -1, -1) if _passes(n, t, m, retry(n, t), design)),
                 None)
    passing = [] if fewer is None else [f"n_stragglers={fewer}"]
    low, high = min(n - 1, s + m), n - 1  # largest n (bisection) for the same s and m
    if low <= high and _passes(low, s, m, retry(low, s), design):
        while low < high:
            middle = (low + high + 1) // 2
            if _passes(middle, s, m, retry(middle, s), design):
                low = middle
            else:
                high = middle - 1
        passing.append(f"n_workers={low}")
    found = f"; {' or '.join(passing)} passes" if passing else ""
    raise ValueError(f"{scheme} with {what} (design {design!r}): worst sampled decode condition "
                     f"{condition:.1e} exceeds MAX_CONDITION = {MAX_CONDITION:.0e} (too "
                     f"ill-conditioned for decode_tolerance in float64){found}")


def _passes(n, s, m, layout, design):
    return _select(n, s, m, *layout, design=design)[1] <= MAX_CONDITION


def _check_design(design):
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {', '.join(DESIGNS)}, got {design!r}")


def _check_stragglers(n_workers, n_stragglers, split=1):
    n = check_integer("n_workers", n_workers, 1)
    s = check_integer("n_stragglers", n_stragglers, 0)
    if s + split > n:
        needs = "n_stragglers < n_workers" if split == 1 else "n_stragglers + split <= n_workers"
        raise ValueError(f"n_stragglers must be an integer in [0, {n - split}] ({needs} = {n}), "
                         f"got {s}")
    return n, s


def default_partitions(n_workers, n_stragglers, speeds):
    """Default k of HeteroCyclicCode: n q, q >= DEFAULT_RESOLUTION (4) the smallest integer
    giving the slowest worker an ideal load (s + 1) k c_min / sum(c) of at least 4
    partitions (q <= 64): rounding moves a load by less than one partition, so by less
    than 1/4 of the slowest worker's. Equal speeds: 4 n."""
    speeds = np.asarray(speeds, dtype=np.float64)
    q = DEFAULT_RESOLUTION * speeds.mean() / ((n_stragglers + 1) * speeds.min())
    return n_workers * int(min(64, max(DEFAULT_RESOLUTION, ceil(q - 1e-9))))


def heterogeneous_loads(speeds, n_stragglers, n_partitions):
    """Integer loads proportional to `speeds`, summing to (s + 1) k, each in [1, k].

    The proportional targets are clipped to [1, k] and the excess redistributed
    in proportion (targets clip(lambda c_i, 1, k), lambda by bisection), then
    rounded by largest remainder (ties to the lower index).

    Raises
    ------
    ValueError
        When no such loads exist: (s + 1) k < n or s + 1 > n.
    """
    speeds = np.asarray(speeds, dtype=np.float64)
    n, s, k = len(speeds), n_stragglers, n_partitions
    total = (s + 1) * k
    if total < n:
        raise ValueError(f"n_partitions must be >= n_workers / (n_stragglers + 1) = "
                         f"{ceil(n / (s + 1))} so every worker holds a partition, got {k}")
    if s + 1 > n:
        raise ValueError(f"n_stragglers must be < n_workers = {n}, got {s}")
    low, high = 0.0, float(k / speeds.min())
    for _ in range(200):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if np.clip(middle * speeds, 1, k).sum() < total else \
            (low, middle)
    target = np.clip(high * speeds, 1, k)
    target *= total / target.sum()  # exact total up to rounding; stays in [1, k] up to it
    loads = np.clip(np.floor(target + 1e-9), 1, k).astype(np.int64)
    remainder = target - loads
    deficit = int(total - loads.sum())
    if deficit > 0:  # largest remainders first, among loads that may grow
        order = np.argsort(np.where(loads < k, -remainder, np.inf), kind="stable")
        loads[order[:deficit]] += 1
    elif deficit < 0:  # rounding overshoot: smallest remainders first, among loads > 1
        order = np.argsort(np.where(loads > 1, remainder, np.inf), kind="stable")
        loads[order[:-deficit]] -= 1
    return loads


def _hetero_holders(loads, k):
    """(holder sets (k, s + 1), ranges): worker i holds [L_{i-1}, L_i) mod k."""
    starts = np.cumsum(loads) - loads
    workers = np.repeat(np.arange(len(loads)), loads)
    partitions = np.arange(loads.sum()) % k  # the ranges are consecutive: L_{i-1}, ..., L_i - 1
    order = np.lexsort((workers, partitions))  # each partition appears s + 1 times
    return workers[order].reshape(k, -1), starts % k


def _hetero_layout(n, s, speeds, k):
    """(loads, column -> distinct set, (holder sets, their counts, worker orders))."""
    loads = heterogeneous_loads(speeds, s, k)
    holders, starts = _hetero_holders(loads, k)
    sets, inverse, counts = np.unique(holders, axis=0, return_inverse=True, return_counts=True)
    middles = (starts + 0.5 * loads) % k
    orders = {"by start": np.lexsort((np.arange(n), starts)),
              "by middle": np.lexsort((np.arange(n), middles))}
    return loads, inverse.ravel(), (sets, counts, orders)


class HeteroCyclicCode(GradientCode):
    """Heterogeneity-aware CRC ("hetero-crc"; Wang, Guo et al., ICDCS 2019): exact, m = 1.

    Worker i holds l_i partitions, loads proportional to its speed with sum
    (s + 1) k, as the cyclic range [L_{i-1}, L_i) mod k (L the cumulative
    loads): every partition on exactly s + 1 distinct workers. One message per
    worker; B (n x k) from the module's construction, so any n - s messages
    decode. With equal speeds and k = n every worker holds s + 1 partitions,
    (s + 1) i, ..., (s + 1) i + s (mod n): CRC's layout with the workers
    relabelled when gcd(s + 1, n) = 1, FRC's groups when (s + 1) divides n.

    Parameters
    ----------
    n_workers, n_stragglers : int
        n and s, 0 <= s < n.
    speeds : array_like, optional
        n relative worker speeds > 0 (default equal).
    n_partitions : int, optional
        k >= n / (s + 1); default ``default_partitions`` (4 n for equal speeds).
    design : str
        One of DESIGNS (module docstring), default "auto".
    cache_size : int
        Decode-cache entries (0 disables it).

    Attributes: GradientCode's, plus speeds, loads, design (the chosen
    candidate), decode_condition (its worst sampled one), G (n x r) and T
    (r x k) with B = G @ T.
    """

    def __init__(self, n_workers, n_stragglers, speeds=None, n_partitions=None, *,
                 design="auto", cache_size=DEFAULT_CACHE_SIZE):
        n, s = _check_stragglers(n_workers, n_stragglers)
        _check_design(design)
        speeds = _check_speeds(n, speeds)
        k = default_partitions(n, s, speeds) if n_partitions is None else check_integer(
            "n_partitions", n_partitions, 1)
        loads, inverse, layout = _hetero_layout(n, s, speeds, k)

        def retry(n2, s2):
            sub = speeds[:n2]
            return _hetero_layout(n2, s2, sub, default_partitions(n2, s2, sub))[2]

        self._design, self.decode_condition = _design_or_refuse(
            "hetero-crc", n, s, 1, layout, design, f"n_workers={n}, n_stragglers={s}", retry)
        self.design = self._design.label
        self.speeds = speeds
        self.loads = loads
        self.loads.setflags(write=False)
        self._columns = inverse
        super().__init__("hetero-crc", n, s, self._design.B[:, inverse], np.arange(n),
                         cache_size=cache_size)

    @property
    def G(self):
        """n x r generator (rows scaled with B's): B = G @ T."""
        return self._design.generator()[0]

    @property
    def T(self):
        """r x k coordinates of B's columns; last row all ones."""
        return self._design.generator()[1][:, self._columns]

    def _solve(self, mask):
        A = self._design.solve(mask)
        return None if A is None else A[0]

    def _refine(self, vector, mask):
        return self._design.refine(vector[None, :], mask)[0]


def _check_speeds(n, speeds):
    if speeds is None:
        speeds = np.ones(n)
    try:
        speeds = np.array(speeds, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"speeds must be {n} positive finite numbers, got {speeds!r}") from None
    if speeds.shape != (n,) or not (np.isfinite(speeds) & (speeds > 0)).all():
        raise ValueError(f"speeds must be {n} positive finite numbers (one per worker), "
                         f"got {np.array2string(speeds, threshold=8)}")
    speeds.setflags(write=False)
    return speeds


class CommEfficientCode:
    """Communication-efficient gradient code ("comm-efficient"; Ye & Abbe, ICML 2018).

    Worker i holds d = s + m partitions i, ..., i + d - 1 (mod n), splits every
    partition gradient g_j into m coordinate pieces g_j^(u) (``piece_bounds``)
    and sends ONE vector of length ceil(p / m): sum_j sum_u B[i, j m + u]
    g_j^(u), pieces zero-padded to that length. Any n - s messages decode:
    ``decode`` returns A (m, n) with A @ B = E, and row u of A @ messages is
    sum_j g_j^(u) (``combine`` assembles the gradient).

    Not a GradientCode (its decode is a matrix) but the same surface: scheme,
    n_workers, n_stragglers, n_partitions (k), n_messages (n), split (m), exact,
    decode_tolerance, B (n, k m), message_worker, partitions_of, messages_of,
    coefficients, decode / decode_mask, is_decodable, residual, cache_info;
    plus design, decode_condition, G (n x r) and T (r x k m), B = G @ T.

    Parameters
    ----------
    n_workers, n_stragglers : int
        n and s >= 0.
    split : int
        m >= 1, with s + m <= n.
    n_partitions : int, optional
        A multiple of n (default n): every base partition becomes
        n_partitions / n consecutive ones with the same coefficients.
    design : str
        One of DESIGNS (module docstring), default "auto".
    cache_size : int
        Decode-cache entries (0 disables it).
    """

    exact = True
    decode_mask = GradientCode.decode_mask
    is_decodable = GradientCode.is_decodable
    cache_info = GradientCode.cache_info
    partitions_of = GradientCode.partitions_of
    messages_of = GradientCode.messages_of
    _arrived_mask = GradientCode._arrived_mask
    _check_worker = GradientCode._check_worker

    def __init__(self, n_workers, n_stragglers, split, n_partitions=None, *, design="auto",
                 cache_size=DEFAULT_CACHE_SIZE):
        n = check_integer("n_workers", n_workers, 1)
        m = check_integer("split", split, 1, f"an integer in [1, n_workers] = [1, {n}]")
        if m > n:
            raise ValueError(f"split must be an integer in [1, n_workers] = [1, {n}], got {m}")
        n, s = _check_stragglers(n, n_stragglers, m)
        _check_design(design)
        k = n if n_partitions is None else check_integer(
            "n_partitions", n_partitions, 1, f"a positive multiple of n_workers = {n}")
        if k % n:
            raise ValueError(f"n_partitions must be a positive multiple of n_workers = {n}, "
                             f"got {k}")
        self.scheme, self.n_workers, self.n_stragglers, self.split = "comm-efficient", n, s, m
        self.n_partitions, self.n_messages = k, n
        self.decode_tolerance = DECODE_TOLERANCE
        self.cache_size = check_integer("cache_size", cache_size, 0)
        self._design, self.decode_condition = _design_or_refuse(
            "comm-efficient", n, s, m, _comm_layout(n, s, m), design,
            f"n_workers={n}, n_stragglers={s}, split={m}", lambda n2, s2: _comm_layout(n2, s2, m))
        self.design = self._design.label
        base = self._design.B.reshape(n, n, m)  # set j of _comm_layout is partition j
        self.B = np.ascontiguousarray(np.repeat(base, k // n, axis=1).reshape(n, k * m))
        self.B.setflags(write=False)
        self.message_worker = np.arange(n)
        self.message_worker.setflags(write=False)
        self._messages = [np.array([w]) for w in range(n)]
        held = (np.arange(n)[:, None] + np.arange(s + m)) % n
        self._partitions = [np.sort((held[w][:, None] * (k // n) + np.arange(k // n)).ravel())
                            for w in range(n)]
        self._cache = OrderedDict()
        self._hits = self._misses = 0

    def __repr__(self):
        return (f"CommEfficientCode(n_workers={self.n_workers}, n_stragglers="
                f"{self.n_stragglers}, split={self.split}, n_partitions={self.n_partitions})")

    @property
    def G(self):
        """n x r generator (rows scaled with B's): B = G @ T."""
        return self._design.generator()[0]

    @property
    def T(self):
        """r x (k m) coordinates of B's columns; the last m rows are E."""
        T = self._design.generator()[1].reshape(-1, self.n_workers, self.split)
        return np.repeat(T, self.n_partitions // self.n_workers, axis=1).reshape(len(T), -1)

    def piece_bounds(self, n_features):
        """m + 1 offsets: piece u is coordinates [bounds[u], bounds[u + 1]), ceil(p / m) long
        except the last (shorter, possibly empty for p < m)."""
        p = check_integer("n_features", n_features, 1)
        return np.minimum(np.arange(self.split + 1) * self.message_length(p), p)

    def message_length(self, n_features):
        """ceil(p / m): the length of every message."""
        return -(-check_integer("n_features", n_features, 1) // self.split)

    def message_support(self, support, n_features):
        """Where a worker whose point is on `support` (sorted global coordinates) sends values:
        (message_support: the sorted piece coordinates in [0, ceil(p / m)) its pieces touch,
        piece_of: the piece of every support coordinate, position: where each lands in
        message_support). Dense data: all ceil(p / m) of them."""
        support = np.asarray(support, dtype=np.int64)
        length = self.message_length(n_features)
        piece_of = support // length
        local = support - piece_of * length
        message_support, position = np.unique(local, return_inverse=True)
        return message_support, piece_of, position

    def decode_error(self, decoder):
        """||A @ B - E||^2 per partition, as GradientCode's (0 for an exact decode)."""
        difference = decoder @ self._design.B - self._design.E
        return float(np.sum(difference ** 2) / self.n_workers)  # B here: the n base partitions

    def coefficients(self, worker):
        """(len(partitions_of(worker)), m): the coefficient of piece u of the worker's j-th
        held partition (partitions_of order)."""
        rows = self.B[self._check_worker(worker)].reshape(self.n_partitions, self.split)
        return rows[self._partitions[worker]]

    def encode(self, worker, gradients):
        """The worker's message (ceil(p / m),) from its held partitions' gradients (held, p)."""
        gradients = np.asarray(gradients, dtype=np.float64)
        held = len(self.partitions_of(worker))
        if gradients.ndim != 2 or gradients.shape[0] != held:
            raise ValueError(f"gradients must be ({held}, n_features), one row per held "
                             f"partition, got shape {gradients.shape}")
        length = self.message_length(gradients.shape[1])
        padded = np.zeros((held, self.split * length))
        padded[:, :gradients.shape[1]] = gradients
        return np.einsum("ju,jul->l", self.coefficients(worker),
                         padded.reshape(held, self.split, length))

    def combine(self, decoder, messages, n_features):
        """The full gradient (p,) from the decode matrix and the messages (n, ceil(p / m));
        rows of messages outside the decoder's support are not read."""
        used = np.flatnonzero(np.any(decoder != 0, axis=0))
        pieces = decoder[:, used] @ np.asarray(messages, dtype=np.float64)[used]
        return pieces.ravel()[:check_integer("n_features", n_features, 1)]

    def decode(self, arrived):
        """Decode matrix A (m, n_messages) for the arrived message indices, or None.

        A is zero outside `arrived` and satisfies max|A @ B - E| <= decode_tolerance
        (E[u, j m + u] = 1); cached per arrived set and returned read-only.
        """
        return self.decode_mask(self._arrived_mask(arrived))

    def residual(self, decoder):
        """max |A @ B - E|: how far a decode matrix is from exact."""
        return float(np.abs(decoder @ self._design.B - self._design.E).max())

    def _checked_solve(self, mask):
        A = self._design.solve(mask)
        if A is None:
            return None
        A[:, ~mask] = 0.0
        residual = self.residual(A)
        if residual > self.decode_tolerance:
            if residual > 1e3 * self.decode_tolerance:
                return None
            A = self._design.refine(A, mask)
            A[:, ~mask] = 0.0
            if self.residual(A) > self.decode_tolerance:
                return None
        A.setflags(write=False)
        return A


def _comm_layout(n, s, m):
    """(holder sets of the base partitions, counts, orders): partition j is held by workers
    j - d + 1, ..., j (one set per partition, set j = partition j)."""
    d = s + m
    return np.sort((np.arange(n)[:, None] - np.arange(d)) % n, axis=1), np.ones(n), {}
