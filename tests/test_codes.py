"""Tests for gc_fast.codes: exact decoding over straggler patterns, earliest decoding,
caching, placement, parameter validation, conditioning and the structural prefix rule."""
from itertools import combinations
from math import comb

import numpy as np
import pytest

from gc_fast.codes import (
    DECODE_TOLERANCE,
    earliest_decodable_prefix,
    make_code,
    placement,
    structural_decode,
)

EXHAUSTIVE_LIMIT = 20_000
N_SAMPLED = 10_000


def straggler_sets(n, s, seed=0, limit=EXHAUSTIVE_LIMIT, n_samples=N_SAMPLED):
    """All s-subsets of range(n) when there are at most `limit`, else `n_samples` random ones."""
    if comb(n, s) <= limit:
        return np.array(list(combinations(range(n), s)), dtype=np.int64).reshape(comb(n, s), s)
    keys = np.random.default_rng(seed).random((n_samples, n))
    return np.sort(np.argpartition(keys, s, axis=1)[:, :s], axis=1)


def coded_message(code, worker):
    """The message that carries a worker's coded (straggler-protected) contribution."""
    return code.messages_of(worker)[-1]


def decode_patterns(code, stragglers):
    """Decode every pattern (rows of straggling workers): (vectors, missing-message mask, refused)."""
    vectors = np.zeros((len(stragglers), code.n_messages))
    missing = np.zeros((len(stragglers), code.n_messages), dtype=bool)
    refused = []
    all_messages = np.arange(code.n_messages)
    for row, workers in enumerate(stragglers):
        lost = [coded_message(code, w) for w in workers]
        missing[row, lost] = True
        vector = code.decode(np.delete(all_messages, lost))
        if vector is None:
            refused.append(tuple(workers))
        else:
            vectors[row] = vector
    return vectors, missing, refused


EXACT_CASES = [
    ("naive", 10, 0, {}),
    ("frc", 6, 1, {}),
    ("frc", 8, 7, {}),
    ("frc", 12, 3, {}),
    ("frc", 20, 4, {}),
    ("frc", 30, 5, {}),
    ("frc", 100, 4, {}),
    ("frc", 100, 9, {}),
    ("crc", 1, 0, {}),
    ("crc", 7, 0, {}),
    ("crc", 4, 1, {}),
    ("crc", 4, 2, {}),
    ("crc", 5, 2, {}),
    ("crc", 5, 3, {}),
    ("crc", 6, 5, {}),
    ("crc", 12, 2, {}),
    ("crc", 12, 3, {}),
    ("crc", 13, 3, {}),
    ("crc", 20, 4, {}),
    ("crc", 20, 5, {}),
    ("crc", 21, 4, {}),
    ("crc", 30, 3, {}),
    ("crc", 50, 5, {}),
    ("crc", 64, 6, {}),
    ("crc", 99, 5, {}),
    ("crc", 99, 7, {}),
    ("crc", 100, 4, {}),
    ("crc", 12, 3, {"construction": "random"}),
    ("crc", 13, 4, {"construction": "random"}),
    ("crc", 20, 4, {"construction": "random"}),
    ("partial-frc", 12, 3, {"partitions_per_worker": 5}),
    ("partial-frc", 20, 4, {"partitions_per_worker": 8}),
    ("partial-crc", 12, 3, {"partitions_per_worker": 5}),
    ("partial-crc", 13, 4, {"partitions_per_worker": 7}),
    ("partial-crc", 50, 5, {"partitions_per_worker": 7}),
    ("partial-crc", 12, 2, {"partitions_per_worker": 4, "construction": "random"}),
]


@pytest.mark.parametrize("scheme, n, s, options", EXACT_CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}-{'-'.join(map(str, c[3].values()))}"
                              for c in EXACT_CASES])
