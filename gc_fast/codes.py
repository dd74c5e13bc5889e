"""Gradient codes: encoding matrices and decoders (Tandon et al., ICML 2017).

A code for n workers and s stragglers is an encoding matrix ``B`` of shape
(n_messages, n_partitions): message i is ``sum_j B[i, j] * g_j`` over the
partition gradients g_j, and the master recovers ``g = sum_j g_j`` as
``sum_i a_i * message_i`` from any decode vector ``a`` that is zero outside the
arrived messages and satisfies ``a @ B == 1``.

Schemes (``make_code``):

* ``naive``: one partition per worker, wait for all n (s must be 0).
* ``ignore``: one partition per worker, take the first n - s and rescale by
  n / |arrived|. Approximate by design (``exact = False``).
* ``frc``: fractional repetition; groups of s + 1 workers hold the same
  partitions and send their plain sum (0/1 entries). Decodes, without any
  linear solve, as soon as every group has one arrived message.
* ``crc``: cyclic repetition; worker i holds partitions i, ..., i + s (mod n).
  ``construction="cyclic-mds"`` (default) or ``"random"`` (the paper's).
* ``partial-frc``, ``partial-crc``: two messages per worker (partial
  stragglers): message 2w is the plain sum of worker w's P - s - 1 private
  pieces, message 2w + 1 the FRC/CRC-coded combination of its s + 1 shared
  pieces. Pieces 0..n-1 are the shared ones (laid out as in frc/crc), piece
  n + w(P - s - 1) + r is worker w's r-th private piece.

Normalisation of B: naive, ignore, frc and the partial schemes' first messages
are plain sums (entries 0/1). CRC rows have unit Euclidean norm (exactly for
the cyclic and random constructions, within the column factors d_j ~ 1 of the
negacyclic one, see ``CyclicRepetitionCode``), so messages are on the scale of
a partition gradient and decode coefficients are O(1) with every message
arrived (0.3-0.7 on average for the default codes); with stragglers they grow
with the conditioning of the arrived set (bench/bench_codes.py).

Decoding happens on the earliest decodable set, is cached per arrived set (an
LRU of ``cache_size`` entries) and is checked: an exact code never returns a
vector with ``max|a @ B - 1| > decode_tolerance``; a set whose solution misses
is reported as not decodable.

``decodable_prefix_length`` gives the simulator the earliest decodable prefix
of an arrival order from the structural rules, without building B.
"""
from collections import OrderedDict
from itertools import combinations
from math import comb, gcd
from numbers import Integral

import numpy as np

__all__ = [
    "SCHEMES", "CONSTRUCTIONS", "DECODE_TOLERANCE", "GradientCode", "NaiveCode",
    "IgnoreStragglersCode", "FractionalRepetitionCode", "CyclicRepetitionCode",
    "PartialStragglerCode", "make_code", "decodable_prefix_length",
]

SCHEMES = ("naive", "ignore", "frc", "crc", "partial-frc", "partial-crc")
CONSTRUCTIONS = ("cyclic-mds", "random")
DECODE_TOLERANCE = 1e-9
DEFAULT_CACHE_SIZE = 4096

_OPTIONS = {
    "naive": {"cache_size"},
    "ignore": {"cache_size"},
    "frc": {"cache_size"},
    "crc": {"cache_size", "construction"},
    "partial-frc": {"cache_size", "partitions_per_worker"},
    "partial-crc": {"cache_size", "partitions_per_worker", "construction"},
}


