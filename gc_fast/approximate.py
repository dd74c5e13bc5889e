"""Approximate gradient codes: expander, pairwise, Bernoulli assignments and decoders (pure math).

An approximate code gives up exact recovery: after any K = ``wait`` arrivals
(default n - s) the master combines the arrived messages with the decode
vector ``a`` (zero off the arrived set) that makes ``a @ B`` as close to the
all-ones vector as it can, and the gradient it applies is off by
``(a @ B - 1) @ g_partitions``. ``decode_error`` is the mean squared
coefficient error ``||a @ B - 1||^2 / n_partitions``. One message per worker.

Schemes (``make_approximate_code``); every block is a base partition, and
``n_partitions`` may be any positive multiple of the base count (each block
becomes that many consecutive partitions with the same coefficient):

* ``expander`` (Raviv, Tamo, Tandon, Dimakis, ICML 2018): n blocks, worker i
  holds the blocks of its neighbours in a random (s + 1)-regular graph on n
  vertices, the best spectral expander of a few draws; B = adjacency / (s + 1).
* ``pairwise`` (Glasgow & Wootters, 2020): every worker holds two blocks, the
  endpoints of its edge in a random (s + 1)-regular simple graph on
  2n / (s + 1) blocks; B[i, u] = B[i, v] = 1 / (s + 1). Its optimal decoder
  is a closed form on the connected components of the arrived edges.
* ``bernoulli`` (Charles, Papailiopoulos, Ellenberg, 2017): n blocks, each
  (worker, block) pair held with probability (s + 1) / n, repaired so every
  block and every worker holds one; B[i, j] = 1 / (holders of j).

Every column of B sums to 1, so the full set decodes exactly with a = 1.
Decoders: ``optimal`` (least squares on the arrived rows, minimum norm) and
``fast`` (one uniform weight on the arrived workers, the best such weight).
"""
from collections import deque

import numpy as np

from .codes import APPROXIMATE_SCHEMES, DEFAULT_CACHE_SIZE, GradientCode, _expand, check_integer

__all__ = [
    "APPROXIMATE_SCHEMES", "DECODERS", "ApproximateCode", "ExpanderCode", "PairwiseCode",
    "BernoulliCode", "make_approximate_code", "random_regular_graph", "second_eigenvalue",
]

DECODERS = ("optimal", "fast")
GRAPH_DRAWS = 8
SWAPS_PER_EDGE = 10