def test_every_promised_pattern_decodes_exactly(scheme, n, s, options):
    code = make_code(scheme, n, s, **options)
    stragglers = straggler_sets(n, s)
    vectors, missing, refused = decode_patterns(code, stragglers)
    assert refused == []
    assert np.abs(vectors @ code.B - 1.0).max() <= 1e-9
    assert not vectors[missing].any()


@pytest.mark.parametrize("n, s", [(100, 8), (100, 9), (100, 10), (99, 10)])
def test_large_crc_refuses_only_rare_sets_float64_cannot_certify(n, s):
    code = make_code("crc", n, s)
    stragglers = straggler_sets(n, s, seed=1)
    vectors, missing, refused = decode_patterns(code, stragglers)
    assert len(refused) <= 50  # at most 0.5% of the sampled sets
    decoded = vectors.any(axis=1)
    assert decoded.sum() == len(stragglers) - len(refused)
    assert np.abs(vectors[decoded] @ code.B - 1.0).max() <= DECODE_TOLERANCE
    assert not vectors[missing].any()
    for workers in refused:
        # The decode vector is unique; rounding it and summing s + 1 products in float64
        # already costs about (s + 2) * eps * max_j sum_i |a_i B_ij|.
        arrived = np.delete(np.arange(n), workers)
        vector = np.linalg.lstsq(code.B[arrived].T, np.ones(n), rcond=None)[0]
        amplification = (np.abs(vector) @ np.abs(code.B[arrived])).max()
        assert (s + 2) * np.finfo(float).eps * amplification > 0.2 * DECODE_TOLERANCE


def test_frc_decodes_with_one_message_per_group_before_n_minus_s():
    code = make_code("frc", 12, 3)
    vector = code.decode([8, 4, 0])
    assert vector is not None
    np.testing.assert_array_equal(np.flatnonzero(vector), [0, 4, 8])
    np.testing.assert_array_equal(vector @ code.B, np.ones(12))
    assert not code.is_decodable(range(8))  # 8 arrivals, but group 2 is missing entirely
    assert code.is_decodable([1, 5, 11])


def test_crc_decodes_early_on_sets_that_already_span_ones():
    code = make_code("crc", 4, 1)  # generator x + 1: rows 0 and 2 add up to all-ones
    vector = code.decode([0, 2])
    assert vector is not None
    assert np.abs(vector @ code.B - 1.0).max() <= 1e-12
    assert vector[1] == vector[3] == 0.0
    assert not code.is_decodable([0, 1])
    assert not code.is_decodable([1])


def spans_ones(B, rows):
    if len(rows) == 0:
        return False
    coefficients = np.linalg.lstsq(B[rows].T, np.ones(B.shape[1]), rcond=None)[0]
    return np.abs(coefficients @ B[rows] - 1.0).max() <= 1e-9


@pytest.mark.parametrize("n, s, construction", [(4, 1, "cyclic-mds"), (6, 2, "cyclic-mds"),
                                                (8, 3, "cyclic-mds"), (9, 4, "cyclic-mds"),
                                                (10, 4, "cyclic-mds"), (8, 2, "random"),
                                                (9, 3, "random")])
def test_crc_is_decodable_is_exact_on_every_subset(n, s, construction):
    code = make_code("crc", n, s, construction=construction)
    for size in range(n + 1):
        for rows in combinations(range(n), size):
            expected = spans_ones(code.B, list(rows))
            assert code.is_decodable(rows) == expected, rows
            if size >= n - s:
                assert expected


def test_partial_needs_every_first_message():
    code = make_code("partial-crc", 6, 1, partitions_per_worker=4)
    everything = np.arange(code.n_messages)
    assert code.is_decodable(everything)
    assert code.is_decodable(np.delete(everything, [3]))  # worker 1's coded message late
    assert not code.is_decodable(np.delete(everything, [2]))  # worker 1's first message late
    assert not code.is_decodable(np.delete(everything, [3, 5]))  # two coded messages, s = 1
    vector = code.decode(np.delete(everything, [3]))
    np.testing.assert_array_equal(vector[0::2], np.ones(6))


