"""Tests for gc_fast.generator_codes: exact decoding over straggler sets, the definition of the
messages, heterogeneous loads and placement, early and impossible decodes, and validation."""
from fractions import Fraction
from itertools import combinations
from math import ceil, comb

import numpy as np
import pytest

from gc_fast import generator_codes as gen
from gc_fast.codes import DECODE_TOLERANCE
from gc_fast.generator_codes import CommEfficientCode, HeteroCyclicCode, heterogeneous_loads

SMALL = [(n, s, m) for n in range(4, 9) for s in range(n) for m in range(1, n - s + 1)]


def straggler_sets(n, max_size, n_samples=None, seed=0):
    """Every straggler set of size <= max_size, or n_samples random ones of each size."""
    sets = []
    for size in range(max_size + 1):
        if n_samples is None or comb(n, size) <= n_samples:
            sets += [list(c) for c in combinations(range(n), size)]
        else:
            rng = np.random.default_rng(seed + size)
            sets += [sorted(rng.choice(n, size, replace=False)) for _ in range(n_samples)]
    return sets


def piece_matrix(code):
    """E: E[u, c] = 1 iff column c of B is a piece-u column (m = 1: all ones)."""
    m = getattr(code, "split", 1)
    return np.tile(np.eye(m), code.n_partitions)


def check_decodes(code, stragglers):
    """Every straggler set decodes exactly: A zero outside, max|A @ B - E| <= tolerance."""
    E = piece_matrix(code)
    for missing in stragglers:
        arrived = np.setdiff1d(np.arange(code.n_workers), missing)
        A = code.decode(arrived)
        assert A is not None, f"{code!r}: stragglers {missing} did not decode"
        A = np.atleast_2d(A)
        assert not A.flags.writeable
        assert np.all(A[:, missing] == 0)
        assert np.abs(A @ code.B - E).max() <= DECODE_TOLERANCE


def worker_message(code, worker, gradients):
    """The definition: sum_j sum_u coefficient[j, u] * piece u of g_j, pieces zero-padded."""
    m, p = code.split, gradients.shape[1]
    length = ceil(p / m)
    message = np.zeros(length)
    for row, partition in enumerate(code.partitions_of(worker)):
        for u in range(m):
            piece = gradients[partition, u * length:(u + 1) * length]
            message[:len(piece)] += code.coefficients(worker)[row, u] * piece
    return message


def exact_inverse_rows(matrix, rows):
    """The last `rows` rows of inv(matrix), in exact rational arithmetic (Gauss-Jordan)."""
    size = len(matrix)
    work = [[Fraction(float(v)) for v in row] + [Fraction(int(i == j)) for j in range(size)]
            for i, row in enumerate(matrix)]
    for col in range(size):
        pivot = next(i for i in range(col, size) if work[i][col] != 0)
        work[col], work[pivot] = work[pivot], work[col]
        lead = work[col][col]
        work[col] = [v / lead for v in work[col]]
        for i in range(size):
            if i != col and work[i][col] != 0:
                factor = work[i][col]
                work[i] = [a - factor * b for a, b in zip(work[i], work[col], strict=True)]
    return np.array([[float(v) for v in row[size:]] for row in work[size - rows:]])


# ---- comm-efficient ---------------------------------------------------------------------------

@pytest.mark.parametrize("n, s, m", SMALL)
def test_comm_efficient_every_small_straggler_set(n, s, m):
    code = CommEfficientCode(n, s, m)
    assert code.B.shape == (n, n * m) and code.n_messages == n and code.split == m
    for worker in range(n):
        assert np.array_equal(code.partitions_of(worker), np.sort((worker + np.arange(s + m)) % n))
        assert code.coefficients(worker).shape == (s + m, m)
        others = np.setdiff1d(np.arange(n), code.partitions_of(worker))
        assert np.all(code.B[worker].reshape(n, m)[others] == 0)  # exactly zero off the holders
    check_decodes(code, straggler_sets(n, s))


@pytest.mark.parametrize("n, s, m", [(20, s, m) for s in (1, 2, 3) for m in (1, 2, 3)])
def test_comm_efficient_sampled_n20(n, s, m):
    check_decodes(CommEfficientCode(n, s, m), straggler_sets(n, s, n_samples=300))


