"""Tests for gc_fast.approximate: expander, pairwise and Bernoulli codes, their placement, the
optimal (least-squares) and fast (uniform) decoders against independent oracles, the pairwise
closed form, wait semantics, determinism and parameter validation."""
from itertools import product

import numpy as np
import pytest
import scipy.linalg

from gc_fast.approximate import (
    APPROXIMATE_SCHEMES,
    DECODERS,
    ApproximateCode,
    PairwiseCode,
    make_approximate_code,
    random_regular_graph,
    second_eigenvalue,
)

CASES = [
    ("expander", 8, 1), ("expander", 8, 2), ("expander", 9, 1), ("expander", 20, 2),
    ("expander", 6, 4),
    ("pairwise", 6, 1), ("pairwise", 8, 1), ("pairwise", 12, 2), ("pairwise", 20, 1),
    ("pairwise", 20, 3),
    ("bernoulli", 8, 1), ("bernoulli", 8, 2), ("bernoulli", 20, 2), ("bernoulli", 5, 4),
]
IDS = [f"{scheme}-n{n}-s{s}" for scheme, n, s in CASES]


def random_masks(n, count, seed=0):
    """`count` random non-empty arrival masks with sizes spread over 1..n."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(count):
        mask = np.zeros(n, dtype=bool)
        mask[rng.permutation(n)[:rng.integers(1, n + 1)]] = True
        masks.append(mask)
    return masks


def oracle_error(code, mask):
    """Least-squares error by projecting 1 onto the span of the arrived rows (pivoted QR)."""
    k = code.n_partitions
    ones = np.ones(k)
    if not mask.any():
        return 1.0
    Q, R, _ = scipy.linalg.qr(code.B[mask].T, mode="economic", pivoting=True)
    diagonal = np.abs(np.diag(R))
    rank = int(np.sum(diagonal > 1e-10 * diagonal[0]))
    basis = Q[:, :rank]
    residual = ones - basis @ (basis.T @ ones)
    return float(residual @ residual / k)


def vertex_sums(code, vector):
    """a @ B on the base blocks."""
    return vector @ code.base_B


@pytest.mark.parametrize(("scheme", "n", "s"), CASES, ids=IDS)
def test_shape_columns_and_placement(scheme, n, s):
    code = make_approximate_code(scheme, n, s, seed=3)
    k = code.n_base_partitions
    assert code.B.shape == (n, k) and code.n_messages == n and not code.exact
    assert code.B.dtype == np.float64 and not code.B.flags.writeable
    np.testing.assert_allclose(code.B.sum(axis=0), 1.0, atol=1e-12)
    holds = code.B != 0
    assert holds.any(axis=1).all() and holds.any(axis=0).all()
    assert code.wait == n - s and code.decoder == "optimal"
    if scheme == "expander":
        assert k == n
        assert (holds.sum(axis=1) == s + 1).all()
        np.testing.assert_allclose(code.B[holds], 1.0 / (s + 1))
        adjacency = code.adjacency
        assert (adjacency == adjacency.T).all() and not adjacency.diagonal().any()
        assert (holds == adjacency).all()
        for worker in range(n):
            np.testing.assert_array_equal(code.partitions_of(worker), np.flatnonzero(adjacency[worker]))
    elif scheme == "pairwise":
        assert k == 2 * n // (s + 1)
        assert (holds.sum(axis=1) == 2).all() and (holds.sum(axis=0) == s + 1).all()
        np.testing.assert_allclose(code.B[holds], 1.0 / (s + 1))
        edges = code.edges
        assert (edges[:, 0] < edges[:, 1]).all()
        assert len({tuple(edge) for edge in edges.tolist()}) == n  # simple graph: no multi-edge
        for worker, (u, v) in enumerate(edges.tolist()):
            np.testing.assert_array_equal(code.partitions_of(worker), [u, v])
    else:
        assert k == n and (holds == code.held).all()
        holders = holds.sum(axis=0)
        np.testing.assert_allclose(code.B, holds / holders)


@pytest.mark.parametrize(("scheme", "n", "s"), CASES, ids=IDS)
@pytest.mark.parametrize("decoder", DECODERS)
def test_full_set_decodes_exactly(scheme, n, s, decoder):
    code = make_approximate_code(scheme, n, s, decoder=decoder, n_partitions=None)
    vector = code.decode_mask(np.ones(n, dtype=bool))
    assert code.decode_error(vector) < 1e-24
    assert code.residual(vector) < 1e-12
    if decoder == "fast":  # the optimal vector need not be 1 where B has a left kernel
        np.testing.assert_allclose(vector, 1.0, atol=1e-10)


@pytest.mark.parametrize(("scheme", "n", "s"), CASES, ids=IDS)
def test_optimal_matches_oracle_and_beats_fast(scheme, n, s):
    code = make_approximate_code(scheme, n, s, seed=1)
    for mask in random_masks(n, 120, seed=n + s):
        optimal = code.optimal_decode(mask)
        fast = code.fast_decode(mask)
        assert not optimal[~mask].any() and not fast[~mask].any()
        assert optimal.dtype == np.float64 and optimal.shape == (n,)
        error = code.decode_error(optimal)
        assert error == pytest.approx(oracle_error(code, mask), abs=1e-9)
        assert error <= code.decode_error(fast) + 1e-12
        # fast: one uniform weight, and no other uniform weight does better
        weight = fast[mask][0]
        assert np.all(fast[mask] == weight)
        for other in (0.9 * weight, 1.1 * weight):
            assert code.decode_error(fast) <= code.decode_error(np.where(mask, other, 0.0)) + 1e-15
        if scheme != "pairwise":
            # minimum norm: the same vector as a complete orthogonal factorisation gives
            reference = scipy.linalg.lstsq(code.base_B[mask].T, np.ones(code.n_base_partitions),
                                           lapack_driver="gelsy", cond=1e-10)[0]
            np.testing.assert_allclose(optimal[mask], reference, atol=1e-7 * max(1.0, np.abs(reference).max()))


@pytest.mark.parametrize(("scheme", "n", "s"), CASES, ids=IDS)
def test_error_decreases_with_arrivals(scheme, n, s):
    code = make_approximate_code(scheme, n, s, seed=2)
    rng = np.random.default_rng(7)
    n_orders = 60
    errors = np.zeros((2, n_orders, n + 1))
    for row in range(n_orders):
        mask = np.zeros(n, dtype=bool)
        errors[:, row, 0] = 1.0
        for count, worker in enumerate(rng.permutation(n), start=1):
            mask[worker] = True
            errors[0, row, count] = code.decode_error(code.optimal_decode(mask))
            errors[1, row, count] = code.decode_error(code.fast_decode(mask))
    # optimal: nested arrival sets can only lower the least-squares error
    assert (np.diff(errors[0], axis=1) <= 1e-12).all()
    # fast: non-increasing on average
    assert (np.diff(errors[1].mean(axis=0)) <= 1e-3).all()
    assert errors[:, :, -1].max() < 1e-24
    assert errors[0, :, 1:-1].mean() < errors[1, :, 1:-1].mean() + 1e-12


def test_n_partitions_expands_blocks():
    for scheme, n, s in [("expander", 8, 1), ("pairwise", 8, 1), ("bernoulli", 8, 2)]:
        base = make_approximate_code(scheme, n, s, seed=4)
        k = base.n_base_partitions
        wide = make_approximate_code(scheme, n, s, seed=4, n_partitions=3 * k)
        assert wide.B.shape == (n, 3 * k) and wide.n_base_partitions == k
        np.testing.assert_array_equal(wide.B, np.repeat(base.B, 3, axis=1))
        for mask in random_masks(n, 20):
            for method in ("optimal_decode", "fast_decode"):
                a, b = getattr(base, method)(mask), getattr(wide, method)(mask)
                np.testing.assert_allclose(a, b, atol=1e-12)
                assert wide.decode_error(b) == pytest.approx(base.decode_error(a), abs=1e-12)
                direct = b @ wide.B - 1.0
                assert wide.decode_error(b) == pytest.approx(direct @ direct / (3 * k), abs=1e-12)


@pytest.mark.parametrize(("n", "s", "seed"), [(6, 1, 0), (6, 1, 1), (6, 1, 2), (6, 1, 5), (8, 1, 5),
                                          (9, 2, 5), (10, 3, 5)])
def test_pairwise_closed_form_exhaustive(n, s, seed):
    """Every one of the 2^n masks: the closed form reaches lstsq's minimum error."""
    code = make_approximate_code("pairwise", n, s, seed=seed)
    for bits in product((False, True), repeat=n):
        mask = np.array(bits)
        closed = code.optimal_decode(mask)
        solved = ApproximateCode.optimal_decode(code, mask)
        assert not closed[~mask].any()
        assert code.decode_error(closed) == pytest.approx(code.decode_error(solved), abs=1e-9)