def test_decode_is_cached_per_arrived_set_and_bounded():
    code = make_code("crc", 10, 2, cache_size=4)
    first = code.decode([0, 1, 2, 3, 4, 5, 6, 7])
    for same in ([7, 6, 5, 4, 3, 2, 1, 0], (0, 1, 2, 3, 4, 5, 6, 7, 7), {0, 1, 2, 3, 4, 5, 6, 7},
                 np.arange(8), range(8)):
        assert code.decode(same) is first
    hits, misses, size, maximum = code.cache_info()
    assert (hits, misses, size, maximum) == (5, 1, 1, 4)
    with pytest.raises(ValueError):
        first[0] = 1.0  # cached vectors are read-only
    for stragglers in combinations(range(10), 2):
        code.decode(np.delete(np.arange(10), stragglers))
    assert code.cache_info()[2] == 4
    uncached = make_code("crc", 10, 2, cache_size=0)
    a, b = uncached.decode(range(8)), uncached.decode(range(8))
    assert a is not b
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, first)


def test_decode_tolerance_guards_what_is_returned():
    arrived = [0, 1, 2, 4, 5, 7, 8, 9, 10]
    crc = make_code("crc", 12, 3)
    assert 0 < crc.residual(crc.decode(arrived)) <= DECODE_TOLERANCE
    strict_crc, strict_frc = make_code("crc", 12, 3), make_code("frc", 12, 3)
    strict_crc.decode_tolerance = strict_frc.decode_tolerance = 0.0
    assert strict_crc.decode(arrived) is None
    assert strict_frc.decode(arrived) is not None  # 0/1 coefficients: exact in floating point


def test_ignore_is_approximate_by_design():
    code = make_code("ignore", 10, 3)
    assert code.exact is False
    assert not code.is_decodable(range(6))
    vector = code.decode([9, 0, 1, 2, 3, 4, 5])
    np.testing.assert_allclose(vector[[0, 1, 2, 3, 4, 5, 9]], 10 / 7)
    np.testing.assert_array_equal(vector[[6, 7, 8]], 0.0)
    combined = vector @ code.B
    np.testing.assert_array_equal(combined[[6, 7, 8]], 0.0)
    assert code.decode(range(8)) @ code.B @ np.ones(10) == pytest.approx(10.0)
    np.testing.assert_array_equal(code.decode(range(10)), np.ones(10))


PLACEMENT_CASES = [("naive", 5, 0, {}), ("ignore", 6, 2, {}), ("frc", 12, 3, {}), ("crc", 9, 2, {}),
                   ("crc", 8, 1, {}), ("crc", 7, 1, {}), ("crc", 6, 2, {}),
                   ("crc", 8, 3, {"construction": "random"}), ("crc", 10, 2, {"n_partitions": 30}),
                   ("frc", 12, 2, {"n_partitions": 4}), ("frc", 12, 2, {"n_partitions": 24}),
                   ("partial-frc", 6, 1, {"partitions_per_worker": 4}),
                   ("partial-crc", 7, 2, {"partitions_per_worker": 6}),
                   ("partial-crc", 5, 1, {"partitions_per_worker": 3, "n_partitions": 20})]