class ApproximateCode(GradientCode):
    """A gradient code decoded approximately once `wait` workers arrived (exact = False).

    Parameters
    ----------
    scheme : str
        One of APPROXIMATE_SCHEMES (a label; ``base_B`` defines the code).
    n_workers, n_stragglers : int
        n and s; s only sets the default ``wait`` = n - s.
    base_B : array_like, shape (n_workers, n_base_partitions)
        Encoding matrix on the base partitions (blocks).
    n_partitions : int, optional
        A positive multiple of n_base_partitions (default: equal).
    wait : int, optional
        K in [1, n]: arrivals before ``decode_mask`` returns a vector.
    decoder : {"optimal", "fast"}
    cache_size : int
        Decode-cache entries (0 disables it).

    Attributes
    ----------
    wait, decoder, n_base_partitions, base_B (read-only float64).
    """

    exact = False

    def __init__(self, scheme, n_workers, n_stragglers, base_B, *, n_partitions=None, wait=None,
                 decoder="optimal", cache_size=DEFAULT_CACHE_SIZE):
        if scheme not in APPROXIMATE_SCHEMES:
            raise ValueError(f"unknown approximate scheme {scheme!r}; valid schemes: "
                             f"{', '.join(APPROXIMATE_SCHEMES)}")
        n = check_integer("n_workers", n_workers, 1)
        s = _check_stragglers(n_stragglers, n)
        base = np.array(base_B, dtype=np.float64)
        if base.ndim != 2 or base.shape[0] != n or base.shape[1] < 1:
            raise ValueError(f"base_B must have shape (n_workers, n_base_partitions) = ({n}, k) "
                             f"with k >= 1, got {base.shape}")
        if not np.isfinite(base).all():
            raise ValueError("base_B must be finite")
        options = _check_options(scheme, n, s, base.shape[1], n_partitions, wait, decoder,
                                 cache_size)
        self.wait, self.decoder = options["wait"], options["decoder"]
        self.n_base_partitions = base.shape[1]
        base.setflags(write=False)
        self.base_B = base
        super().__init__(scheme, n, s, _expand(base, options["n_partitions"]), np.arange(n),
                         cache_size=options["cache_size"])

    def __repr__(self):
        return (f"{type(self).__name__}(scheme={self.scheme!r}, n_workers={self.n_workers}, "
                f"n_stragglers={self.n_stragglers}, n_partitions={self.n_partitions}, "
                f"wait={self.wait}, decoder={self.decoder!r})")

    def optimal_decode(self, mask):
        """The decode vector supported on `mask` minimising ||a @ B - 1||_2 (minimum norm).

        Parameters
        ----------
        mask : ndarray of bool, shape (n_messages,)
            True for the arrived workers.

        Returns
        -------
        ndarray of float64, shape (n_messages,)
            Zero off the mask (all zeros when nothing arrived).
        """
        mask = self._check_mask(mask)
        vector = np.zeros(self.n_messages)
        arrived = np.flatnonzero(mask)
        if arrived.size:
            ones = np.ones(self.n_base_partitions)
            vector[arrived] = np.linalg.lstsq(self.base_B[arrived].T, ones, rcond=None)[0]
        return vector

    def fast_decode(self, mask):
        """One uniform weight c on the arrived workers, the best one: c = <1, u> / ||u||^2.

        u = B_F^T 1 is the column sum of the arrived rows F. All zeros when
        nothing arrived.
        """
        mask = self._check_mask(mask)
        vector = np.zeros(self.n_messages)
        totals = self.base_B[mask].sum(axis=0)
        norm = float(totals @ totals)
        if norm > 0.0:
            vector[mask] = totals.sum() / norm
        return vector

    def decode_now(self, mask):
        """The configured decoder's vector for `mask` whatever `wait` says; None iff empty.

        For a time budget: the master decodes what it has at the deadline. Not
        cached; a fresh writable array.
        """
        mask = self._check_mask(mask)
        if not mask.any():
            return None
        if self.decoder == "optimal":
            return self.optimal_decode(mask)
        return self.fast_decode(mask)

    def _solve(self, mask):
        if int(np.count_nonzero(mask)) < self.wait:
            return None
        return self.decode_now(mask)

    def _check_mask(self, mask):
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (self.n_messages,):
            raise ValueError(f"mask must be a boolean array of shape ({self.n_messages},), "
                             f"got dtype {mask.dtype} shape {mask.shape}")
        return mask


class ExpanderCode(ApproximateCode):
    """Expander code: worker i holds its neighbours' blocks in an (s + 1)-regular graph.

    The graph is the best spectral expander (smallest second-largest
    |eigenvalue| of the adjacency, ``second_eigenvalue``) of GRAPH_DRAWS
    random (s + 1)-regular graphs drawn from `seed`; the complete graph when
    s + 1 = n - 1. Needs 1 <= s <= n - 2 and n (s + 1) even.

    Attributes
    ----------
    adjacency : ndarray of bool, shape (n, n)
    second_eigenvalue : float
    """

    def __init__(self, n_workers, n_stragglers, *, n_partitions=None, seed=0, wait=None,
                 decoder="optimal", cache_size=DEFAULT_CACHE_SIZE):
        n = check_integer("n_workers", n_workers, 1)
        s = _check_stragglers(n_stragglers, n)
        if not 1 <= s <= n - 2 or n * (s + 1) % 2:
            parity = "" if n % 2 == 0 else "odd "
            span = f"[1, {n - 2}]" if n >= 3 else "(none: n_workers < 3)"
            raise ValueError(f"expander needs an (n_stragglers + 1)-regular graph on n_workers = "
                             f"{n} vertices: n_stragglers must be an {parity}integer in {span}, "
                             f"got {s}")
        seed = check_integer("seed", seed, 0)
        _check_options("expander", n, s, n, n_partitions, wait, decoder, cache_size)
        rng = np.random.default_rng(seed)
        self.adjacency, self.second_eigenvalue = best_expander(n, s + 1, rng)
        self.adjacency.setflags(write=False)
        super().__init__("expander", n, s, self.adjacency / (s + 1), n_partitions=n_partitions,
                         wait=wait, decoder=decoder, cache_size=cache_size)


