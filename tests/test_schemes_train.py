"""The schemes beyond the paper's in the trainer and in local mode: exact ones follow naive's
trajectory, approximate ones report their error, keep their time budget and still converge."""
import numpy as np
import pytest
from helpers import max_relative_difference, train

from gc_fast.codes import make_code
from gc_fast.data import load_data
from gc_fast.driver import Settings, solve
from gc_fast.generator_codes import heterogeneous_loads
from gc_fast.problems import SparseLinearProblem
from gc_fast.stragglers import parse_delay

SMALL = ["--dataset", "amazon-like", "--rows", "1200", "--features", "3000", "--seed", "3"]
ITERATIONS = ["--iterations", "12"]
STRAGGLER = ["--delay", "count:k=1,seconds=0.03"]


@pytest.fixture(scope="module")
def naive_reference(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("naive")
    return train(5, [*SMALL, *ITERATIONS, "--scheme", "naive"], tmp_path, "naive")


@pytest.mark.parametrize("extra", [
    ["--scheme", "comm-efficient", "--stragglers", "1"],
    ["--scheme", "comm-efficient", "--stragglers", "1", "--split", "3", "--shared-memory", "off"],
    ["--scheme", "hetero-crc", "--stragglers", "1", "--speeds", "1,1,0.5,0.5"],
    ["--scheme", "hetero-crc", "--stragglers", "2", "--speeds", "measure"],
])
def test_exact_schemes_beyond_the_paper_follow_naive(naive_reference, tmp_path, extra):
    results, trajectory = train(5, [*SMALL, *ITERATIONS, *STRAGGLER, *extra], tmp_path, "exact")
    assert max_relative_difference(trajectory, naive_reference[1]) <= 1e-9
    assert sum(a is None for it in results["iterations"] for a in it["arrival"]) > 0
    summary = results["summary"]
    assert summary["exact"] is True and summary["max_decode_residual"] <= 1e-9
    assert max(r["decode_error"] for r in results["iterations"]) < 1e-18
    if "hetero-crc" in extra:
        speeds, loads = np.array(summary["speeds"]), np.array(summary["loads"])
        assert loads.sum() == (int(extra[3]) + 1) * results["config"]["n_partitions"]
        # the placement follows the speeds used (given, or measured): loads as specified
        assert (loads == heterogeneous_loads(speeds, int(extra[3]),
                                             results["config"]["n_partitions"])).all()


def test_comm_efficient_messages_are_shorter_on_dense_data(tmp_path):
    """Dense rows: a message is ceil(p / m) long instead of p, exactly."""
    dense = ["--dataset", "gmm", "--rows", "600", "--features", "401", "--iterations", "4",
             "--shared-memory", "off"]
    crc, crc_trajectory = train(5, [*dense, "--scheme", "crc"], tmp_path, "crc")
    split, split_trajectory = train(5, [*dense, "--scheme", "comm-efficient", "--split", "3"],
                                    tmp_path, "split")
    assert max_relative_difference(split_trajectory, crc_trajectory) <= 1e-9
    for name, results, length in (("crc", crc, 401), ("split", split, 134)):
        for record in results["iterations"]:
            assert record["bytes_received"] >= 8 * length * len(record["used"]), name
        # every message is one worker's full vector: bytes are a multiple of its length
        assert results["iterations"][0]["bytes_received"] % (8 * length) == 0, name


@pytest.mark.parametrize("scheme, options", [
    ("comm-efficient", {"split": 2}),
    ("hetero-crc", {"speeds": [2.0, 1.0, 1.0, 1.0, 0.5, 0.5]}),
])
def test_library_least_squares_reaches_the_dense_solution(scheme, options):
    """gc_fast.run on least squares, local mode with stragglers, against numpy's lstsq."""
    import gc_fast

    rng = np.random.default_rng(4)
    A, b = rng.standard_normal((240, 7)), rng.standard_normal(240)
    k = 24
    rows = np.array_split(np.arange(240), k)

    def partition_gradient(j, w):
        Aj, bj = A[rows[j]], b[rows[j]]
        return Aj.T @ (Aj @ w - bj) / 240

    lr = 240 / np.linalg.norm(A, 2) ** 2
    runs = {name: gc_fast.run(partition_gradient, np.zeros(7), k, lr=lr, scheme=name,
                              n_stragglers=0 if name == "naive" else 1, iterations=400,
                              n_workers=6, delay="count:k=1,seconds=0.01", keep_trajectory=True,
                              code_options=None if name == "naive" else options, local=True)
            for name in ("naive", scheme)}
    assert max_relative_difference(runs[scheme].trajectory, runs["naive"].trajectory) <= 1e-9
    solution = np.linalg.lstsq(A, b, rcond=None)[0]
    assert np.linalg.norm(runs[scheme].w - solution) <= 1e-8 * np.linalg.norm(solution)


@pytest.mark.parametrize("scheme, s, options, extra", [
    ("expander", 2, {}, []),  # n = 4, s = 1 would be a 4-cycle: an FRC, exact
    ("pairwise", 1, {"decoder": "fast"}, ["--decoder", "fast"]),
    ("bernoulli", 1, {"wait": 2}, ["--wait", "2"]),
])
def test_approximate_schemes_report_their_error_and_converge(naive_reference, tmp_path, scheme,
                                                              s, options, extra):
    naive, _ = naive_reference
    results, trajectory = train(5, [*SMALL, *ITERATIONS, "--scheme", scheme, "--stragglers", s,
                                    *STRAGGLER, "--gradient-error-every", "3", *extra],
                                tmp_path, scheme)
    records, summary = results["iterations"], results["summary"]
    assert summary["exact"] is False
    code = make_code(scheme, 4, s, seed=3, **options)
    for record in records:  # the recorded error is the decode of the set the master used
        vector = code.decode(record["used"])
        assert vector is not None
        assert record["decode_error"] == pytest.approx(code.decode_error(vector), abs=1e-12)
    assert max(r["decode_error"] for r in records) > 1e-3  # stragglers were left out
    sampled = [r["iteration"] for r in records if r["gradient_error"] is not None]
    assert sampled == [t for t in range(12) if t % 3 == 0]
    assert all(0 <= r["gradient_error"] < 1 for r in records if r["gradient_error"] is not None)
    # still converges: close to naive's loss, not naive's trajectory
    assert summary["final_train_loss"] < np.log(2)
    assert summary["final_train_loss"] == pytest.approx(naive["summary"]["final_train_loss"],
                                                        rel=0.1)
    assert max_relative_difference(trajectory, naive_reference[1]) > 1e-6


def test_gradient_error_of_an_exact_scheme_is_rounding_only(naive_reference, tmp_path):
    results, trajectory = train(5, [*SMALL, *ITERATIONS, "--scheme", "crc", "--stragglers", "1",
                                    *STRAGGLER, "--gradient-error-every", "2"], tmp_path, "crc")
    errors = [r["gradient_error"] for r in results["iterations"]]
    assert all(e is not None and e < 1e-12 for e in errors[::2])
    assert all(e is None for e in errors[1::2])
    assert max_relative_difference(trajectory, naive_reference[1]) <= 1e-9


@pytest.fixture(scope="module")
def small_problem():
    data = load_data("amazon-like", rows=1200, features=3000, test_fraction=0.2, seed=3)
    return lambda: SparseLinearProblem(data.X_train, data.y_train, "logistic")


def test_a_time_budget_decodes_without_the_delayed_workers(small_problem, tmp_path):
    delay = "fixed:p=0.3,seconds=0.5"
    settings = Settings(lr=1.0, scheme="expander", n_stragglers=1, n_workers=8, iterations=10,
                        delay=delay, code_options={"wait": 8}, wait_seconds=0.05)
    result = solve(small_problem, settings)
    delayed = parse_delay(delay).delays_matrix(0, np.arange(10), 8) > 0
    assert delayed.any(axis=1).all() or delayed.any()
    for record, late in zip(result.history, delayed, strict=True):
        used = np.array(record["used"])
        assert not late[used].any()  # the budget expired before any delayed message came
        if late.any():
            assert len(used) == 8 - late.sum()
            assert record["decode_error"] > 0
        else:
            assert len(used) == 8 and record["decode_error"] < 1e-24


def test_local_mode_runs_both_approximate_decoders(small_problem):
    """Same stragglers for both: the optimal decode is never worse than the fast one."""
    errors = {}
    for decoder in ("optimal", "fast"):
        settings = Settings(lr=1.0, scheme="pairwise", n_stragglers=1, n_workers=6, iterations=6,
                            delay="count:k=2,seconds=0.1", code_options={"decoder": decoder},
                            gradient_error_every=1)
        history = solve(small_problem, settings).history
        errors[decoder] = np.array([[r["decode_error"], r["gradient_error"]] for r in history])
    assert np.isfinite(errors["fast"]).all() and (errors["fast"] > 0).all()
    assert (errors["optimal"][:, 0] <= errors["fast"][:, 0] + 1e-12).all()
