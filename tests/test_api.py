"""gc_fast.run: exactness on a non-linear model, local mode's virtual clock, MPI (SPMD) mode, examples."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import MPIEXEC, max_relative_difference, mpi_env

import gc_fast
from gc_fast.simulate import CostModel
from gc_fast.stragglers import parse_delay

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# A one-hidden-layer network on synthetic data, NumPy only (fast to import on every MPI rank).
MLP_SOURCE = textwrap.dedent('''
    import numpy as np

    N_ROWS, N_INPUTS, N_HIDDEN, N_CLASSES, N_PARTITIONS = 240, 6, 5, 3, 8
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N_ROWS, N_INPUTS))
    Y = np.eye(N_CLASSES)[np.argmax(X[:, :N_CLASSES] + 0.5 * rng.normal(size=(N_ROWS, N_CLASSES)), axis=1)]
    BOUNDS = np.arange(N_PARTITIONS + 1) * N_ROWS // N_PARTITIONS
    SIZES = [N_INPUTS * N_HIDDEN, N_HIDDEN, N_HIDDEN * N_CLASSES, N_CLASSES]
    W0 = np.random.default_rng(1).normal(scale=0.5, size=sum(SIZES))

    def unpack(w):
        W1, b1, W2, b2 = np.split(w, np.cumsum(SIZES)[:-1])
        return W1.reshape(N_INPUTS, N_HIDDEN), b1, W2.reshape(N_HIDDEN, N_CLASSES), b2

    def gradient(w, X, Y):
        W1, b1, W2, b2 = unpack(w)
        hidden = np.tanh(X @ W1 + b1)
        scores = hidden @ W2 + b2
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        d_scores = (p - Y) / N_ROWS
        d_hidden = (d_scores @ W2.T) * (1 - hidden**2)
        return np.concatenate([(X.T @ d_hidden).ravel(), d_hidden.sum(0),
                               (hidden.T @ d_scores).ravel(), d_scores.sum(0)])

    def partition_gradient(j, w):
        rows = slice(BOUNDS[j], BOUNDS[j + 1])
        return gradient(w, X[rows], Y[rows])

    def loss(w):
        W1, b1, W2, b2 = unpack(w)
        scores = np.tanh(X @ W1 + b1) @ W2 + b2
        scores -= scores.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(scores).sum(axis=1)) - (scores * Y).sum(axis=1)))
''')
MLP = {}
exec(MLP_SOURCE, MLP)
ITERATIONS = 60
LR = 0.8



def mlp_run(**options):
    options = {"lr": LR, "iterations": ITERATIONS, "keep_trajectory": True, "n_workers": 4, **options}
    return gc_fast.run(MLP["partition_gradient"], MLP["W0"], MLP["N_PARTITIONS"], **options)


@pytest.fixture(scope="module")
def uncoded():
    """Plain synchronous NAG: naive code, no stragglers."""
    return mlp_run(scheme="naive")


def test_uncoded_run_is_plain_nesterov(uncoded):
    """The library's uncoded run is textbook NAG on the summed gradient (outside oracle)."""
    x = MLP["W0"].copy()
    y = x.copy()
    trajectory = []
    for t in range(ITERATIONS):
        full_gradient = sum(MLP["partition_gradient"](j, y) for j in range(MLP["N_PARTITIONS"]))
        x_next = y - LR * full_gradient
        y = x_next + t / (t + 3.0) * (x_next - x)
        x = x_next
        trajectory.append(x)
    assert max_relative_difference(uncoded.trajectory, np.array(trajectory)) <= 1e-12
    assert MLP["loss"](uncoded.w) < 0.8 * MLP["loss"](MLP["W0"])


@pytest.mark.parametrize("scheme, n_stragglers, delay, options", [
    ("crc", 1, "count:k=1,seconds=0.05", None),
    ("crc", 2, "count:k=2,seconds=0.05", {"construction": "random"}),
    ("frc", 1, "fixed:p=0.5,seconds=0.05", None),
    ("partial-crc", 1, "slow:workers=2,factor=30", {"partitions_per_worker": 3}),
    ("crc", 1, "fail:workers=3,at=10", None),
    ("crc", 1, "pause:workers=2,at=5,seconds=0.2", None),
])
def test_coded_mlp_follows_uncoded_trajectory(uncoded, scheme, n_stragglers, delay, options):
    result = mlp_run(scheme=scheme, n_stragglers=n_stragglers, delay=delay, code_options=options)
    assert result.mode == "local"
    assert max_relative_difference(result.trajectory, uncoded.trajectory) <= 1e-9
    assert result.n_skipped > 0, "the stragglers' messages should have been skipped"
    assert result.residuals.max() <= 1e-9
    delay_model = parse_delay(delay)
    for iteration, record in enumerate(result.history):  # tolerated stragglers were never waited for
        late = np.flatnonzero(delay_model.delays(0, iteration, 4) > 0)
        if 0 < len(late) <= n_stragglers:
            assert np.isnan(record["arrival"][np.isin(result.code.message_worker, late)]).all()