class PairwiseCode(ApproximateCode):
    """Pairwise code: worker i is edge i = (u, v) of an (s + 1)-regular simple graph on blocks.

    k = 2n / (s + 1) blocks; needs (s + 1) | 2n and k > s + 1. B[i, u] =
    B[i, v] = 1 / (s + 1). The graph is drawn like the expander's (best of
    GRAPH_DRAWS by ``second_eigenvalue``), its edges shuffled onto workers.
    ``optimal_decode`` is the closed form on the components of the arrived
    edges, no linear solve.

    Attributes
    ----------
    edges : ndarray of int64, shape (n, 2)
        The blocks (u < v) worker i holds.
    second_eigenvalue : float
    """

    def __init__(self, n_workers, n_stragglers, *, n_partitions=None, seed=0, wait=None,
                 decoder="optimal", cache_size=DEFAULT_CACHE_SIZE):
        n = check_integer("n_workers", n_workers, 1)
        s = _check_stragglers(n_stragglers, n)
        valid = pairwise_stragglers(n)
        if s not in valid:
            raise ValueError(f"pairwise needs (n_stragglers + 1) to divide 2 * n_workers = {2 * n} "
                             f"and 2 * n_workers / (n_stragglers + 1) > n_stragglers + 1: "
                             f"n_stragglers must be one of {valid}, got {s}")
        seed = check_integer("seed", seed, 0)
        k = 2 * n // (s + 1)
        _check_options("pairwise", n, s, k, n_partitions, wait, decoder, cache_size)
        rng = np.random.default_rng(seed)
        adjacency, self.second_eigenvalue = best_expander(k, s + 1, rng)
        edges = np.argwhere(np.triu(adjacency))
        self.edges = np.ascontiguousarray(edges[rng.permutation(len(edges))], dtype=np.int64)
        self.edges.setflags(write=False)
        base = np.zeros((n, k))
        rows = np.arange(n)
        base[rows, self.edges[:, 0]] = base[rows, self.edges[:, 1]] = 1.0 / (s + 1)
        super().__init__("pairwise", n, s, base, n_partitions=n_partitions, wait=wait,
                         decoder=decoder, cache_size=cache_size)

    def optimal_decode(self, mask):
        """Closed-form least squares on the components of the arrived edges.

        A component with an odd cycle decodes its blocks exactly (vertex sums
        1); a bipartite one with sides of p and q blocks gets vertex sums
        2q / (p + q) on the p-side and 2p / (p + q) on the q-side (the best
        with both sides summing to the same total); blocks on no arrived edge
        get 0. Edge weights come from peeling a BFS spanning tree (plus the
        odd-cycle edge, whose weight closes the root's equation). Same error as
        ``ApproximateCode.optimal_decode``; the vector may differ where the
        least-squares solution is not unique (it is not minimum-norm).
        """
        mask = self._check_mask(mask)
        scale = self.n_stragglers + 1
        vector = np.zeros(self.n_messages)
        arrived = np.flatnonzero(mask).tolist()
        if not arrived:
            return vector
        k = self.n_base_partitions
        ends = self.edges.tolist()
        incident = [[] for _ in range(k)]
        for e in arrived:
            u, v = ends[e]
            incident[u].append((e, v))
            incident[v].append((e, u))
        colour = [-1] * k
        weight = {}  # edge -> x_e / scale, the edge's contribution to both endpoint sums
        for root in range(k):
            if colour[root] >= 0 or not incident[root]:
                continue
            colour[root] = 0
            order, parent, odd_edge = [root], {}, None
            queue = deque([root])
            while queue:
                x = queue.popleft()
                for e, y in incident[x]:
                    if colour[y] < 0:
                        colour[y] = 1 - colour[x]
                        parent[y] = (e, x)
                        order.append(y)
                        queue.append(y)
                    elif colour[y] == colour[x] and odd_edge is None:
                        odd_edge = e
            # need = constant + slope * t: what the edges still to be set must add at a vertex
            if odd_edge is None:
                p = sum(1 for x in order if colour[x] == 0)
                q = len(order) - p
                side = (2.0 * q / (p + q), 2.0 * p / (p + q))
                constant = {x: side[colour[x]] for x in order}
            else:
                constant = dict.fromkeys(order, 1.0)
            slope = dict.fromkeys(order, 0.0)
            if odd_edge is not None:
                for x in ends[odd_edge]:
                    slope[x] -= 1.0
            tree = []
            for x in reversed(order[1:]):
                e, up = parent[x]
                tree.append((e, constant[x], slope[x]))
                constant[up] -= constant[x]
                slope[up] -= slope[x]
            # The root's own need must vanish; bipartite: it does (balanced sides), t unused.
            t = 0.0 if odd_edge is None else -constant[root] / slope[root]
            for e, c, m in tree:
                weight[e] = c + m * t
            if odd_edge is not None:
                weight[odd_edge] = t
        for e, y in weight.items():
            vector[e] = y * scale
        return vector