@pytest.mark.parametrize("n, s, m", [(5, 1, 2), (6, 2, 2), (6, 1, 3), (7, 2, 1), (8, 3, 3)])
def test_comm_efficient_matches_oracles(n, s, m):
    """With exactly n - s arrivals the decode is the spec's A = last m rows of inv(G[F]):
    checked in exact rational arithmetic on the code's G, and against dense least squares."""
    code = CommEfficientCode(n, s, m)
    G, T = code.G, code.T
    assert np.allclose(G @ T, code.B, atol=1e-13)
    assert np.allclose(T[-m:], piece_matrix(code), atol=1e-13)
    for missing in straggler_sets(n, s)[-comb(n, s):][:12]:
        arrived = np.setdiff1d(np.arange(n), missing)
        A = code.decode(arrived)
        assert np.allclose(A[:, arrived], exact_inverse_rows(G[arrived], m), atol=1e-11)
        dense = np.linalg.lstsq(code.B[arrived].T, piece_matrix(code).T, rcond=None)[0].T
        assert np.allclose(A[:, arrived], dense, atol=1e-10)


@pytest.mark.parametrize("n, s, m, p, repeat", [(6, 1, 2, 11, 1), (7, 2, 3, 10, 2),
                                                 (8, 3, 3, 2, 1), (5, 0, 2, 9, 1),
                                                 (20, 3, 2, 101, 1), (6, 2, 4, 13, 3)])
def test_comm_efficient_recovers_the_gradient(n, s, m, p, repeat):
    """Random per-partition gradients coded as the workers would (coefficients) and decoded with
    A give sum_j g_j; encode/combine agree with the definition; messages are ceil(p / m) long."""
    code = CommEfficientCode(n, s, m, n * repeat)
    assert code.B.shape == (n, n * repeat * m) and code.T.shape == (n - s, n * repeat * m)
    assert np.allclose(code.G @ code.T, code.B, atol=1e-13)
    rng = np.random.default_rng(3)
    gradients = rng.standard_normal((code.n_partitions, p))
    messages = np.array([worker_message(code, w, gradients) for w in range(n)])
    assert messages.shape == (n, ceil(p / m)) == (n, code.message_length(p))
    bounds = code.piece_bounds(p)
    assert bounds[0] == 0 and bounds[-1] == p and len(bounds) == m + 1
    assert np.all(np.diff(bounds)[:-1] == ceil(p / m))
    for w in range(n):
        held = code.partitions_of(w)
        assert np.allclose(code.encode(w, gradients[held]), messages[w], atol=1e-14)
    exact = gradients.sum(axis=0)
    for missing in straggler_sets(n, s, n_samples=10)[-10:]:
        arrived = np.setdiff1d(np.arange(n), missing)
        A = code.decode(arrived)
        garbage = messages.copy()
        garbage[missing] = np.nan  # never read
        decoded = (A[:, arrived] @ messages[arrived]).ravel()[:p]
        assert np.linalg.norm(decoded - exact) <= 1e-10 * np.linalg.norm(exact)
        assert np.allclose(code.combine(A, garbage, p), decoded, rtol=0, atol=1e-12)


def test_comm_efficient_too_few_arrivals():
    code = CommEfficientCode(8, 2, 2)
    assert code.decode([]) is None
    # partition 0 is held by workers 5, 6, 7, 0: one of them leaves it short of m = 2 holders
    assert code.decode([0, 1, 2, 3, 4]) is None
    assert not code.is_decodable([2, 3, 4, 5, 6])  # partition 1 (workers 6, 7, 0, 1): one
    assert code.is_decodable(range(2, 8))