def test_ignoring_stragglers_is_inexact(uncoded):
    result = mlp_run(scheme="ignore", n_stragglers=1, delay="count:k=1,seconds=0.05")
    assert max_relative_difference(result.trajectory, uncoded.trajectory) > 1e-3


def test_virtual_clock_counts_delays_instead_of_sleeping():
    """1,000 iterations under 1 s stragglers: naive waits for them, CRC does not (virtual seconds)."""
    costs = CostModel(partition_seconds=2e-3, latency=1e-4)
    common = dict(lr=LR, delay="count:k=1,seconds=1", n_workers=4, costs=costs)
    coded = gc_fast.run(MLP["partition_gradient"], MLP["W0"], 4, scheme="crc", iterations=1000,
                        keep_trajectory=True, **common)
    naive = gc_fast.run(MLP["partition_gradient"], MLP["W0"], 4, scheme="naive", iterations=100,
                        **common)
    assert naive.times.min() >= 1.0
    assert coded.times.max() < 0.1
    np.testing.assert_allclose(coded.trajectory[99], naive.w, rtol=1e-9)
    # The decode happens when the last message it waited for arrives; then the master's step.
    for record in coded.history[:20]:
        assert record["time"] > np.nanmax(record["arrival"])


def test_local_mode_computes_only_the_messages_the_decode_uses():
    calls = []

    def counting_gradient(j, w):
        calls.append(j)
        return MLP["partition_gradient"](j, w)

    # FRC, n = 4, s = 1, no stragglers: one message per group decodes; 2 of 4 workers compute.
    gc_fast.run(counting_gradient, MLP["W0"], 4, scheme="frc", n_stragglers=1, lr=LR,
                iterations=5, n_workers=4)
    assert len(calls) == 5 * 2 * 2


def test_known_support_shortens_messages():
    """Block-diagonal least squares: partition j only touches features of block j."""
    rng = np.random.default_rng(3)
    n_partitions, block = 4, 5
    A = [rng.normal(size=(20, block)) for _ in range(n_partitions)]
    b = [rng.normal(size=20) for _ in range(n_partitions)]
    support = [np.arange(j * block, (j + 1) * block) for j in range(n_partitions)]

    def partition_gradient(j, w):
        gradient = np.zeros(n_partitions * block)
        gradient[support[j]] = A[j].T @ (A[j] @ w[support[j]] - b[j]) / 80
        return gradient

    common = dict(lr=0.5, iterations=30, scheme="crc", n_stragglers=1, n_workers=4,
                  delay="count:k=1,seconds=0.1", keep_trajectory=True)
    w0 = np.zeros(n_partitions * block)
    full = gc_fast.run(partition_gradient, w0, n_partitions, **common)
    short = gc_fast.run(partition_gradient, w0, n_partitions, support=support, **common)
    assert max_relative_difference(short.trajectory, full.trajectory) <= 1e-12
    assert short.history[0]["bytes_sent"] == full.history[0]["bytes_sent"] / 2


def test_objective_is_evaluated_on_snapshots(uncoded):
    result = mlp_run(scheme="crc", objective=MLP["loss"], eval_every=25)
    np.testing.assert_array_equal(result.objective_iterations, [24, 49, ITERATIONS - 1])
    np.testing.assert_allclose(result.objective_values,
                               [MLP["loss"](uncoded.trajectory[t]) for t in (24, 49, ITERATIONS - 1)],
                               rtol=1e-9)


def test_too_many_failures_raise_a_clear_error():
    with pytest.raises(RuntimeError, match="iteration 4: .* ever; workers silent: 2, 3, 4"):
        mlp_run(scheme="crc", n_stragglers=1, delay="fail:workers=2,3,4,at=4")
    with pytest.raises(RuntimeError, match=r"iteration \d+: .* within 0.5 s .*: [234], [34]"):
        mlp_run(scheme="crc", n_stragglers=1, delay="count:k=2,seconds=1", deadline=0.5)


