"""CRC encoding matrices: the cyclic-MDS (BCH) design and the paper's random one.

``select_cyclic_design(n, s)`` picks the best-conditioned real (nega)cyclic
BCH generator; ``CyclicDesign`` holds it with everything its decoder needs.
``paper_random_matrix`` is Tandon et al.'s random construction and
``svd_decode_basis`` its decoder's full-set vector and left-kernel basis.
Pure NumPy, no state: gc_fast.codes.CyclicRepetitionCode builds on them.
"""
from itertools import combinations
from math import comb, gcd

import numpy as np


def paper_random_matrix(n, s, rng):
    """The paper's random CRC matrix, every row scaled to unit norm."""
    H = rng.standard_normal((s, n))
    H[:, -1] = -H[:, :-1].sum(axis=1)
    B = np.zeros((n, n))
    for i in range(n):
        window = (i + np.arange(s + 1)) % n
        B[i, i] = 1.0
        if s:
            B[i, window[1:]] = -np.linalg.solve(H[:, window[1:]], H[:, i])
    return B / np.linalg.norm(B, axis=1, keepdims=True)


def svd_decode_basis(B, rank):
    """Minimum-norm full-set decode vector and left-kernel basis of a square B of rank `rank`."""
    U, sigma, Vt = np.linalg.svd(B)
    deficient = rank < len(sigma) and sigma[rank] > 1e-10 * sigma[0]
    if sigma[rank - 1] <= 1e-14 * sigma[0] or deficient:
        raise RuntimeError(f"encoding matrix does not have rank {rank}; draw another seed")
    a0 = U[:, :rank] @ ((Vt[:rank] @ np.ones(B.shape[1])) / sigma[:rank])
    return a0, np.ascontiguousarray(U[:, rank:])


def _roots(zeros, n, twist):
    """Root of index t: exp(i pi (2t + twist) / n), a root of x^n = (-1)^twist."""
    return np.exp(1j * np.pi * (2 * np.asarray(zeros) + twist) / n)


class CyclicDesign:
    """One real (nega)cyclic BCH generator for CRC and everything its decoder needs.

    Root index t stands for exp(i pi (2t + twist) / n), a root of x^n = (-1)^twist.
    p: unit-norm coefficients of prod over `zeros` of (x - root); d: column factors
    (the all-ones vector projected onto the code); kernel: orthonormal basis of the
    left kernel; a0: minimum-norm decode vector of the full set.
    """

    def __init__(self, n, s, twist, multiplier, zeros, d):
        self.n, self.s, self.twist, self.multiplier = n, s, twist, multiplier
        self.zeros, self.d = zeros, d
        self.p = np.real(np.poly(_roots(zeros, n, twist))[::-1]) if s else np.ones(1)
        self.p /= np.linalg.norm(self.p)
        self.kernel = _real_fourier_basis(zeros, n, twist)
        self.a0 = _deconvolve(self.p, d, zeros, twist)

    def matrix(self):
        """B[i] = coefficients of x^i p(x) mod x^n - (-1)^twist, column j divided by d_j."""
        n, s = self.n, self.s
        shift = np.arange(n)[:, None] + np.arange(s + 1)[None, :]
        sign = np.where(shift >= n, -1.0, 1.0) if self.twist else 1.0
        base = np.zeros((n, n))
        np.put_along_axis(base, shift % n, sign * self.p[None, :], axis=1)
        return base / self.d[None, :]

    def decode_norms(self, straggler_sets):
        """Norm of the (unique) decode vector for each row of straggler indices."""
        rows = self.kernel[straggler_sets]
        try:
            c = np.linalg.solve(rows, -self.a0[straggler_sets][..., None])[..., 0]
        except np.linalg.LinAlgError:
            return np.full(len(straggler_sets), np.inf)
        return np.sqrt(self.a0 @ self.a0 + (c * c).sum(axis=1))