class BernoulliCode(ApproximateCode):
    """Bernoulli code: each (worker, block) pair held independently with probability (s + 1) / n.

    Drawn from `seed`, then repaired deterministically: a block nobody holds
    goes to the least-loaded worker (lowest index on ties), then a worker with
    no block gets the least-held block. B[i, j] = 1 / (holders of j) where
    held. Needs 0 <= s <= n - 1.

    Attributes
    ----------
    held : ndarray of bool, shape (n, n)
    """

    def __init__(self, n_workers, n_stragglers, *, n_partitions=None, seed=0, wait=None,
                 decoder="optimal", cache_size=DEFAULT_CACHE_SIZE):
        n = check_integer("n_workers", n_workers, 1)
        s = _check_stragglers(n_stragglers, n)
        seed = check_integer("seed", seed, 0)
        _check_options("bernoulli", n, s, n, n_partitions, wait, decoder, cache_size)
        held = np.random.default_rng(seed).random((n, n)) < (s + 1) / n
        for block in np.flatnonzero(~held.any(axis=0)):
            held[np.argmin(held.sum(axis=1)), block] = True
        for worker in np.flatnonzero(~held.any(axis=1)):
            held[worker, np.argmin(held.sum(axis=0))] = True
        held.setflags(write=False)
        self.held = held
        super().__init__("bernoulli", n, s, held / held.sum(axis=0), n_partitions=n_partitions,
                         wait=wait, decoder=decoder, cache_size=cache_size)


def make_approximate_code(scheme, n_workers, n_stragglers, *, n_partitions=None, seed=0,
                          wait=None, decoder="optimal", cache_size=DEFAULT_CACHE_SIZE):
    """Build the approximate gradient code `scheme` (module docstring).

    Parameters
    ----------
    scheme : {"expander", "pairwise", "bernoulli"}
    n_workers : int
        n, one message per worker.
    n_stragglers : int
        s: s + 1 blocks per worker (expander), the graph degree s + 1
        (pairwise), the holding probability (s + 1) / n (bernoulli).
    n_partitions : int, optional
        A positive multiple of the base blocks (n; 2n / (s + 1) for pairwise).
    seed : int
        The random assignment's draw.
    wait : int, optional
        K in [1, n], arrivals before decoding; default n - s.
    decoder : {"optimal", "fast"}
    cache_size : int
        Decode-cache entries (0 disables it).

    Returns
    -------
    ApproximateCode

    Raises
    ------
    ValueError
        Invalid parameters, with a one-line message naming the valid values.
    """
    classes = {"expander": ExpanderCode, "pairwise": PairwiseCode, "bernoulli": BernoulliCode}
    if scheme not in classes:
        raise ValueError(f"unknown approximate scheme {scheme!r}; valid schemes: "
                         f"{', '.join(APPROXIMATE_SCHEMES)}")
    return classes[scheme](n_workers, n_stragglers, n_partitions=n_partitions, seed=seed,
                           wait=wait, decoder=decoder, cache_size=cache_size)