@pytest.mark.parametrize("options, message", [
    ({"scheme": "frc", "n_stragglers": 2}, "divide"),
    ({"n_partitions": 6}, "multiple of 4"),
    ({"lr": -1.0}, "learning rate"),
    ({"iterations": 0}, "iterations"),
    ({"delay": "sometimes"}, "valid forms"),
    ({"optimizer": "adam"}, "nag, gd"),
    ({"local": False}, "mpirun -n N"),
    ({"w0": np.zeros((2, 2))}, "1-D"),
    ({"support": [[0]] * 3}, "one index array per partition"),
    ({"deadline": 0}, "deadline"),
    ({"partition_gradient": lambda j, w: np.zeros(3)}, r"shape \(3,\)"),
])
def test_bad_input_raises_one_line_value_error(options, message):
    arguments = {"partition_gradient": MLP["partition_gradient"], "w0": MLP["W0"],
                 "n_partitions": 8, "lr": LR, "iterations": 3, "n_workers": 4}
    arguments.update(options)
    with pytest.raises(ValueError, match=message) as error:
        gc_fast.run(arguments.pop("partition_gradient"), arguments.pop("w0"),
                    arguments.pop("n_partitions"), **arguments)
    assert "\n" not in str(error.value)


MPI_SCRIPT = '''
import sys
import numpy as np
import gc_fast
from mlp import LR, N_PARTITIONS, W0, loss, partition_gradient

result = gc_fast.run(partition_gradient, W0, N_PARTITIONS, lr=LR, iterations=int(sys.argv[1]),
                     scheme="crc", n_stragglers=1, delay="count:k=1,seconds=0.03",
                     n_workers=99, objective=loss, eval_every=10, keep_trajectory=True)
try:
    gc_fast.run(partition_gradient, W0, 6, lr=LR, iterations=2)
    error = ""
except ValueError as caught:
    error = str(caught)
np.savez(f"rank{result.rank}.npz", w=result.w, trajectory=result.trajectory,
         objective=result.objective_values, times=result.times, skipped=result.n_skipped,
         used=np.concatenate([r["used"] for r in result.history]), error=error, mode=result.mode,
         n_workers=result.code.n_workers)
'''


def test_mpi_run_matches_local_run_on_every_rank(tmp_path, uncoded):
    """mpiexec -n 5: real sleeps; every rank returns the local run's trajectory (exact decoding)."""
    (tmp_path / "mlp.py").write_text(MLP_SOURCE + f"\nLR = {LR}\n")
    (tmp_path / "script.py").write_text(MPI_SCRIPT)
    command = [MPIEXEC, "-n", "5", sys.executable, "script.py", str(ITERATIONS)]
    finished = subprocess.run(command, cwd=tmp_path, env=mpi_env(), capture_output=True,
                              text=True, timeout=120)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(5)]
    master = ranks[0]
    assert str(master["mode"]) == "mpi" and int(master["n_workers"]) == 4
    assert max_relative_difference(master["trajectory"], uncoded.trajectory) <= 1e-9
    assert int(master["skipped"]) > 0, "the injected stragglers should have been skipped"
    np.testing.assert_allclose(master["objective"][-1], MLP["loss"](uncoded.w), rtol=1e-9)
    for other in ranks[1:]:
        for key in ("w", "trajectory", "objective", "times", "used"):
            np.testing.assert_array_equal(other[key], master[key])
    # A bad setup fails on every rank with the same one-line error.
    for other in ranks:
        assert "multiple of 4" in str(other["error"])


def run_example(arguments, *, n_ranks=None, timeout=120):
    command = [sys.executable, str(EXAMPLES / "digits_mlp.py"), *arguments]
    if n_ranks:
        command = [MPIEXEC, "-n", str(n_ranks), *command]
    return subprocess.run(command, cwd=EXAMPLES, env=mpi_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("n_ranks", [None, 5])
def test_digits_example_matches_uncoded(n_ranks):
    finished = run_example(["--iterations", "30", "--delay", "count:k=1,seconds=0.005"],
                           n_ranks=n_ranks)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert f"mode: {'mpi' if n_ranks else 'local'}, 4 workers" in finished.stdout
    difference = float(finished.stdout.rsplit("trajectories:", 1)[1])
    assert difference <= 1e-9


@pytest.mark.parametrize("options, expected", [
    ("", "bad partition 1"),
    ("delay='fail:workers=1,2,at=2', deadline=1.0", "DeadlineExceeded"),
])
def test_an_error_on_one_rank_ends_every_rank(tmp_path, options, expected):
    """A worker's gradient raising, or the master's deadline passing, ends the MPI run (no hang)."""
    (tmp_path / "script.py").write_text(textwrap.dedent(f'''
        import numpy as np
        import gc_fast

        def partition_gradient(j, w):
            if j == 1 and not {bool(options)}:
                raise RuntimeError("bad partition 1")
            return w - 1.0

        gc_fast.run(partition_gradient, np.zeros(3), 2, lr=0.1, iterations=5, {options})
    '''))
    finished = subprocess.run([MPIEXEC, "-n", "3", sys.executable, "script.py"], cwd=tmp_path,
                              env=mpi_env(), capture_output=True, text=True, timeout=60)
    assert finished.returncode != 0
    assert expected in finished.stderr
