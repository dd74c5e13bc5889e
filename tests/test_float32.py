"""--message-dtype float32: half the bytes on the wire, inexact but close to float64."""
import numpy as np
import pytest
from helpers import max_relative_difference, run_mpi, train

import gc_fast
from gc_fast.codes import make_code
from gc_fast.data import load_data
from gc_fast.problems import SparseLinearProblem

ROWS, FEATURES, SEED, WORKERS = 1200, 3000, 3, 4
SMALL = ["--dataset", "amazon-like", "--rows", ROWS, "--features", FEATURES, "--seed", SEED,
         "--iterations", "12", "--shared-memory", "off"]  # float64 over the same wire
CASES = {"naive": ["--scheme", "naive", "--delay", "count:k=1,seconds=0.03"],
         "crc": ["--scheme", "crc", "--stragglers", "1", "--delay", "count:k=1,seconds=0.03"]}


def message_lengths(scheme, n_stragglers):
    """Values in each message of the trainer's code on SMALL's data (its worker's support)."""
    data = load_data("amazon-like", rows=ROWS, features=FEATURES, seed=SEED)
    code = make_code(scheme, WORKERS, n_stragglers, seed=SEED)
    problem = SparseLinearProblem(data.X_train, data.y_train)
    problem.bind(code)
    supports = problem.supports(code)
    return np.array([len(supports[w]) for w in code.message_worker])


def bytes_per_value_received(results, lengths):
    """bytes_received over the values of the messages the master received, in the iterations
    without stale messages (whose bytes count too but whose sizes the record does not say)."""
    fresh = [it for it in results["iterations"] if it["stale_messages"] == 0]
    assert fresh, "every iteration had a stale message"
    return (sum(it["bytes_received"] for it in fresh)
            / sum(int(lengths[it["used"]].sum()) for it in fresh))


@pytest.mark.parametrize("scheme", CASES)
def test_float32_halves_the_bytes_and_stays_close_to_float64(tmp_path, scheme):
    args = [*SMALL, *CASES[scheme]]
    exact, exact_trajectory = train(WORKERS + 1, args, tmp_path, "float64")
    rounded, trajectory = train(WORKERS + 1, [*args, "--message-dtype", "float32"], tmp_path,
                                "float32")
    summary, exact_summary = rounded["summary"], exact["summary"]
    assert (summary["message_dtype"], exact_summary["message_dtype"]) == ("float32", "float64")
    assert rounded["config"]["message_dtype"] == "float32"
    assert summary["shared_memory"] is False
    # Both ways the bytes halve: each worker's share of the point, and every message.
    sent_ratio = summary["bytes_sent_per_iteration"] / exact_summary["bytes_sent_per_iteration"]
    assert 0.45 <= sent_ratio <= 0.55
    lengths = message_lengths(scheme, 0 if scheme == "naive" else 1)
    assert bytes_per_value_received(exact, lengths) == 8.0
    received_ratio = bytes_per_value_received(rounded, lengths) / 8.0
    assert 0.45 <= received_ratio <= 0.55
    # Inexact, but only at float32's scale; and it converges where float64 does.
    assert 0.0 < max_relative_difference(trajectory, exact_trajectory) < 1e-4
    loss, exact_loss = summary["final_train_loss"], exact_summary["final_train_loss"]
    assert loss == pytest.approx(exact_loss, rel=1e-4)
    assert loss < rounded["iterations"][0]["train_loss"]
    assert summary["max_decode_residual"] <= 1e-9  # the decode itself is as exact as ever
    if scheme == "crc":
        assert any(None in it["arrival"] for it in rounded["iterations"]), "no straggler skipped"


@pytest.mark.parametrize("args, expected", [
    (["--message-dtype", "float16"], "invalid choice"),
    (["--message-dtype", "float32", "--shared-memory", "on"], "invalid choice"),
])
def test_bad_message_dtype_options(tmp_path, args, expected):
    result = run_mpi(3, ["--rows", "400", "--features", "500", "--iterations", "3", "--quiet",
                         *args], tmp_path, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if "gc_fast.train: error:" in line]
    assert len(errors) == 1 and expected in errors[0], result.stderr


def least_squares(message_dtype, **options):
    rng = np.random.default_rng(0)
    A, b = rng.normal(size=(8, 5)), rng.normal(size=8)
    return gc_fast.run(lambda j, w: (A[j] @ w - b[j]) * A[j], np.zeros(5), 8, lr=0.05,
                       iterations=60, n_workers=4, scheme="crc", n_stragglers=1,
                       delay="count:k=1,seconds=0.01", message_dtype=message_dtype, **options)


def test_run_in_local_mode_rounds_like_the_wire():
    exact, rounded = least_squares("float64"), least_squares("float32")
    assert rounded.stats["message_dtype"] == "float32"
    for key in ("bytes_sent", "bytes_received"):
        assert 2 * rounded.history[0][key] == exact.history[0][key] > 0
    difference = np.linalg.norm(rounded.w - exact.w) / np.linalg.norm(exact.w)
    assert 0.0 < difference < 1e-5


def test_run_rejects_an_unknown_message_dtype():
    with pytest.raises(ValueError, match=r"^message_dtype must be one of float64, float32, "
                                         r"got 'float16'$"):
        least_squares("float16")