class GradientCode:
    """An encoding matrix with its placement and a cached, residual-checked decoder.

    Attributes: scheme, n_workers, n_stragglers, n_partitions, n_messages,
    exact, decode_tolerance, B (float64, n_messages x n_partitions) and
    message_worker (int64, the worker sending each message).

    Subclasses provide ``_solve(mask)``: a candidate decode vector for the
    arrived-message mask, or None when the set cannot decode.
    """

    exact = True

    def __init__(self, scheme, n_workers, n_stragglers, B, message_worker, *,
                 cache_size=DEFAULT_CACHE_SIZE):
        self.scheme = scheme
        self.n_workers = int(n_workers)
        self.n_stragglers = int(n_stragglers)
        self.B = np.ascontiguousarray(B, dtype=np.float64)
        self.B.setflags(write=False)
        self.message_worker = np.asarray(message_worker, dtype=np.int64)
        self.message_worker.setflags(write=False)
        self.n_messages, self.n_partitions = self.B.shape
        self.decode_tolerance = DECODE_TOLERANCE
        self.cache_size = int(cache_size)
        self._holds = self.B != 0
        # B is sparse (s + 1 non-zeros a row): its entries by (row, column), for residual()
        self._entry_rows, self._entry_cols = np.nonzero(self._holds)
        self._entry_values = self.B[self._entry_rows, self._entry_cols]
        self._messages = [np.flatnonzero(self.message_worker == w) for w in range(self.n_workers)]
        self._partitions = [np.flatnonzero(self._holds[m].any(axis=0)) for m in self._messages]
        self._cache = OrderedDict()
        self._hits = self._misses = 0

    def __repr__(self):
        return (f"{type(self).__name__}(scheme={self.scheme!r}, n_workers={self.n_workers}, "
                f"n_stragglers={self.n_stragglers}, n_partitions={self.n_partitions})")

    def partitions_of(self, worker):
        """Sorted partition indices worker `worker` holds (the support of its messages)."""
        return self._partitions[self._check_worker(worker)].copy()

    def messages_of(self, worker):
        """Message (row) indices worker `worker` sends, in send order."""
        return self._messages[self._check_worker(worker)].copy()

    def priority_order(self):
        """Workers, those whose messages are most likely needed first.

        The k-th worker holding a given set of partitions comes before every
        (k+1)-th one, so a prefix of the order covers all partitions as early
        as it can: one worker of each FRC group, then a second of each, ...;
        workers with distinct sets (CRC) keep their index order. A set of
        workers with disjoint partitions that covers them all and decodes on
        its own (CRC with s = 1 and even n: 0, 2, 4, ...) goes first when it is
        shorter than that order's first decodable prefix.
        """
        copies, keys = {}, []
        for worker, partitions in enumerate(self._partitions):
            key = partitions.tobytes()
            keys.append((copies.get(key, 0), worker))
            copies[key] = copies.get(key, 0) + 1
        order = [worker for _, worker in sorted(keys)]
        cover = self._smallest_decodable_cover()
        if cover and len(cover) < self._decodable_prefix(order)[0]:
            order = cover + [worker for worker in order if worker not in cover]
        return np.array(order, dtype=np.int64)

    def expected_decode(self):
        """Decode vector of the shortest decodable prefix of priority_order(): the set of
        workers most likely to decode first (None if even all of them do not decode)."""
        return self._decodable_prefix(self.priority_order())[1]

    def _decodable_prefix(self, order):
        """(length, decode vector) of the shortest decodable prefix of the workers in
        `order`; (len(order) + 1, None) if there is none."""
        mask = np.zeros(self.n_messages, dtype=bool)
        for length, worker in enumerate(order, start=1):
            mask[self._messages[worker]] = True
            vector = self.decode_mask(mask)
            if vector is not None:
                return length, vector
        return len(order) + 1, None

    def _smallest_decodable_cover(self):
        """The smallest decodable set of workers with disjoint partitions covering all of
        them, found greedily from each starting worker in cyclic order; [] if none."""
        best = []
        for start in range(self.n_workers):
            chosen, covered = [], np.zeros(self.n_partitions, dtype=bool)
            for worker in (start + np.arange(self.n_workers)) % self.n_workers:
                partitions = self._partitions[worker]
                if not covered[partitions].any():
                    chosen.append(int(worker))
                    covered[partitions] = True
            if not covered.all() or (best and len(chosen) >= len(best)):
                continue
            mask = np.zeros(self.n_messages, dtype=bool)
            for worker in chosen:
                mask[self._messages[worker]] = True
            if self.decode_mask(mask) is not None:
                best = sorted(chosen)
        return best

    def is_decodable(self, arrived):
        """True when the arrived message indices already determine the full gradient."""
        return self.decode(arrived) is not None

    def decode(self, arrived):
        """Decode vector for the arrived message indices (any iterable, any order), or None.

        The vector has length n_messages, is zero outside `arrived` and (exact
        schemes) satisfies max|a @ B - 1| <= decode_tolerance. It is cached per
        arrived set and returned read-only; copy it before modifying.
        """
        return self.decode_mask(self._arrived_mask(arrived))

    def decode_mask(self, mask):
        """decode() for a boolean mask over the messages (True = arrived), unchecked: the
        master keeps its mask up to date as messages land instead of rebuilding it."""
        key = mask.tobytes()
        if key in self._cache:
            self._hits += 1
            self._cache.move_to_end(key)
            return self._cache[key]
        self._misses += 1
        vector = self._checked_solve(mask)
        if self.cache_size:
            self._cache[key] = vector
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return vector

    def cache_info(self):
        """(hits, misses, current size, maximum size) of the decode cache."""
        return self._hits, self._misses, len(self._cache), self.cache_size

    def _checked_solve(self, mask):
        vector = self._solve(mask)
        if vector is None:
            return None
        vector[~mask] = 0.0
        if self.exact:
            residual = self.residual(vector)
            if residual > self.decode_tolerance:
                # Refine only near-misses: an inconsistent set misses by O(1).
                if residual > 1e3 * self.decode_tolerance:
                    return None
                vector = self._refine(vector, mask)
                if vector is None or self.residual(vector) > self.decode_tolerance:
                    return None
        vector.setflags(write=False)
        return vector

    def _refine(self, vector, mask):
        """A more accurate decode vector for `mask` than `vector`, or None (no refinement)."""
        return None

    def residual(self, vector):
        """max |vector @ B - 1|: how far a decode vector is from exact."""
        total = np.bincount(self._entry_cols, weights=vector[self._entry_rows] * self._entry_values,
                            minlength=self.n_partitions)
        return float(np.max(np.abs(total - 1.0), initial=0.0))

    def _arrived_mask(self, arrived):
        if isinstance(arrived, np.ndarray):
            if arrived.dtype == bool:
                raise ValueError("arrived must hold message indices, not a boolean mask")
            index = arrived.astype(np.int64, copy=False).ravel()
        else:
            index = np.fromiter(arrived, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.n_messages):
            raise ValueError(f"arrived message indices must be in [0, {self.n_messages}), "
                             f"got {index.min()}..{index.max()}")
        mask = np.zeros(self.n_messages, dtype=bool)
        mask[index] = True
        return mask

    def _covers_all_partitions(self, mask):
        return bool(self._holds[mask].any(axis=0).all())

    def _check_worker(self, worker):
        if not isinstance(worker, Integral) or not 0 <= worker < self.n_workers:
            raise ValueError(f"worker must be an integer in [0, {self.n_workers}), got {worker!r}")
        return int(worker)