def pairwise_stragglers(n_workers):
    """The n_stragglers values a pairwise code on n_workers workers accepts."""
    n = n_workers
    return [s for s in range(n) if 2 * n % (s + 1) == 0 and 2 * n > (s + 1) ** 2]


def random_regular_graph(n_vertices, degree, rng):
    """A random `degree`-regular simple graph: bool adjacency (symmetric, zero diagonal).

    A circulant graph randomised by SWAPS_PER_EDGE double-edge swaps per edge
    (degree-preserving, connects every such graph), vertices relabelled at
    random; dense degrees through the complement. Needs n_vertices * degree
    even and degree < n_vertices.
    """
    n, d = n_vertices, degree
    if d > (n - 1) / 2:
        adjacency = ~random_regular_graph(n, n - 1 - d, rng)
        np.fill_diagonal(adjacency, False)
        return adjacency
    offsets = list(range(1, d // 2 + 1)) + ([n // 2] if d % 2 else [])
    edges = [(v, (v + o) % n) for o in offsets for v in range(n // 2 if 2 * o == n else n)]
    present = {u * n + v for u, v in edges} | {v * n + u for u, v in edges}
    if len(edges) > 1:
        count = SWAPS_PER_EDGE * len(edges)
        first, second = rng.integers(len(edges), size=(2, count)).tolist()
        flips = (rng.random(count) < 0.5).tolist()
        for i, j, flip in zip(first, second, flips, strict=True):
            a, b = edges[i]
            c, e = edges[j]
            if flip:
                c, e = e, c
            # (a, b), (c, e) -> (a, c), (b, e), unless that makes a loop or a multi-edge
            if a == c or b == e or a * n + c in present or b * n + e in present:
                continue
            present -= {a * n + b, b * n + a, c * n + e, e * n + c}
            present |= {a * n + c, c * n + a, b * n + e, e * n + b}
            edges[i], edges[j] = (a, c), (b, e)
    label = rng.permutation(n)
    adjacency = np.zeros((n, n), dtype=bool)
    if edges:
        ends = label[np.array(edges)]
        adjacency[ends[:, 0], ends[:, 1]] = adjacency[ends[:, 1], ends[:, 0]] = True
    return adjacency


def second_eigenvalue(adjacency):
    """The second-largest |eigenvalue| of a graph's adjacency (d for disconnected or bipartite)."""
    values = np.sort(np.abs(np.linalg.eigvalsh(np.asarray(adjacency, dtype=np.float64))))
    return float(values[-2]) if values.size > 1 else 0.0


def best_expander(n_vertices, degree, rng):
    """(adjacency, second eigenvalue) of the best spectral expander of GRAPH_DRAWS draws."""
    draws = 1 if degree in (0, n_vertices - 1) else GRAPH_DRAWS
    best = None
    for _ in range(draws):
        adjacency = random_regular_graph(n_vertices, degree, rng)
        value = second_eigenvalue(adjacency)
        if best is None or value < best[1] - 1e-12:
            best = adjacency, value
    return best


def _check_stragglers(n_stragglers, n):
    valid = f"an integer in [0, n_workers) = [0, {n})"
    s = check_integer("n_stragglers", n_stragglers, 0, valid)
    if s >= n:
        raise ValueError(f"n_stragglers must be {valid}, got {s}")
    return s


def _check_options(scheme, n, s, k, n_partitions, wait, decoder, cache_size):
    """The shared parameters, normalised (one-line ValueErrors)."""
    if n_partitions is None:
        n_partitions = k
    else:
        n_partitions = check_integer("n_partitions", n_partitions, 1, f"a positive multiple of {k}")
        if n_partitions % k:
            raise ValueError(f"n_partitions for {scheme} must be a positive multiple of its "
                             f"{k} base blocks, got {n_partitions}")
    wait = n - s if wait is None else wait
    valid = f"an integer in [1, n_workers] = [1, {n}]"
    wait = check_integer("wait", wait, 1, valid)
    if wait > n:
        raise ValueError(f"wait must be {valid}, got {wait}")
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    return {"n_partitions": n_partitions, "wait": wait, "decoder": decoder,
            "cache_size": check_integer("cache_size", cache_size, 0)}