@pytest.mark.parametrize("scheme, n, s, options", PLACEMENT_CASES)
def test_placement_matches_the_support_of_B(scheme, n, s, options):
    code = make_code(scheme, n, s, **options)
    assert code.B.dtype == np.float64 and code.B.shape == (code.n_messages, code.n_partitions)
    assert code.message_worker.dtype == np.int64 and code.message_worker.shape == (code.n_messages,)
    per_worker = 2 if scheme.startswith("partial") else 1
    assert code.n_messages == per_worker * n
    for worker in range(n):
        messages = code.messages_of(worker)
        assert messages.dtype == np.int64
        np.testing.assert_array_equal(messages, per_worker * worker + np.arange(per_worker))
        np.testing.assert_array_equal(code.message_worker[messages], worker)
        support = np.flatnonzero((code.B[messages] != 0).any(axis=0))
        partitions = code.partitions_of(worker)
        assert partitions.dtype == np.int64
        np.testing.assert_array_equal(partitions, support)
    holders = np.array([(code.B[code.messages_of(w)] != 0).any(axis=0) for w in range(n)])
    replication = holders.sum(axis=0)
    if scheme in ("frc", "crc"):
        assert (replication == s + 1).all()
        assert (holders.sum(axis=1) == (s + 1) * code.n_partitions // n).all()
    if scheme.startswith("partial"):
        P = options["partitions_per_worker"]
        group = code.n_partitions // (n * (P - s))
        shared = n * group
        assert (replication[:shared] == s + 1).all() and (replication[shared:] == 1).all()
        assert (holders.sum(axis=1) == P * group).all()


def test_crc_and_frc_hold_the_papers_partitions():
    crc = make_code("crc", 7, 2)
    for worker in range(7):
        np.testing.assert_array_equal(crc.partitions_of(worker),
                                      np.sort((worker + np.arange(3)) % 7))
    frc = make_code("frc", 6, 2)
    for worker in range(6):
        np.testing.assert_array_equal(frc.partitions_of(worker), 3 * (worker // 3) + np.arange(3))
        np.testing.assert_array_equal(frc.B[worker][frc.B[worker] != 0], 1.0)
    partial = make_code("partial-frc", 4, 1, partitions_per_worker=4)  # 2 private pieces each
    np.testing.assert_array_equal(partial.partitions_of(1), [0, 1, 6, 7])
    np.testing.assert_array_equal(partial.B[2], np.isin(np.arange(12), [6, 7]))


@pytest.mark.parametrize("n_partitions", [30, 50])
def test_split_partitions_keep_the_code(n_partitions):
    base, split = make_code("crc", 10, 3), make_code("crc", 10, 3, n_partitions=n_partitions)
    np.testing.assert_array_equal(split.B, np.repeat(base.B, n_partitions // 10, axis=1))
    arrived = [0, 2, 3, 4, 6, 7, 9]
    np.testing.assert_allclose(split.decode(arrived), base.decode(arrived))


INVALID = [
    (("crc", 5, 5), {}, r"n_stragglers must be an integer in \[0, n_workers\) = \[0, 5\)"),
    (("crc", 5, -1), {}, r"n_stragglers must be"),
    (("crc", 0, 0), {}, r"n_workers must be an integer >= 1"),
    (("crc", 5.0, 1), {}, r"n_workers must be an integer"),
    (("crc", 5, 1.5), {}, r"n_stragglers must be"),
    (("crc", True, 0), {}, r"n_workers must be"),
    (("naive", 5, 1), {}, r"naive tolerates no stragglers"),
    (("frc", 10, 2), {}, r"n_stragglers must be one of \[0, 1, 4, 9\]"),
    (("partial-frc", 10, 2), {}, r"n_stragglers must be one of"),
    (("bogus", 5, 1), {}, r"unknown scheme 'bogus'; valid schemes: naive, ignore"),
    (("crc", 5, 1), {"bogus": 1}, r"unknown option 'bogus' for scheme 'crc'; valid options"),
    (("frc", 6, 1), {"construction": "random"}, r"unknown option 'construction'"),
    (("crc", 5, 1), {"partitions_per_worker": 4}, r"unknown option 'partitions_per_worker'"),
    (("crc", 5, 1), {"construction": "gaussian"}, r"construction must be one of cyclic-mds, random"),
    (("partial-crc", 6, 2), {"partitions_per_worker": 3}, r"partitions_per_worker must be an "
                                                          r"integer >= n_stragglers \+ 2 = 4"),
    (("partial-crc", 6, 2), {"partitions_per_worker": 4.5}, r"partitions_per_worker must be"),
    (("crc", 6, 2), {"n_partitions": 9}, r"n_partitions for crc must be a positive multiple of 6"),
    (("frc", 6, 2), {"n_partitions": 3}, r"positive multiple of 2"),
    (("crc", 6, 2), {"n_partitions": 0}, r"n_partitions must be a positive multiple of 6"),
    (("partial-frc", 6, 2), {"partitions_per_worker": 5, "n_partitions": 12},
     r"multiple of 18"),
    (("crc", 6, 2), {"seed": -1}, r"seed must be an integer >= 0"),
    (("crc", 6, 2), {"cache_size": -1}, r"cache_size must be an integer >= 0"),
]


@pytest.mark.parametrize("args, options, message", INVALID)
def test_invalid_parameters_raise_one_line_value_errors(args, options, message):
    with pytest.raises(ValueError, match=message) as error:
        make_code(*args, **options)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError):
        structural_decode(*args, np.zeros((1, 1)), **options)


def test_bad_workers_and_messages_are_refused():
    code = make_code("crc", 5, 1)
    for bad in (-1, 5, 1.0):
        with pytest.raises(ValueError, match=r"worker must be an integer in \[0, 5\)"):
            code.partitions_of(bad)
    with pytest.raises(ValueError, match=r"arrived message indices must be in \[0, 5\)"):
        code.decode([0, 5])
    with pytest.raises(ValueError, match="boolean mask"):
        code.decode(np.ones(5, dtype=bool))


def worst_condition(B, arrived_sets):
    worst = 0.0
    for start in range(0, len(arrived_sets), 250):
        singular = np.linalg.svd(B[arrived_sets[start:start + 250]], compute_uv=False)
        worst = max(worst, float((singular[:, 0] / singular[:, -1]).max()))
    return worst


def test_default_crc_is_far_better_conditioned_than_the_papers():
    n, s = 50, 5
    arrived_sets = np.sort(np.argsort(np.random.default_rng(0).random((2000, n)), axis=1)[:, :n - s],
                           axis=1)
    default = worst_condition(make_code("crc", n, s).B, arrived_sets)
    paper = np.median([worst_condition(make_code("crc", n, s, construction="random", seed=seed).B,
                                       arrived_sets) for seed in range(9)])
    assert paper / default >= 10, (default, paper)


def decoded_relative_errors(code, stragglers, dtype):
    """Relative errors of the decoded gradient from messages rounded to dtype (decoded sets only)."""
    gradients = np.random.default_rng(0).standard_normal((code.n_partitions, 200))
    messages = (code.B @ gradients).astype(dtype).astype(np.float64)
    exact = gradients.sum(axis=0)
    errors = []
    for workers in stragglers:
        vector = code.decode(np.delete(np.arange(code.n_workers), workers))
        if vector is not None:
            errors.append(np.linalg.norm(vector @ messages - exact) / np.linalg.norm(exact))
    return np.array(errors)


@pytest.mark.parametrize("n, s, median_bound, worst_bound", [(12, 3, 1e-6, 1e-5),
                                                             (50, 5, 1e-5, 1e-3)])
def test_float32_messages_decode_accurately_with_the_default(n, s, median_bound, worst_bound):
    stragglers = straggler_sets(n, s, seed=2, limit=500, n_samples=500)
    default = decoded_relative_errors(make_code("crc", n, s), stragglers, np.float32)
    paper = decoded_relative_errors(make_code("crc", n, s, construction="random"), stragglers,
                                    np.float32)
    assert len(default) == len(stragglers)
    assert np.median(default) <= median_bound and default.max() <= worst_bound
    assert default.max() * 10 <= paper.max()
    assert decoded_relative_errors(make_code("crc", n, s), stragglers, np.float64).max() <= 1e-9


def structural_prefix_length(scheme, n, s, order, **options):
    """Length of the shortest prefix of `order` that structural_decode says decodes, or None
    (messages arrive at times 1, 2, ... in that order; the others never)."""
    n_messages = 2 * n if scheme.startswith("partial-") else n
    order = np.asarray(order, dtype=np.int64)
    arrival = np.full((1, n_messages), np.inf)
    arrival[0, order] = np.arange(1, order.size + 1)
    decode, _ = structural_decode(scheme, n, s, arrival, **options)
    return int(decode[0]) if np.isfinite(decode[0]) else None


STRUCTURAL_CASES = [("naive", 8, 0, {}), ("ignore", 8, 3, {}), ("frc", 12, 3, {}),
                    ("frc", 12, 1, {}), ("crc", 10, 3, {"construction": "random"}),
                    ("partial-frc", 6, 1, {"partitions_per_worker": 3}),
                    ("partial-crc", 7, 2, {"partitions_per_worker": 5, "construction": "random"})]


@pytest.mark.parametrize("scheme, n, s, options", STRUCTURAL_CASES)
def test_structural_prefix_rule_matches_is_decodable(scheme, n, s, options):
    code = make_code(scheme, n, s, **options)
    rng = np.random.default_rng(3)
    for _ in range(100):
        order = rng.permutation(code.n_messages)
        length = structural_prefix_length(scheme, n, s, order, **options)
        assert code.is_decodable(order[:length])
        assert not code.is_decodable(order[:length - 1])
        assert structural_prefix_length(scheme, n, s, order[:length - 1], **options) is None


def test_structural_prefix_rule_bounds_the_default_crc():
    n, s = 10, 3
    code = make_code("crc", n, s)
    rng = np.random.default_rng(4)
    for _ in range(100):
        order = rng.permutation(n)
        length = structural_prefix_length("crc", n, s, order)
        assert length == n - s
        earliest = next(k for k in range(1, n + 1) if code.is_decodable(order[:k]))
        assert earliest <= length


def test_structural_prefix_rule_scales_without_building_B():
    n = 10_000
    order = np.random.default_rng(5).permutation(n)
    assert structural_prefix_length("crc", n, 10, order) == n - 10
    assert structural_prefix_length("ignore", n, 10, order) == n - 10
    assert structural_prefix_length("naive", n, 0, order) == n
    groups = order // 10
    assert structural_prefix_length("frc", n, 9, order) == max(
        np.flatnonzero(groups == g)[0] for g in range(n // 10)) + 1
    partial = np.random.default_rng(6).permutation(2 * n)
    length = structural_prefix_length("partial-crc", n, 10, partial, partitions_per_worker=12)
    first_done = np.flatnonzero(partial % 2 == 0)[-1] + 1
    coded_done = np.flatnonzero(partial % 2 == 1)[n - 10 - 1] + 1
    assert length == max(first_done, coded_done)
    with pytest.raises(ValueError, match="must have 5 columns"):
        structural_decode("crc", 5, 1, np.zeros((2, 7)))


@pytest.mark.parametrize("scheme, n, s, options", STRUCTURAL_CASES + [("crc", 9, 2, {})])
def test_placement_is_the_codes_own(scheme, n, s, options):
    """codes.placement (no B, for the simulator) gives every message's partitions as B does."""
    code = make_code(scheme, n, s, **options)
    layout = placement(scheme, n, s, partitions_per_worker=options.get("partitions_per_worker"))
    for worker, messages in enumerate(layout):
        assert [np.sort(p).tolist() for p in messages] == [
            np.flatnonzero(code.B[m]).tolist() for m in code.messages_of(worker)]


def test_earliest_decodable_prefix_is_the_first_decodable_one():
    code = make_code("crc", 7, 2)
    rng = np.random.default_rng(8)
    for _ in range(50):
        order = rng.permutation(7)
        length, vector = earliest_decodable_prefix(code, order)
        assert code.is_decodable(order[:length]) and not code.is_decodable(order[:length - 1])
        np.testing.assert_array_equal(vector, code.decode(order[:length]))
    assert earliest_decodable_prefix(code, [0, 1, 2]) == (None, None)