def test_comm_efficient_cache_and_surface():
    code = CommEfficientCode(6, 1, 2, cache_size=2)
    first = code.decode([0, 1, 2, 3, 4])
    assert code.decode(np.array([4, 3, 2, 1, 0])) is first
    mask = np.ones(6, dtype=bool)
    mask[5] = False
    assert code.decode_mask(mask) is first
    code.decode([1, 2, 3, 4, 5])
    code.decode([0, 2, 3, 4, 5])
    assert code.cache_info() == (2, 3, 2, 2)
    assert code.exact and code.scheme == "comm-efficient" and code.n_partitions == 6
    assert code.residual(first) <= code.decode_tolerance
    assert list(code.messages_of(3)) == [3] and code.message_worker.tolist() == list(range(6))
    assert not code.B.flags.writeable
    assert code.decode_condition <= gen.MAX_CONDITION and code.design.startswith(
        ("fourier", "gaussian", "chebyshev"))


# ---- hetero-crc -------------------------------------------------------------------------------

@pytest.mark.parametrize("n, s", [(n, s) for n in range(4, 9) for s in range(n)])
def test_hetero_every_small_straggler_set(n, s):
    speeds = 1.0 + 0.5 * np.sin(np.arange(n))
    code = HeteroCyclicCode(n, s, speeds)
    check_decodes(code, straggler_sets(n, s))
    holders = np.zeros(code.n_partitions, dtype=int)
    for w in range(n):
        holders[code.partitions_of(w)] += 1
    assert np.all(holders == s + 1)