@pytest.mark.parametrize(("s", "seed"), [(1, 0), (1, 1), (3, 0), (4, 2)])
def test_pairwise_closed_form_sampled(s, seed):
    code = make_approximate_code("pairwise", 20, s, seed=seed)
    for mask in random_masks(20, 400, seed=seed):
        closed = code.optimal_decode(mask)
        solved = ApproximateCode.optimal_decode(code, mask)
        assert code.decode_error(closed) == pytest.approx(code.decode_error(solved), abs=1e-9)
        assert code.decode_error(closed) == pytest.approx(oracle_error(code, mask), abs=1e-9)


def edge_index(code):
    return {tuple(edge): worker for worker, edge in enumerate(code.edges.tolist())}


def find_odd_cycle(code):
    """Edge indices of an odd cycle of the code's graph, or None (depth-first search)."""
    index = edge_index(code)
    k = code.n_base_partitions
    neighbours = [[] for _ in range(k)]
    for u, v in code.edges.tolist():
        neighbours[u].append(v)
        neighbours[v].append(u)

    def extend(path):
        for w in neighbours[path[-1]]:
            if w == path[0] and len(path) >= 3 and len(path) % 2:
                return path
            if w not in path and len(path) < 7:
                found = extend(path + [w])
                if found:
                    return found
        return None

    for start in range(k):
        cycle = extend([start])
        if cycle:
            pairs = zip(cycle, cycle[1:] + cycle[:1], strict=True)
            return cycle, [index[(min(u, v), max(u, v))] for u, v in pairs]
    return None


