"""The distributed trainer under mpiexec: exactness, the scikit-learn oracle, late messages."""
import numpy as np
import pytest
from helpers import max_relative_difference, train
from sklearn.datasets import dump_svmlight_file, load_breast_cancer
from sklearn.linear_model import LogisticRegression

from gc_fast.data import load_dataset
from gc_fast.objective import logistic_loss

SMALL = ["--dataset", "amazon-like", "--rows", "1200", "--features", "3000", "--seed", "3"]
ITERATIONS = ["--iterations", "12"]


def skipped_messages(results):
    return sum(a is None for it in results["iterations"] for a in it["arrival"])


@pytest.fixture(scope="module")
def naive_reference(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("naive")
    return train(5, [*SMALL, *ITERATIONS, "--scheme", "naive"], tmp_path, "naive")


@pytest.mark.parametrize("scheme, n_ranks, extra", [
    ("crc", 5, ["--stragglers", "1", "--delay", "count:k=1,seconds=0.03"]),
    ("crc", 5, ["--stragglers", "2", "--delay", "count:k=2,seconds=0.03", "--construction", "random"]),
    ("frc", 5, ["--stragglers", "1", "--delay", "count:k=1,seconds=0.03"]),
    ("frc", 5, ["--stragglers", "1", "--delay", "count:k=1,seconds=0.03", "--shared-memory", "off"]),
    ("partial-crc", 5, ["--stragglers", "1", "--partitions-per-worker", "3",
                        "--delay", "slow:workers=2,factor=30"]),
    ("partial-frc", 5, ["--stragglers", "1", "--partitions-per-worker", "4",
                        "--delay", "count:k=1,seconds=0.03"]),
])
def test_exact_schemes_follow_naive_trajectory(naive_reference, tmp_path, scheme, n_ranks, extra):
    _, naive_trajectory = naive_reference
    results, trajectory = train(n_ranks, [*SMALL, *ITERATIONS, "--scheme", scheme, *extra],
                                tmp_path, scheme)
    assert trajectory.shape == naive_trajectory.shape
    assert max_relative_difference(trajectory, naive_trajectory) <= 1e-9
    # The stragglers really were skipped: some messages were never waited for.
    assert skipped_messages(results) > 0
    assert results["summary"]["max_decode_residual"] <= 1e-9
    # One node: point and messages go through shared memory unless switched off.
    assert results["summary"]["shared_memory"] is ("off" not in extra)


def test_ignore_under_stragglers_is_not_exact(naive_reference, tmp_path):
    _, naive_trajectory = naive_reference
    results, trajectory = train(5, [*SMALL, *ITERATIONS, "--scheme", "ignore",
                                    "--delay", "count:k=1,seconds=0.03"], tmp_path, "ignore")
    assert skipped_messages(results) > 0
    assert max_relative_difference(trajectory, naive_trajectory) > 1e-3


@pytest.mark.parametrize("shared_memory", ["auto", "off"])
def test_late_replies_never_corrupt_later_iterations(naive_reference, tmp_path, shared_memory):
    """Worker 2 freezes for several iterations mid-run, then sends its stale message
    (written into its shared-memory slot, or sent as an MPI message)."""
    _, naive_trajectory = naive_reference
    results, trajectory = train(5, [*SMALL, *ITERATIONS, "--scheme", "crc", "--stragglers", "1",
                                    "--delay", "pause:workers=2,at=3,seconds=1.0",
                                    "--shared-memory", shared_memory], tmp_path, "late")
    assert max_relative_difference(trajectory, naive_trajectory) <= 1e-9
    summary = results["summary"]
    assert summary["messages_stale"] >= 1
    late_iterations = [it for it in results["iterations"][3:] if it["arrival"][1] is None]
    assert len(late_iterations) >= 3, "worker 2 should have missed several iterations"


@pytest.mark.parametrize("mode, expected_nice", [("on", [1, 7, 4, 10]), ("off", [0, 0, 0, 0])])
def test_worker_priorities_follow_the_code_and_leave_the_trajectory_alone(
        naive_reference, tmp_path, mode, expected_nice):
    """FRC s=1, n=4: one worker of each group first (workers 1, 3), then the others."""
    _, naive_trajectory = naive_reference
    results, trajectory = train(5, [*SMALL, *ITERATIONS, "--scheme", "frc", "--stragglers", "1",
                                    "--priorities", mode], tmp_path, mode)
    assert [w["nice"] for w in results["summary"]["worker_stats"]] == expected_nice
    assert max_relative_difference(trajectory, naive_trajectory) <= 1e-9


def test_reaches_scikit_learn_optimum(tmp_path):
    """Outside oracle: the same L2-regularised objective minimised by scikit-learn."""
    features, labels = load_breast_cancer(return_X_y=True)
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    features = np.hstack([np.ones((len(features), 1)), features])  # bias column
    path = tmp_path / "cancer.svm"
    dump_svmlight_file(features, labels, str(path))
    l2 = 1e-2
    results, trajectory = train(4, ["--dataset", path, "--scheme", "crc", "--stragglers", "1",
                                    "--iterations", "1500", "--l2", l2, "--eval-every", "1500"],
                                tmp_path, "oracle")
    data = load_dataset(path, test_fraction=0.2, seed=0)
    n_rows = data.X_train.shape[0]
    model = LogisticRegression(C=1.0 / (l2 * n_rows), fit_intercept=False, tol=1e-12, max_iter=10000)
    model.fit(data.X_train.toarray(), data.y_train)
    optimum = logistic_loss(data.X_train, data.y_train, model.coef_.ravel(), l2)
    ours = logistic_loss(data.X_train, data.y_train, trajectory[-1], l2)
    assert abs(ours - optimum) <= 1e-6 * abs(optimum)
    assert results["summary"]["final_train_loss"] == pytest.approx(ours, rel=1e-12)