class NaiveCode(GradientCode):
    """Plain synchronous GD: worker w holds partition group w, the master waits for all n."""

    def __init__(self, n_workers, n_partitions, *, cache_size=DEFAULT_CACHE_SIZE):
        B = _expand(np.eye(n_workers), n_partitions)
        super().__init__("naive", n_workers, 0, B, np.arange(n_workers), cache_size=cache_size)

    def _solve(self, mask):
        return np.ones(self.n_messages) if mask.all() else None


class IgnoreStragglersCode(GradientCode):
    """The paper's ignoring-stragglers baseline: approximate by design (exact = False).

    One partition group per worker; decodable once any n - s messages arrived,
    with a = n / |arrived| on them. a @ B is n/|arrived| on the arrived
    workers' partitions and 0 on the stragglers' (not all-ones): their data is
    dropped that iteration. Over uniformly random straggler sets the rescaled
    sum is unbiased, never exact; no residual check applies.
    """

    exact = False

    def __init__(self, n_workers, n_stragglers, n_partitions, *, cache_size=DEFAULT_CACHE_SIZE):
        B = _expand(np.eye(n_workers), n_partitions)
        super().__init__("ignore", n_workers, n_stragglers, B, np.arange(n_workers),
                         cache_size=cache_size)

    def _solve(self, mask):
        count = int(mask.sum())
        if count < self.n_workers - self.n_stragglers:
            return None
        return np.where(mask, self.n_workers / count, 0.0)


class FractionalRepetitionCode(GradientCode):
    """FRC: n/(s+1) groups of s+1 consecutive workers; a group's workers hold the same
    partitions and send their plain sum. Decodes with coefficient 1 on the lowest
    arrived worker of every group, as soon as every group has one (possibly with
    only n/(s+1) arrivals). Needs (s + 1) | n.
    """

    def __init__(self, n_workers, n_stragglers, n_partitions, *, cache_size=DEFAULT_CACHE_SIZE):
        self.n_groups = n_workers // (n_stragglers + 1)
        self.group_of = np.arange(n_workers) // (n_stragglers + 1)
        B = _expand(np.eye(self.n_groups)[self.group_of], n_partitions)
        super().__init__("frc", n_workers, n_stragglers, B, np.arange(n_workers),
                         cache_size=cache_size)

    def _solve(self, mask):
        arrived = np.flatnonzero(mask)
        groups, first = np.unique(self.group_of[arrived], return_index=True)
        if groups.size < self.n_groups:
            return None
        vector = np.zeros(self.n_messages)
        vector[arrived[first]] = 1.0
        return vector