def test_pairwise_odd_cycle_component_decodes_exactly():
    for seed in range(20):
        code = make_approximate_code("pairwise", 12, 2, seed=seed)
        found = find_odd_cycle(code)
        if found:
            break
    cycle, cycle_edges = found
    mask = np.zeros(code.n_messages, dtype=bool)
    mask[cycle_edges] = True
    sums = vertex_sums(code, code.optimal_decode(mask))
    expected = np.zeros(code.n_base_partitions)
    expected[cycle] = 1.0
    np.testing.assert_allclose(sums, expected, atol=1e-12)
    # a pendant edge keeps the component non-bipartite: its new block is exact too
    index = edge_index(code)
    pendant = next((worker, v if u in cycle else u) for (u, v), worker in index.items()
                   if (u in cycle) != (v in cycle))
    mask[pendant[0]] = True
    expected[pendant[1]] = 1.0
    np.testing.assert_allclose(vertex_sums(code, code.optimal_decode(mask)), expected, atol=1e-12)


def test_pairwise_bipartite_components():
    code = make_approximate_code("pairwise", 20, 3, seed=1)
    index = edge_index(code)
    adjacency = np.zeros((code.n_base_partitions,) * 2, dtype=bool)
    adjacency[code.edges[:, 0], code.edges[:, 1]] = adjacency[code.edges[:, 1], code.edges[:, 0]] = True
    # a path u - v - w with u, w not adjacent: sides {u, w} (p = 2) and {v} (q = 1)
    u, v, w = next((u, v, w) for v in range(code.n_base_partitions)
                   for u in np.flatnonzero(adjacency[v]) for w in np.flatnonzero(adjacency[v])
                   if u < w and not adjacency[u, w])
    mask = np.zeros(code.n_messages, dtype=bool)
    mask[[index[(min(u, v), max(u, v))], index[(min(v, w), max(v, w))]]] = True
    sums = vertex_sums(code, code.optimal_decode(mask))
    p, q = 2, 1
    expected = np.zeros(code.n_base_partitions)
    expected[[u, w]] = 2 * q / (p + q)
    expected[v] = 2 * p / (p + q)
    np.testing.assert_allclose(sums, expected, atol=1e-12)
    assert code.decode_error(code.optimal_decode(mask)) == pytest.approx(oracle_error(code, mask), abs=1e-12)
    # a single edge: p = q = 1, both blocks exact
    single = np.zeros(code.n_messages, dtype=bool)
    single[0] = True
    sums = vertex_sums(code, code.optimal_decode(single))
    assert sums[code.edges[0]].tolist() == pytest.approx([1.0, 1.0])
    assert np.count_nonzero(np.abs(sums) > 1e-15) == 2