def select_cyclic_design(n, s, *, n_samples=2000, spread_slack=10.0):
    """The default CRC generator: the best-conditioned of the real BCH candidates.

    Candidates: zeros g(b), ..., g(b + s - 1) mod n with gcd(g, n) = 1, closed
    under conjugation (t -> -t - twist); with twist = 0 also excluding index 0
    (the root 1). Twist 0 (cyclic) exists iff n - s is odd, twist 1
    (negacyclic) iff n - s is even. Each is MDS by the BCH bound.

    Score (smallest wins; deterministic, ties to the smallest g, then b), the
    product of two condition bounds:
    * spread = max|p| / min|p| over the roots off the block, times
      max|d| / min|d|: the condition number of B on its row space, so
      cond(B_F) <= spread / sigma_min(Q_S) for the s stragglers S (the law of
      sigma_min(Q_S) over random S is the same for every g);
    * the 99th percentile, over a fixed sample of s-straggler sets (all of
      them when C(n, s) <= n_samples), of |a|_2 / min|d|, which bounds the
      float error amplification max_j sum_i |a_i| |B_ij| of the decode.
    Candidates whose spread alone is `spread_slack` times the best are skipped.
    """
    twist = 0 if (n - s) % 2 else 1
    if s == 0:
        return CyclicDesign(n, 0, twist, 1, np.zeros(0, np.int64), np.ones(n))
    log_chord = np.log(2.0 * np.abs(np.sin(np.pi * np.arange(n) / n)), where=np.arange(n) > 0,
                       out=np.full(n, -np.inf))
    index = np.arange(n)
    candidates, seen = [], set()
    for g in range(1, n):
        if gcd(g, n) != 1:
            continue
        for b in block_starts(n, s, twist, g):
            zeros = (g * (b + np.arange(s))) % n
            key = tuple(np.sort(zeros))
            if (twist == 0 and (zeros == 0).any()) or key in seen:
                continue
            seen.add(key)
            d = projected_ones(zeros, n, twist)
            if np.abs(d).min() < 1e-3:
                continue
            others = np.delete(index, zeros)
            log_p = log_chord[(others[:, None] - zeros[None, :]) % n].sum(axis=1)
            log_spread = np.ptp(log_p) + np.log(np.abs(d).max() / np.abs(d).min())
            candidates.append((log_spread, g, zeros, d))
    if not candidates:
        raise RuntimeError(f"no cyclic-mds construction for n={n}, s={s}; "
                           "use construction='random'")
    smallest = min(c[0] for c in candidates)
    straggler_sets = _straggler_sets(n, s, n_samples)
    best_score, best = np.inf, None
    for log_spread, g, zeros, d in candidates:
        if log_spread > smallest + np.log(spread_slack):
            continue
        design = CyclicDesign(n, s, twist, g, zeros, d)
        norms = design.decode_norms(straggler_sets) / np.abs(d).min()
        score = round(float(log_spread + np.log(np.quantile(norms, 0.99))), 2)
        if score < best_score:
            best_score, best = score, design
    return best


def _straggler_sets(n, s, n_samples):
    """All s-subsets of range(n) if there are at most n_samples, else a fixed random sample."""
    if comb(n, s) <= n_samples:
        return np.array(list(combinations(range(n), s)), dtype=np.int64).reshape(comb(n, s), s)
    keys = np.random.default_rng(20170).random((n_samples, n))
    return np.sort(np.argpartition(keys, s, axis=1)[:, :s], axis=1)


def block_starts(n, s, twist, g):
    """Starts b with {g(b + k)} closed under t -> -t - twist (mod n): 2b + s - 1 = c (mod n)."""
    c = (-twist * pow(g, -1, n)) % n
    if n % 2:
        return [((c - s + 1) * pow(2, -1, n)) % n]
    if (c - s + 1) % 2:
        return []
    b = ((c - s + 1) // 2) % n
    return [b, (b + n // 2) % n]


def projected_ones(zeros, n, twist):
    """Projection of the all-ones vector onto the code with these zeros (ones if cyclic).

    The vectors (root_t^i)_i are orthogonal, so the projection removes the
    all-ones vector's components on the zero roots (one FFT).
    """
    if twist == 0:
        return np.ones(n)
    twiddle = np.exp(1j * np.pi * np.arange(n) / n)
    components = np.zeros(n, dtype=complex)
    components[zeros] = np.fft.fft(np.conj(twiddle))[zeros] / n
    return 1.0 - np.real(twiddle * np.fft.ifft(components) * n)


def _real_fourier_basis(zeros, n, twist):
    """Orthonormal real basis (n x s) of span{(root^-i)_i : root index in zeros}."""
    i = np.arange(n)
    columns, seen = [], set()
    for t in sorted(int(z) for z in zeros):
        if t in seen:
            continue
        partner = (-t - twist) % n
        seen.update((t, partner))
        angle = np.pi * (((2 * t + twist) * i) % (2 * n)) / n  # reduced exactly: accurate phases
        if partner == t:
            columns.append(np.cos(angle) / np.sqrt(n))
        else:
            columns += [np.cos(angle) * np.sqrt(2.0 / n), np.sin(angle) * np.sqrt(2.0 / n)]
    return np.column_stack(columns) if columns else np.zeros((n, 0))


def _deconvolve(p, d, zeros, twist):
    """Minimum-norm a with a(x) p(x) = d(x) mod x^n - (-1)^twist (a orthogonal to the kernel).

    Evaluating at the n roots eta_t = theta omega^t of x^n = (-1)^twist turns
    the product into A_t P_t = D_t; A_t = 0 on the zeros of p, D_t / P_t elsewhere.
    """
    n = len(d)
    twiddle = np.exp(1j * np.pi * twist * np.arange(n) / n)
    padded = np.zeros(n)
    padded[:len(p)] = p
    P = n * np.fft.ifft(padded * twiddle)
    D = n * np.fft.ifft(d * twiddle)
    A = np.zeros(n, dtype=complex)
    keep = np.ones(n, dtype=bool)
    keep[zeros] = False
    A[keep] = D[keep] / P[keep]
    return np.real(np.fft.fft(A) / n / twiddle)