class CyclicRepetitionCode(GradientCode):
    """CRC: worker i holds partitions i, ..., i + s (mod n); any n - s messages decode.

    Every row of B lies in an (n - s)-dimensional row space that contains the
    all-ones vector and any n - s rows are independent, so they span it. The
    decoder keeps one decode vector a0 for the full set (minimum norm, a0 @ B
    = 1) and an orthonormal basis Q (n x s) of the left kernel {v : v @ B = 0};
    every decode vector is a0 + Q c, and zeroing it on the missing set M is the
    |M| x s least-squares problem Q[M] c = -a0[M] (minimum-norm solution, so
    the smallest decode vector). With |M| <= s that is always solvable; with
    |M| > s the same solve decides, exactly, whether fewer than n - s messages
    already decode (after a cheap check that the arrived messages cover every
    partition). Cold decoding costs O(|M| s^2 + n k), no n x n solve.

    construction="cyclic-mds" (default): B[i] is the shift by i of the
    coefficients of a real degree-s polynomial p whose roots are s
    *consecutive* powers beta^(b..b+s-1) of a primitive n-th root of unity
    beta = exp(2 pi i g / n) (gcd(g, n) = 1), times a twist:

    * n - s odd: cyclic code, roots exclude 1 and are closed under conjugation;
      B is circulant and contains the all-ones vector in its row space.
    * n - s even: no such real block exists, so the code is negacyclic (roots
      of x^n = -1, x^(i) p(x) mod x^n + 1, sign flip on wrap-around), which
      has conjugation-closed consecutive blocks exactly when n - s is even.
      Its row space contains d = the projection of the all-ones vector onto it
      (entries within a few tens of percent of 1), and column j is divided by
      d_j so that the all-ones vector is reached.

    The BCH bound makes both codes MDS, so every n - s rows are independent
    and every pattern of at most s stragglers decodes in exact arithmetic.
    The multiplier g and the block are chosen at construction,
    deterministically (``_select_cyclic_design``), by the product of the
    spectral spread of p (which bounds the condition number of B on its row
    space) and the 99th percentile of the decode-vector norm over sampled
    straggler sets (which bounds the float error of a decoded gradient). The
    block centred at -1 with g = 1 is orders of magnitude worse for larger n
    (see bench/bench_codes.py). ``multiplier`` and ``negacyclic`` record the
    choice; ``seed`` is not used.

    Floating point: with s stragglers the decode vector is unique, and it
    passes the residual check only if its rounding floor, about
    (s + 2) * eps * max_j sum_i |a_i B_ij|, is below decode_tolerance. On
    10,000 sampled sets the default decodes every one for n = 100, s <= 8 and
    refuses 0.05-0.3% at s = 9, 10 (n = 99, 100): such a set is reported not
    decodable until one more message arrives, never decoded wrongly. When the
    first solve misses the tolerance narrowly, one or two steps of iterative
    refinement by least squares on the arrived rows (O(n^3), rare) bring it
    down to that floor.

    construction="random": the paper's: Gaussian H (s x n) with H 1 = 0,
    B[i, i] = 1 and the other s entries of row i solving H b_i = 0, then every
    row scaled to unit norm. Valid with probability 1; badly conditioned for
    larger n (the residual check then rejects patterns it cannot decode to
    decode_tolerance).
    """

    def __init__(self, n_workers, n_stragglers, n_partitions, *, construction="cyclic-mds",
                 seed=0, cache_size=DEFAULT_CACHE_SIZE):
        n, s = n_workers, n_stragglers
        self.construction = construction
        if construction == "cyclic-mds":
            design = self._cyclic_design(n, s)
            self.multiplier, self.negacyclic = design.multiplier, bool(design.twist)
            self._base, self._kernel, self._a0 = design.matrix(), design.kernel, design.a0
        else:
            self.multiplier = self.negacyclic = None
            self._base = _paper_random_matrix(n, s, np.random.default_rng(seed))
            self._a0, self._kernel = _svd_decode_basis(self._base, n - s)
        super().__init__("crc", n, s, _expand(self._base, n_partitions), np.arange(n),
                         cache_size=cache_size)
        if self.residual(self._a0) > self.decode_tolerance:
            raise RuntimeError(f"crc {construction} construction for n={n}, s={s} "
                               f"failed its full-set decode check")

    def _cyclic_design(self, n, s):
        return _select_cyclic_design(n, s)

    def _zero_missing(self, vector, missing):
        """Add the kernel vector (least squares, minimum norm) that best zeroes vector[missing];
        the caller sets the missing entries, then ~0, to exactly 0."""
        if missing.size and self._kernel.shape[1]:
            coefficients = np.linalg.lstsq(self._kernel[missing], -vector[missing], rcond=None)[0]
            vector += self._kernel @ coefficients
        return vector

    def _solve(self, mask):
        missing = np.flatnonzero(~mask)
        if missing.size > self.n_stragglers and not self._covers_all_partitions(mask):
            return None
        return self._zero_missing(self._a0.copy(), missing)

    def _refine(self, vector, mask):
        """Up to two steps of iterative refinement by least squares on the arrived rows.

        The kernel basis is exact only up to rounding, which matters when the
        decode vector is large; refining against the stored B itself brings
        the residual down to the rounding floor eps * max_j sum_i |a_i B_ij|.
        """
        arrived = np.flatnonzero(mask)
        rows = self._base[arrived].T
        vector = vector.copy()
        for _ in range(2):
            residual = 1.0 - vector @ self._base
            if np.abs(residual).max() <= 0.1 * self.decode_tolerance:
                break
            vector[arrived] += np.linalg.lstsq(rows, residual, rcond=None)[0]
        return vector