def test_pairwise_has_no_linear_solve(monkeypatch):
    code = make_approximate_code("pairwise", 20, 1)

    def refuse(*args, **kwargs):
        raise AssertionError("closed form must not call lstsq")

    monkeypatch.setattr(np.linalg, "lstsq", refuse)
    for mask in random_masks(20, 30):
        code.optimal_decode(mask)


def test_expander_spectral_gap():
    code = make_approximate_code("expander", 20, 2)
    d = 3
    assert code.second_eigenvalue == pytest.approx(second_eigenvalue(code.adjacency))
    assert code.second_eigenvalue < 2 * np.sqrt(d - 1)  # Ramanujan bound, well below d
    assert code.second_eigenvalue < d - 0.3  # 2.59 for seed 0; 2.46-2.62 over seeds 0-9
    complete = make_approximate_code("expander", 6, 4)
    assert (complete.adjacency == ~np.eye(6, dtype=bool)).all()
    assert complete.second_eigenvalue == pytest.approx(1.0)


@pytest.mark.parametrize(("n", "d"), [(10, 3), (11, 4), (12, 7), (9, 8), (16, 1), (7, 0)])
def test_random_regular_graph(n, d):
    adjacency = random_regular_graph(n, d, np.random.default_rng(0))
    assert adjacency.dtype == bool and adjacency.shape == (n, n)
    assert (adjacency == adjacency.T).all() and not adjacency.diagonal().any()
    assert (adjacency.sum(axis=1) == d).all()


@pytest.mark.parametrize("scheme", APPROXIMATE_SCHEMES)
def test_wait_semantics(scheme):
    n, s = 8, 1
    for wait in (None, 3):
        code = make_approximate_code(scheme, n, s, wait=wait)
        K = n - s if wait is None else wait
        assert code.wait == K
        order = np.random.default_rng(1).permutation(n)
        mask = np.zeros(n, dtype=bool)
        assert code.decode_mask(mask) is None and code.decode_now(mask) is None
        for count, worker in enumerate(order, start=1):
            mask[worker] = True
            vector = code.decode_mask(mask)
            now = code.decode_now(mask)
            assert now is not None
            np.testing.assert_array_equal(now, code.optimal_decode(mask))
            if count < K:
                assert vector is None
                assert not code.is_decodable(np.flatnonzero(mask))
            else:
                assert not vector.flags.writeable and not vector[~mask].any()
                np.testing.assert_array_equal(vector, now)
                assert code.decode(np.flatnonzero(mask)) is vector  # cached