def test_hetero_loads_follow_speeds():
    n, s = 8, 1
    speeds = np.ones(n)
    speeds[[2, 5]] = 0.5
    code = HeteroCyclicCode(n, s, speeds)
    k = code.n_partitions
    ideal = (s + 1) * k * speeds / speeds.sum()
    assert k == 32 and code.loads.sum() == (s + 1) * k and np.all(np.abs(code.loads - ideal) < 1)
    assert code.loads.tolist() == [9, 9, 5, 9, 9, 5, 9, 9]  # 64 / 7 = 9.14 and 4.57
    stops = np.cumsum(code.loads)
    for w in range(n):  # contiguous cyclic ranges [L_{w-1}, L_w) mod k
        expected = np.sort(np.arange(stops[w] - code.loads[w], stops[w]) % k)
        assert np.array_equal(code.partitions_of(w), expected)
    for p in range(k):
        owners = [w for w in range(n) if p in code.partitions_of(w)]
        assert len(set(owners)) == s + 1
    check_decodes(code, [list(c) for c in combinations(range(n), s)])
    equal = HeteroCyclicCode(n, s)
    assert np.all(equal.loads == (s + 1) * equal.n_partitions // n)
    assert np.array_equal(equal.speeds, np.ones(n))


def test_hetero_sampled_n20_and_oracle():
    speeds = np.ones(20)
    speeds[-2:] = 0.5
    for s in (1, 2, 3):
        code = HeteroCyclicCode(20, s, speeds)
        check_decodes(code, straggler_sets(20, s, n_samples=300))
        assert np.allclose(code.G @ code.T, code.B, atol=1e-13)
        assert np.allclose(code.T[-1], 1.0, atol=1e-13)
    arrived = np.arange(3, 20)
    vector = code.decode(arrived)
    oracle = np.linalg.solve(code.G[arrived].T, np.eye(17)[-1])
    assert np.allclose(vector[arrived], oracle, atol=1e-10)


def test_hetero_gradient_and_loads_helper():
    code = HeteroCyclicCode(6, 2, [1, 2, 3, 1, 2, 3], n_partitions=18)
    rng = np.random.default_rng(0)
    gradients = rng.standard_normal((18, 5))
    messages = code.B @ gradients
    vector = code.decode([0, 2, 3, 5])
    assert np.allclose(vector @ messages, gradients.sum(axis=0), rtol=1e-12, atol=1e-12)
    loads = heterogeneous_loads([100.0, 1, 1, 1], 1, 4)  # clipped at k, the rest redistributed
    assert loads.tolist() == [4, 2, 1, 1]  # 4/3 each: the remainder to the lowest index


def test_hetero_early_and_impossible_decodes():
    code = HeteroCyclicCode(4, 1)  # equal loads, (s + 1) | n: workers 0, 2 and 1, 3 hold the same
    assert code.decode([0, 1]) is not None  # 2 < n - s arrivals that cover everything decode
    assert code.decode([0, 2]) is None and code.decode([]) is None
    code = HeteroCyclicCode(8, 1)  # worker w holds 8w, ..., 8w + 7 (mod 32), as does w + 4
    assert code.decode([0, 1, 2, 3]) is not None  # fewer than n - s, each partition once
    assert code.decode([1, 2, 3, 5, 6, 7]) is None  # partitions 0-7 (workers 0, 4) uncovered
    assert code.decode([5]) is None and not code.is_decodable([0, 1, 2, 4, 5, 6])
    uneven = HeteroCyclicCode(7, 2, [1, 1, 2, 1, 1, 3, 1])
    lost = uneven.partitions_of(0)[0]
    holders = [w for w in range(7) if lost in uneven.partitions_of(w)]
    assert uneven.decode(np.setdiff1d(np.arange(7), holders)) is None


@pytest.mark.parametrize("design", gen.DESIGNS)
def test_every_design_decodes(design):
    code = CommEfficientCode(7, 2, 2, design=design)
    assert code.design.split()[0] in (("fourier", "gaussian", "chebyshev") if design == "auto"
                                      else (design,))
    check_decodes(code, straggler_sets(7, 2))
    hetero = HeteroCyclicCode(8, 2, [1, 1, 2, 2, 1, 1, 0.5, 0.5], design=design)
    check_decodes(hetero, straggler_sets(8, 2))


# ---- validation and refusal --------------------------------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda: CommEfficientCode(6, 1, 0), "split must be"),
    (lambda: CommEfficientCode(6, 0, 7), "split must be an integer in \\[1, n_workers\\]"),
    (lambda: CommEfficientCode(6, 4, 3), "n_stragglers must be"),
    (lambda: CommEfficientCode(6, -1, 1), "n_stragglers must be"),
    (lambda: CommEfficientCode(6, 1, 2, 9), "multiple of n_workers = 6"),
    (lambda: CommEfficientCode(6, 1, 2, design="vandermonde"), "design must be one of"),
    (lambda: CommEfficientCode(6, True, 2), "n_stragglers must be"),
    (lambda: HeteroCyclicCode(6, 6), "n_stragglers must be"),
    (lambda: HeteroCyclicCode(6, 1, [1, 2, 3]), "speeds must be 6 positive"),
    (lambda: HeteroCyclicCode(3, 1, [1, -1, 1]), "speeds must be 3 positive"),
    (lambda: HeteroCyclicCode(3, 1, [1, np.nan, 1]), "speeds must be 3 positive"),
    (lambda: HeteroCyclicCode(3, 1, "fast"), "speeds must be 3 positive"),
    (lambda: HeteroCyclicCode(9, 1, n_partitions=4), "n_partitions must be >= "),
    (lambda: CommEfficientCode(6, 1, 2).piece_bounds(0), "n_features must be"),
    (lambda: CommEfficientCode(6, 1, 2).coefficients(6), "worker must be"),
])
def test_bad_parameters(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_refuses_ill_conditioned_constructions(monkeypatch):
    monkeypatch.setattr(gen, "MAX_CONDITION", 3.0)
    with pytest.raises(ValueError, match="exceeds MAX_CONDITION") as info:
        CommEfficientCode(8, 2, 2)
    message = str(info.value)
    assert "\n" not in message and "passes" in message
    suggestion = message.split("; ")[-1]
    for option in suggestion.removesuffix(" passes").split(" or "):
        key, value = option.split("=")
        n, s = (8, int(value)) if key == "n_stragglers" else (int(value), 2)
        assert CommEfficientCode(n, s, 2).decode_condition <= 3.0
    with pytest.raises(ValueError, match="exceeds MAX_CONDITION"):
        HeteroCyclicCode(10, 3, np.linspace(1, 2, 10))


def test_refuses_at_the_real_threshold():
    with pytest.raises(ValueError, match="exceeds MAX_CONDITION = 1e[+]05") as info:
        CommEfficientCode(30, 10, 3)
    assert "\n" not in str(info.value) and "n_stragglers=9" in str(info.value)
    assert CommEfficientCode(30, 9, 3).decode_condition <= gen.MAX_CONDITION