class PartialStragglerCode(GradientCode):
    """Partial stragglers: each worker holds P pieces and sends two messages.

    Message 2w is the plain sum of worker w's P - s - 1 private pieces, message
    2w + 1 the coded (frc or crc) combination of its s + 1 shared pieces.
    Decodable exactly when all n first messages arrived (a private piece is in
    no other message) and the arrived coded messages decode the base code; the
    decode vector is 1 on the first messages and the base code's on the coded.
    """

    def __init__(self, base_scheme, n_workers, n_stragglers, partitions_per_worker, n_partitions,
                 *, construction="cyclic-mds", seed=0, cache_size=DEFAULT_CACHE_SIZE):
        n, s, P = n_workers, n_stragglers, partitions_per_worker
        self.partitions_per_worker = P
        if base_scheme == "frc":
            self.coded = FractionalRepetitionCode(n, s, n, cache_size=0)
        else:
            self.coded = CyclicRepetitionCode(n, s, n, construction=construction, seed=seed,
                                              cache_size=0)
        n_private = P - s - 1
        base = np.zeros((2 * n, n * (P - s)))
        base[1::2, :n] = self.coded.B
        for w in range(n):
            base[2 * w, n + w * n_private:n + (w + 1) * n_private] = 1.0
        super().__init__("partial-" + base_scheme, n, s, _expand(base, n_partitions),
                         np.repeat(np.arange(n), 2), cache_size=cache_size)

    def _solve(self, mask):
        if not mask[0::2].all():
            return None
        coded = self.coded._checked_solve(mask[1::2])
        if coded is None:
            return None
        vector = np.ones(self.n_messages)
        vector[1::2] = coded
        return vector


def make_code(scheme, n_workers, n_stragglers, *, n_partitions=None, seed=0, **options):
    """Build the gradient code `scheme` for n_workers workers tolerating n_stragglers.

    scheme: one of SCHEMES. n_partitions: default n_workers (n(P - s) for the
    partial schemes); a multiple of the default is also accepted (of
    n/(s + 1) for frc): every partition of the base code becomes a group of
    consecutive partitions with the same coefficient. seed: the random
    construction's draw. options: construction (crc, partial-crc; one of
    CONSTRUCTIONS), partitions_per_worker (partial schemes; >= s + 2, default
    s + 2), cache_size (decode-cache entries, default 4096; 0 disables it).
    Invalid parameters raise ValueError with a one-line message.
    """
    params = _validate(scheme, n_workers, n_stragglers, n_partitions, seed, options)
    n, s, k = params["n_workers"], params["n_stragglers"], params["n_partitions"]
    cache_size = params["cache_size"]
    if scheme == "naive":
        return NaiveCode(n, k, cache_size=cache_size)
    if scheme == "ignore":
        return IgnoreStragglersCode(n, s, k, cache_size=cache_size)
    if scheme == "frc":
        return FractionalRepetitionCode(n, s, k, cache_size=cache_size)
    if scheme == "crc":
        return CyclicRepetitionCode(n, s, k, construction=params["construction"],
                                    seed=params["seed"], cache_size=cache_size)
    return PartialStragglerCode(scheme[len("partial-"):], n, s, params["partitions_per_worker"],
                                k, construction=params["construction"], seed=params["seed"],
                                cache_size=cache_size)