def test_fast_decoder_is_configured():
    code = make_approximate_code("expander", 8, 1, decoder="fast", wait=4)
    mask = np.zeros(8, dtype=bool)
    mask[:5] = True
    np.testing.assert_array_equal(code.decode_mask(mask), code.fast_decode(mask))
    mask[:] = False
    mask[0] = True
    np.testing.assert_array_equal(code.decode_now(mask), code.fast_decode(mask))
    assert code.decode_mask(mask) is None
    assert not code.fast_decode(np.zeros(8, dtype=bool)).any()
    assert not code.optimal_decode(np.zeros(8, dtype=bool)).any()


@pytest.mark.parametrize(("scheme", "n", "s"), [("expander", 20, 2), ("pairwise", 20, 1),
                                                 ("bernoulli", 20, 2)])
def test_deterministic_from_seed(scheme, n, s):
    first = make_approximate_code(scheme, n, s, seed=11)
    again = make_approximate_code(scheme, n, s, seed=11)
    other = make_approximate_code(scheme, n, s, seed=12)
    np.testing.assert_array_equal(first.B, again.B)
    assert not np.array_equal(first.B, other.B)
    if scheme != "bernoulli":
        assert first.second_eigenvalue == again.second_eigenvalue


BAD = [
    ("nope", 8, 1, {}, "valid schemes: expander, pairwise, bernoulli"),
    ("expander", 8, 0, {}, "integer in [1, 6]"),
    ("expander", 8, 7, {}, "integer in [1, 6]"),
    ("expander", 9, 2, {}, "odd integer in [1, 7]"),
    ("expander", 2, 1, {}, "none"),
    ("expander", 8, -1, {}, "[0, 8)"),
    ("expander", 8, 1.0, {}, "[0, 8)"),
    ("pairwise", 8, 2, {}, "[0, 1]"),
    ("pairwise", 6, 3, {}, "[0, 1, 2]"),
    ("pairwise", 8, 8, {}, "[0, 8)"),
    ("bernoulli", 8, 8, {}, "[0, 8)"),
    ("bernoulli", 0, 0, {}, "n_workers"),
    ("bernoulli", 8, 1, {"wait": 0}, "[1, 8]"),
    ("bernoulli", 8, 1, {"wait": 9}, "[1, 8]"),
    ("expander", 8, 1, {"wait": 2.5}, "[1, 8]"),
    ("pairwise", 8, 1, {"decoder": "exact"}, "optimal, fast"),
    ("expander", 8, 1, {"n_partitions": 12}, "multiple of its 8"),
    ("pairwise", 20, 3, {"n_partitions": 5}, "multiple of its 10"),
    ("bernoulli", 8, 1, {"n_partitions": 0}, "multiple of 8"),
    ("bernoulli", 8, 1, {"seed": -1}, "seed"),
    ("bernoulli", 8, 1, {"cache_size": -1}, "cache_size"),
]


@pytest.mark.parametrize(("scheme", "n", "s", "options", "names"), BAD,
                         ids=[f"{i}-{case[0]}" for i, case in enumerate(BAD)])
def test_bad_parameters(scheme, n, s, options, names):
    with pytest.raises(ValueError) as error:
        make_approximate_code(scheme, n, s, **options)
    message = str(error.value)
    assert "\n" not in message and names in message


def test_bad_inputs_to_decoders():
    code = make_approximate_code("bernoulli", 8, 1)
    for bad in (np.ones(7, dtype=bool), np.ones(8, dtype=np.int64)):
        with pytest.raises(ValueError, match=r"boolean array of shape \(8,\)"):
            code.optimal_decode(bad)
    with pytest.raises(ValueError, match="valid schemes"):
        ApproximateCode("ignore", 8, 1, np.eye(8))
    with pytest.raises(ValueError, match="base_B must have shape"):
        ApproximateCode("bernoulli", 8, 1, np.eye(7))
    assert isinstance(make_approximate_code("pairwise", 8, 1), PairwiseCode)
