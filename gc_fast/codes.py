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
* ``hetero-crc`` (exact): loads proportional to given worker speeds, any s
  stragglers tolerated (gc_fast.generator_codes).
* ``comm-efficient`` (exact): each worker holds s + m partitions and sends a
  vector 1/m of the gradient's length; any n - s decode (gc_fast.generator_codes).
* ``expander``, ``pairwise``, ``bernoulli``: approximate codes decoded after
  ``wait`` arrivals with the least-squares ("optimal") or one-weight ("fast")
  decoder (gc_fast.approximate; ``exact = False``).

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

``ArrivalDecoder`` decodes as messages arrive (the master's assembler) and
``earliest_decodable_prefix`` finds the first decodable prefix of an order;
``placement`` and ``structural_decode`` give the simulator the same layout and
decode times from the structural rules, without building B (any n).
"""
from collections import OrderedDict
from numbers import Integral

import numpy as np

from .constructions import paper_random_matrix, select_cyclic_design, svd_decode_basis

__all__ = [
    "SCHEMES", "PAPER_SCHEMES", "APPROXIMATE_SCHEMES", "CONSTRUCTIONS", "DECODE_TOLERANCE",
    "GradientCode", "NaiveCode",
    "IgnoreStragglersCode", "FractionalRepetitionCode", "CyclicRepetitionCode",
    "PartialStragglerCode", "make_code", "ArrivalDecoder", "earliest_decodable_prefix",
    "placement", "message_partitions", "fewest_decoding_messages", "structural_decode",
]

PAPER_SCHEMES = ("naive", "ignore", "frc", "crc", "partial-frc", "partial-crc")
APPROXIMATE_SCHEMES = ("expander", "pairwise", "bernoulli")
SCHEMES = (*PAPER_SCHEMES, "hetero-crc", "comm-efficient", *APPROXIMATE_SCHEMES)
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
    "hetero-crc": {"cache_size", "speeds"},
    "comm-efficient": {"cache_size", "split"},
    **{scheme: {"cache_size", "wait", "decoder"} for scheme in APPROXIMATE_SCHEMES},
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
        return float(np.max(np.abs(self._combined(vector) - 1.0), initial=0.0))

    def decode_error(self, vector):
        """||vector @ B - 1||^2 / n_partitions: a decoded gradient's squared error per
        partition, for partition gradients of unit norm (0 for an exact decode)."""
        return float(np.sum((self._combined(vector) - 1.0) ** 2) / self.n_partitions)

    def _combined(self, vector):
        """vector @ B from B's non-zeros (B is sparse: s + 1 non-zeros a row)."""
        return np.bincount(self._entry_cols, weights=vector[self._entry_rows] * self._entry_values,
                           minlength=self.n_partitions)

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
    deterministically (``select_cyclic_design``), by the product of the
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
                 seed=0, cache_size=DEFAULT_CACHE_SIZE, design=None):
        n, s = n_workers, n_stragglers
        self.construction = construction
        if construction == "cyclic-mds":
            design = select_cyclic_design(n, s) if design is None else design
            self.multiplier, self.negacyclic = design.multiplier, bool(design.twist)
            self._base, self._kernel, self._a0 = design.matrix(), design.kernel, design.a0
        else:
            self.multiplier = self.negacyclic = None
            self._base = paper_random_matrix(n, s, np.random.default_rng(seed))
            self._a0, self._kernel = svd_decode_basis(self._base, n - s)
        super().__init__("crc", n, s, _expand(self._base, n_partitions), np.arange(n),
                         cache_size=cache_size)
        if self.residual(self._a0) > self.decode_tolerance:
            raise RuntimeError(f"crc {construction} construction for n={n}, s={s} "
                               f"failed its full-set decode check")

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

    Parameters
    ----------
    scheme : str
        One of SCHEMES (module docstring).
    n_workers : int
        n, the workers.
    n_stragglers : int
        s, the stragglers tolerated (0 for naive).
    n_partitions : int, optional
        Default n_workers (n(P - s) for the partial schemes); a multiple of the
        default is also accepted (of n/(s + 1) for frc): every partition of the
        base code becomes a group of consecutive partitions with the same
        coefficient.
    seed : int
        The random construction's draw.
    **options
        construction (crc, partial-crc; one of CONSTRUCTIONS),
        partitions_per_worker (partial schemes; >= s + 2, default s + 2),
        speeds (hetero-crc: one relative speed per worker),
        split (comm-efficient: m, the pieces a gradient is split into, default 2),
        wait (approximate schemes: arrivals to decode after, default n - s),
        decoder (approximate schemes: "optimal" (default) or "fast"),
        cache_size (decode-cache entries, default 4096; 0 disables it).

    Returns
    -------
    GradientCode
        Its B, placement (partitions_of, messages_of) and decoder (decode).

    Raises
    ------
    ValueError
        Invalid parameters, with a one-line message.
    """
    params = _validate(scheme, n_workers, n_stragglers, n_partitions, seed, options)
    n, s, k = params["n_workers"], params["n_stragglers"], params["n_partitions"]
    cache_size = params["cache_size"]
    if scheme in APPROXIMATE_SCHEMES:
        from .approximate import make_approximate_code

        return make_approximate_code(scheme, n, s, n_partitions=k, seed=params["seed"],
                                     wait=options.get("wait"),
                                     decoder=options.get("decoder", "optimal"),
                                     cache_size=cache_size)
    if scheme == "hetero-crc":
        from .generator_codes import HeteroCyclicCode

        if options.get("speeds") is None:
            raise ValueError("hetero-crc needs the workers' relative speeds: speeds=[...] "
                             "(--speeds 1,1,0.5,...), one per worker")
        return HeteroCyclicCode(n, s, speeds=options["speeds"], n_partitions=k,
                                cache_size=cache_size)
    if scheme == "comm-efficient":
        from .generator_codes import CommEfficientCode

        return CommEfficientCode(n, s, options.get("split", 2), n_partitions=k,
                                 cache_size=cache_size)
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


class ArrivalDecoder:
    """Decodes as messages arrive: the earliest decodable prefix of an arrival order.

    ``add(message)`` records one more arrived message and returns the decode
    vector of everything arrived so far, or None while it does not decode. The
    master's assembler and ``earliest_decodable_prefix`` both decode this way.
    """

    def __init__(self, code):
        self.code = code
        self.mask = np.zeros(code.n_messages, dtype=bool)
        self.arrived = []

    def reset(self):
        """Forget every arrival (a new iteration)."""
        self.mask[:] = False
        self.arrived = []

    def add(self, message, *, decode=True):
        """Record `message`; its decode vector so far (None: not decodable, or not asked)."""
        self.arrived.append(int(message))
        self.mask[message] = True
        return self.code.decode_mask(self.mask) if decode else None


def earliest_decodable_prefix(code, order, *, shortest=1):
    """(length, decode vector) of the shortest prefix of `order` that decodes, or (None, None).

    order: distinct message indices in arrival order. shortest: a length below
    which no prefix can decode (e.g. ``fewest_decoding_messages``); shorter
    prefixes are not tried.
    """
    decoder = ArrivalDecoder(code)
    for length, message in enumerate(order, start=1):
        vector = decoder.add(message, decode=length >= shortest)
        if vector is not None:
            return length, vector
    return None, None


def placement(scheme, n_workers, n_stragglers, *, partitions_per_worker=None):
    """Per worker, the partitions each of its messages covers, in send order, without B.

    The layout every code of ``make_code`` uses with its default n_partitions
    (module docstring); it scales to any n, for the simulator.
    """
    _paper_scheme_only(scheme)
    n, s, P = n_workers, n_stragglers, partitions_per_worker
    if scheme.startswith("partial-") and P is None:
        P = s + 2
    base = scheme[len("partial-"):] if scheme.startswith("partial-") else scheme
    layout = []
    for worker in range(n):
        if base in ("naive", "ignore"):
            shared = np.array([worker])
        elif base == "frc":
            shared = (worker // (s + 1)) * (s + 1) + np.arange(s + 1)
        else:
            shared = (worker + np.arange(s + 1)) % n
        if base == scheme:
            layout.append([shared])
        else:
            layout.append([n + worker * (P - s - 1) + np.arange(P - s - 1), shared])
    return layout


def message_partitions(code):
    """(n_messages, n_partitions) bool: the partitions each message of `code` combines (a
    communication-efficient code's B has one column per piece of a partition)."""
    holds = code.B != 0
    if holds.shape[1] == code.n_partitions:
        return holds
    return holds.reshape(code.n_messages, code.n_partitions, -1).any(axis=2)


def fewest_decoding_messages(scheme, n_workers, n_stragglers):
    """A number of messages below which no arrived set can decode (cover bounds; 1 for the
    schemes beyond the paper's, whose decodable sets depend on their options)."""
    n, s = n_workers, n_stragglers
    if scheme.startswith("partial-"):
        return n + fewest_decoding_messages(scheme[len("partial-"):], n, s)
    if scheme in ("frc", "crc"):
        return -(-n // (s + 1))
    return {"naive": n, "ignore": n - s}.get(scheme, 1)


def structural_decode(scheme, n_workers, n_stragglers, arrival, **options):
    """When each row of arrivals decodes by the schemes' structural rules, without building B.

    arrival: (rows, n_messages) arrival times (inf: never). Rules: naive all n;
    ignore any n - s; frc the first message of every group; crc any n - s
    (exact for the random construction; the cyclic-MDS codes can decode a
    little earlier on some sets, which ``earliest_decodable_prefix`` finds);
    partial-* all first messages and the frc/crc rule on the coded ones.
    Returns (decode time (rows,), combined (rows, n_messages) bool: the
    messages with a non-zero decode coefficient); inf and none combined when
    a row never decodes. Takes make_code's options, and validates like it.
    """
    _paper_scheme_only(scheme)
    params = _validate(scheme, n_workers, n_stragglers, None, 0, options)
    n, s = params["n_workers"], params["n_stragglers"]
    arrival = np.atleast_2d(np.asarray(arrival, dtype=np.float64))
    n_messages = 2 * n if scheme.startswith("partial-") else n
    if arrival.shape[1] != n_messages:
        raise ValueError(f"arrival must have {n_messages} columns (one per message), "
                         f"got {arrival.shape[1]}")
    if scheme.startswith("partial-"):
        coded_time, coded = _structural_rule(scheme[len("partial-"):], n, s, arrival[:, 1::2])
        decode = np.maximum(arrival[:, 0::2].max(axis=1), coded_time)
        combined = np.ones_like(arrival, dtype=bool)
        combined[:, 1::2] = coded
    else:
        decode, combined = _structural_rule(scheme, n, s, arrival)
    combined &= np.isfinite(decode)[:, None]
    return decode, combined


def _paper_scheme_only(scheme):
    """The structural rules cover the paper's schemes; the others' layout depends on their
    options and draws, so they need their code (make_code)."""
    if scheme in SCHEMES and scheme not in PAPER_SCHEMES:
        raise ValueError(f"{scheme} has no structural rule: build its code with make_code and "
                         f"use the code's placement and decoder")


def _structural_rule(scheme, n, s, arrival):
    """(decode time, combined) of naive/ignore/frc/crc on worker-indexed arrivals (rows, n)."""
    rows = arrival.shape[0]
    if scheme == "frc":
        groups = arrival.reshape(rows, n // (s + 1), s + 1)
        first = np.argmin(groups, axis=2)
        decode = np.take_along_axis(groups, first[..., None], axis=2)[..., 0].max(axis=1)
        combined = np.zeros_like(groups, dtype=bool)
        np.put_along_axis(combined, first[..., None], True, axis=2)
        return decode, combined.reshape(rows, n)
    needed = n if scheme == "naive" else n - s
    decode = np.partition(arrival, needed - 1, axis=1)[:, needed - 1]
    return decode, arrival <= decode[:, None]


def _validate(scheme, n_workers, n_stragglers, n_partitions, seed, options):
    """Check make_code's parameters; return them normalised (one-line ValueErrors)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}")
    unknown = sorted(set(options) - _OPTIONS[scheme])
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for scheme {scheme!r}; valid options: "
                         f"{', '.join(sorted(_OPTIONS[scheme]))}")
    n = check_integer("n_workers", n_workers, 1, "an integer >= 1")
    s = check_integer("n_stragglers", n_stragglers, 0, f"an integer in [0, n_workers) = [0, {n})")
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
              "seed": check_integer("seed", seed, 0, "an integer >= 0"),
              "cache_size": check_integer("cache_size",
                                          options.get("cache_size", DEFAULT_CACHE_SIZE), 0),
              "construction": options.get("construction", "cyclic-mds")}
    if params["construction"] not in CONSTRUCTIONS:
        raise ValueError(f"construction must be one of {', '.join(CONSTRUCTIONS)}, "
                         f"got {params['construction']!r}")
    if scheme not in PAPER_SCHEMES:
        params["n_partitions"] = (None if n_partitions is None else
                                  check_integer("n_partitions", n_partitions, 1))
        return params
    if scheme.startswith("partial-"):
        P = check_integer("partitions_per_worker", options.get("partitions_per_worker", s + 2),
                          s + 2, f"an integer >= n_stragglers + 2 = {s + 2}")
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
        k = check_integer("n_partitions", n_partitions, 1, what)
        if k % unit:
            raise ValueError(f"n_partitions for {scheme} must be {what}, default {default}; "
                             f"got {k}")
        params["n_partitions"] = k
    return params


def check_integer(name, value, minimum, valid=None):
    """`value` as an int; a one-line ValueError unless it is an integer >= minimum."""
    valid = valid or f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be {valid}, got {value!r}")
    return int(value)


def _expand(base, n_partitions):
    """Split every base partition into n_partitions / k consecutive ones, same coefficient."""
    return np.repeat(base, n_partitions // base.shape[1], axis=1)