def decodable_prefix_length(scheme, n_workers, n_stragglers, arrival_order, *,
                            n_partitions=None, seed=0, **options):
    """Length of the shortest prefix of `arrival_order` that decodes, or None if none does.

    arrival_order: distinct message indices (worker indices except for the
    partial schemes, whose worker w sends messages 2w and 2w + 1). Uses the
    structural rules and never builds B, so it scales to n = 10,000:
    naive: all n; ignore: any n - s; frc: one message from every group;
    crc: any n - s (exact for the random construction; the deterministic
    cyclic-MDS codes may decode a little earlier on some sets, which the
    trainer's code.is_decodable detects); partial-*: all n first messages and
    the frc/crc rule on the coded messages. Takes make_code's parameters.
    """
    params = _validate(scheme, n_workers, n_stragglers, n_partitions, seed, options)
    n, s = params["n_workers"], params["n_stragglers"]
    n_messages = 2 * n if scheme.startswith("partial-") else n
    order = np.asarray(arrival_order, dtype=np.int64).ravel()
    if order.size and (order.min() < 0 or order.max() >= n_messages):
        raise ValueError(f"arrival_order entries must be message indices in [0, {n_messages})")
    if np.unique(order).size != order.size:
        raise ValueError("arrival_order must not repeat a message")
    position = np.arange(order.size)
    if scheme.startswith("partial-"):
        first = order % 2 == 0
        if first.sum() < n:
            return None
        coded_length = _base_prefix_length(scheme[len("partial-"):], n, s,
                                           order[~first] // 2, position[~first])
        if coded_length is None:
            return None
        return max(int(position[first][-1]) + 1, coded_length)
    return _base_prefix_length(scheme, n, s, order, position)


def _base_prefix_length(scheme, n, s, workers, position):
    """Earliest decodable prefix length for distinct workers arriving at `position`."""
    if scheme == "frc":
        groups = workers // (s + 1)
        _, first = np.unique(groups, return_index=True)
        if first.size < n // (s + 1):
            return None
        return int(position[first].max()) + 1
    needed = n if scheme == "naive" else n - s
    return int(position[needed - 1]) + 1 if workers.size >= needed else None


def _validate(scheme, n_workers, n_stragglers, n_partitions, seed, options):
    """Check make_code's parameters; return them normalised (one-line ValueErrors)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}")
    unknown = sorted(set(options) - _OPTIONS[scheme])
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for scheme {scheme!r}; valid options: "
                         f"{', '.join(sorted(_OPTIONS[scheme]))}")
    n = _integer("n_workers", n_workers, 1, "an integer >= 1")
    s = _integer("n_stragglers", n_stragglers, 0, f"an integer in [0, n_workers) = [0, {n})")
    if s >= n:
        raise ValueError(f"n_stragglers must be an integer in [0, n_workers) = [0, {n}), got {s}")
    if scheme == "naive" and s != 0:
        raise ValueError(f"naive tolerates no stragglers: n_stragglers must be 0, got {s} "
                         f"(use ignore, frc or crc for s > 0)")
    if scheme in ("frc", "partial-frc") and n % (s + 1):
        valid = [v for v in range(n) if n % (v + 1) == 0]
        raise ValueError(f"{scheme} needs (n_stragglers + 1) to divide n_workers = {n}: "
                         f"n_stragglers must be one of {valid}, got {s}")
    params = {"n_workers": n, "n_stragglers": s,
              "seed": _integer("seed", seed, 0, "an integer >= 0"),
              "cache_size": _integer("cache_size", options.get("cache_size", DEFAULT_CACHE_SIZE),
                                     0, "an integer >= 0"),
              "construction": options.get("construction", "cyclic-mds")}
    if params["construction"] not in CONSTRUCTIONS:
        raise ValueError(f"construction must be one of {', '.join(CONSTRUCTIONS)}, "
                         f"got {params['construction']!r}")
    if scheme.startswith("partial-"):
        P = _integer("partitions_per_worker", options.get("partitions_per_worker", s + 2), s + 2,
                     f"an integer >= n_stragglers + 2 = {s + 2}")
        params["partitions_per_worker"] = P
        unit, default = n * (P - s), n * (P - s)
    elif scheme == "frc":
        unit, default = n // (s + 1), n
    else:
        unit, default = n, n
    if n_partitions is None:
        params["n_partitions"] = default
    else:
        what = f"a positive multiple of {unit}" + (" (= n_workers / (n_stragglers + 1))"
                                                   if scheme == "frc" else "")
        k = _integer("n_partitions", n_partitions, 1, what)
        if k % unit:
            raise ValueError(f"n_partitions for {scheme} must be {what}, default {default}; "
                             f"got {k}")
        params["n_partitions"] = k
    return params


def _integer(name, value, minimum, valid):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be {valid}, got {value!r}")
    return int(value)


def _expand(base, n_partitions):
    """Split every base partition into n_partitions / k consecutive ones, same coefficient."""
    return np.repeat(base, n_partitions // base.shape[1], axis=1)


def _paper_random_matrix(n, s, rng):
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


def _svd_decode_basis(B, rank):
    """Minimum-norm full-set decode vector and left-kernel basis of a square B of rank `rank`."""
    U, sigma, Vt = np.linalg.svd(B)
    if sigma[rank - 1] <= 1e-14 * sigma[0] or (rank < len(sigma) and sigma[rank] > 1e-10 * sigma[0]):
        raise RuntimeError(f"encoding matrix does not have rank {rank}; draw another seed")
    a0 = U[:, :rank] @ ((Vt[:rank] @ np.ones(B.shape[1])) / sigma[:rank])
    return a0, np.ascontiguousarray(U[:, rank:])


def _roots(zeros, n, twist):
    """Root of index t: exp(i pi (2t + twist) / n), a root of x^n = (-1)^twist."""
    return np.exp(1j * np.pi * (2 * np.asarray(zeros) + twist) / n)


class _CyclicDesign:
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


def _select_cyclic_design(n, s, *, n_samples=2000, spread_slack=10.0):
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
        return _CyclicDesign(n, 0, twist, 1, np.zeros(0, np.int64), np.ones(n))
    log_chord = np.log(2.0 * np.abs(np.sin(np.pi * np.arange(n) / n)), where=np.arange(n) > 0,
                       out=np.full(n, -np.inf))
    index = np.arange(n)
    candidates, seen = [], set()
    for g in range(1, n):
        if gcd(g, n) != 1:
            continue
        for b in _block_starts(n, s, twist, g):
            zeros = (g * (b + np.arange(s))) % n
            key = tuple(np.sort(zeros))
            if (twist == 0 and (zeros == 0).any()) or key in seen:
                continue
            seen.add(key)
            d = _projected_ones(zeros, n, twist)
            if np.abs(d).min() < 1e-3:
                continue
            others = np.delete(index, zeros)
            log_p = log_chord[(others[:, None] - zeros[None, :]) % n].sum(axis=1)
            log_spread = np.ptp(log_p) + np.log(np.abs(d).max() / np.abs(d).min())
            candidates.append((log_spread, g, zeros, d))
    if not candidates:
        raise RuntimeError(f"no cyclic-mds construction for n={n}, s={s}; use construction='random'")
    smallest = min(c[0] for c in candidates)
    straggler_sets = _straggler_sets(n, s, n_samples)
    best_score, best = np.inf, None
    for log_spread, g, zeros, d in candidates:
        if log_spread > smallest + np.log(spread_slack):
            continue
        design = _CyclicDesign(n, s, twist, g, zeros, d)
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


def _block_starts(n, s, twist, g):
    """Starts b with {g(b + k)} closed under t -> -t - twist (mod n): 2b + s - 1 = c (mod n)."""
    c = (-twist * pow(g, -1, n)) % n
    if n % 2:
        return [((c - s + 1) * pow(2, -1, n)) % n]
    if (c - s + 1) % 2:
        return []
    b = ((c - s + 1) // 2) % n
    return [b, (b + n // 2) % n]


def _projected_ones(zeros, n, twist):
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
