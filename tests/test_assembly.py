"""The master's GradientAssembler (no MPI): earliest decode and the decoded sum."""
import numpy as np
import pytest

from gc_fast.assembly import GradientAssembler
from gc_fast.codes import make_code
from gc_fast.schedule import priority_order


def assembled(code, supports, n_features, partition_gradients, arrivals, storage=None,
              running=False):
    """Write each arriving worker's coded message into its slot until decodable."""
    assembler = GradientAssembler(code, supports, n_features)
    if storage is not None:
        assembler.store_in(storage)
    gradient = np.full(n_features, np.nan)
    assembler.start(gradient if running else None)
    used = 0
    for message in arrivals:
        used += 1
        worker = code.message_worker[message]
        coded = sum(code.B[message, j] * partition_gradients[j] for j in range(code.n_partitions))
        assembler.message_view(message)[:] = coded[supports[worker]]
        if assembler.add(message):
            break
    assert assembler.combine(gradient) is gradient
    return gradient, used


@pytest.mark.parametrize("scheme, s", [("crc", 2), ("frc", 1)])
def test_decodes_at_the_first_decodable_set_to_the_full_gradient(scheme, s):
    rng = np.random.default_rng(0)
    n_workers, n_features = 6, 40
    code = make_code(scheme, n_workers, s)
    columns = [rng.choice(n_features, 12, replace=False) for _ in range(code.n_partitions)]
    partition_gradients = []
    for cols in columns:  # each partition touches only its own columns
        g = np.zeros(n_features)
        g[cols] = rng.standard_normal(len(cols))
        partition_gradients.append(g)
    supports = [np.unique(np.concatenate([columns[j] for j in code.partitions_of(w)]))
                for w in range(n_workers)]
    arrivals = rng.permutation(code.n_messages)
    gradient, used = assembled(code, supports, n_features, partition_gradients, arrivals)
    np.testing.assert_allclose(gradient, sum(partition_gradients), rtol=1e-10, atol=1e-12)
    assert used == next(k for k in range(1, code.n_messages + 1) if code.is_decodable(arrivals[:k]))
    # The same in outside storage (the trainer's shared-memory slots).
    storage = np.full(GradientAssembler(code, supports, n_features).values.shape, np.nan)
    moved, _ = assembled(code, supports, n_features, partition_gradients, arrivals, storage)
    assert np.array_equal(moved, gradient)


def problem(scheme, s, n_workers=6, n_features=40, seed=0):
    rng = np.random.default_rng(seed)
    code = make_code(scheme, n_workers, s)
    columns = [rng.choice(n_features, 12, replace=False) for _ in range(code.n_partitions)]
    partition_gradients = []
    for cols in columns:
        g = np.zeros(n_features)
        g[cols] = rng.standard_normal(len(cols))
        partition_gradients.append(g)
    supports = [np.unique(np.concatenate([columns[j] for j in code.partitions_of(w)]))
                for w in range(n_workers)]
    return code, supports, n_features, partition_gradients


@pytest.mark.parametrize("scheme, s", [("naive", 0), ("crc", 1), ("crc", 2), ("frc", 1),
                                       ("partial-crc", 1)])
def test_running_sum_is_bit_identical_to_a_combine_from_scratch(scheme, s):
    """Whether the expected set decodes first (priority order) or another set does."""
    code, supports, n_features, partition_gradients = problem(scheme, s)
    in_priority_order = [m for w in priority_order(code) for m in code.messages_of(w)]
    rng = np.random.default_rng(1)
    orders = [in_priority_order, in_priority_order[::-1]] + [rng.permutation(code.n_messages)
                                                             for _ in range(5)]
    for arrivals in orders:
        scratch, used = assembled(code, supports, n_features, partition_gradients, arrivals)
        running, used_running = assembled(code, supports, n_features, partition_gradients,
                                          arrivals, running=True)
        assert used_running == used and np.array_equal(running, scratch)
        np.testing.assert_allclose(running, sum(partition_gradients), rtol=1e-10, atol=1e-12)


def test_outside_storage_must_match_the_layout():
    code = make_code("crc", 4, 1)
    supports = [np.arange(5)] * 4
    assembler = GradientAssembler(code, supports, 5)
    with pytest.raises(ValueError, match="20 float64"):
        assembler.store_in(np.zeros(19))
    with pytest.raises(ValueError, match="20 float64"):
        assembler.store_in(np.zeros(20, dtype=np.float32))
