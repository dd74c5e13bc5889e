"""Fault tolerance under mpiexec: silent workers, deadlines, checkpoints, a long soak run."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import MPIEXEC, max_relative_difference, mpi_env, run_mpi, train

from gc_fast import checkpoint

SMALL = ["--dataset", "amazon-like", "--rows", "1000", "--features", "2000", "--seed", "5"]



@pytest.fixture(scope="module")
def naive_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("naive")
    return train(5, [*SMALL, "--iterations", "20", "--scheme", "naive"], tmp_path, "naive")


def test_tolerated_silent_workers_keep_training_exactly(naive_run, tmp_path):
    _, naive_trajectory = naive_run
    results, trajectory = train(5, [*SMALL, "--iterations", "20", "--scheme", "crc",
                                    "--stragglers", "2", "--delay", "fail:workers=2,4,at=6"],
                                tmp_path, "fail")
    assert max_relative_difference(trajectory, naive_trajectory) <= 1e-9
    for record in results["iterations"][6:]:
        assert record["arrival"][1] is None and record["arrival"][3] is None


def test_too_many_silent_workers_stop_with_checkpoint(tmp_path):
    ckpt = tmp_path / "run.npz"
    result = run_mpi(5, [*SMALL, "--iterations", "20", "--scheme", "crc", "--stragglers", "1",
                         "--delay", "fail:workers=2,3,at=7", "--deadline", "1",
                         "--checkpoint", ckpt, "--quiet"], tmp_path, timeout=120)
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    # Both silent workers are named; when each was last heard depends on whether its
    # message of an earlier iteration was still needed, so only an upper bound is fixed.
    named = re.search(r"workers silent: 2 \(last heard at iteration (\d+)\), "
                      r"3 \(last heard at iteration (\d+)\)", errors[0])
    assert named, errors[0]
    assert all(int(last) <= 6 for last in named.groups())
    assert f"--resume {ckpt}" in errors[0]
    with np.load(ckpt) as archive:
        assert int(archive["iteration"]) == 7


def test_resume_continues_the_same_trajectory(naive_run, tmp_path):
    _, naive_trajectory = naive_run
    ckpt = tmp_path / "half.npz"
    train(5, [*SMALL, "--iterations", "9", "--scheme", "naive", "--checkpoint", ckpt,
              "--checkpoint-every", "4"], tmp_path, "first")
    with np.load(ckpt) as archive:
        assert int(archive["iteration"]) == 9
    results, trajectory = train(5, [*SMALL, "--iterations", "20", "--scheme", "naive",
                                    "--resume", ckpt], tmp_path, "second")
    assert results["iterations"][0]["iteration"] == 9
    assert np.array_equal(trajectory, naive_trajectory[9:])


def test_resume_refuses_another_configuration(naive_run, tmp_path):
    ckpt = tmp_path / "crc.npz"
    train(5, [*SMALL, "--iterations", "3", "--scheme", "crc", "--checkpoint", ckpt], tmp_path, "crc")
    result = run_mpi(5, [*SMALL, "--iterations", "6", "--scheme", "naive", "--resume", ckpt, "--quiet"],
                     tmp_path, timeout=60)
    assert result.returncode == 2
    assert "different configuration" in result.stderr and "scheme" in result.stderr
    result = run_mpi(5, [*SMALL[:-1], "6", "--iterations", "6", "--scheme", "crc", "--resume", ckpt,
                         "--quiet"], tmp_path, timeout=60)
    assert result.returncode == 2 and "data" in result.stderr


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "c.npz"
    identity = {"scheme": "crc", "n_workers": 4}
    checkpoint.save(path, iteration=3, optimizer_state={"x": np.arange(4.0), "n_steps": 3}, config=identity)
    before = path.read_bytes()

    class Boom(Exception):
        pass

    original = np.savez
    def exploding_savez(stream, **arrays):
        stream.write(b"partial garbage")
        raise Boom()
    np.savez = exploding_savez
    try:
        with pytest.raises(Boom):
            checkpoint.save(path, iteration=4, optimizer_state={"x": np.zeros(4)}, config=identity)
    finally:
        np.savez = original
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]
    iteration, state, _ = checkpoint.load(path, expected_config=identity)
    assert iteration == 3 and state["n_steps"] == 3 and np.array_equal(state["x"], np.arange(4.0))
    path.write_bytes(before[: len(before) // 2])
    with pytest.raises(ValueError, match="not a readable gc_fast checkpoint"):
        checkpoint.load(path, expected_config=identity)


RESCUE = "gc_fast-rescue.npz"
# A few seconds of training: every worker sleeps 5 ms in each of 500 iterations; naive, so
# the trajectory does not depend on the timing.
LONG = [*SMALL, "--scheme", "naive", "--iterations", "500", "--delay", "fixed:p=1,seconds=0.005"]


def start_mpi(n_ranks, args, cwd):
    """run_mpi in the background: the Popen."""
    command = [MPIEXEC, "-n", str(n_ranks), sys.executable, "-m", "gc_fast.train", *map(str, args)]
    return subprocess.Popen(command, cwd=cwd, env=mpi_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def checkpoint_iteration(path):
    """The iteration of the checkpoint at path, None if there is none (yet)."""
    try:
        return checkpoint.load(path, expected_config={})[0]
    except ValueError:
        return None


def watch(job, path, until=lambda seen: False, timeout=60):
    """Poll the checkpoint at path while job runs (or until `until(seen)`): the iterations
    seen, and whether a temporary checkpoint file was ever seen."""
    seen, temporary = [], False
    deadline = time.monotonic() + timeout
    while job.poll() is None and not until(seen) and time.monotonic() < deadline:
        iteration = checkpoint_iteration(path)
        if iteration is not None and iteration not in seen:
            seen.append(iteration)
        temporary |= any(name.startswith(".gc_fast-ckpt-") for name in os.listdir(path.parent))
        time.sleep(0.01)
    return seen, temporary


def finish(job, timeout=60):
    try:
        return job.communicate(timeout=timeout)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()


def notes(stderr):
    return [line for line in stderr.splitlines() if "gc_fast.train: note: this MPI" in line]


@pytest.fixture(scope="module")
def watched_run(tmp_path_factory):
    """The LONG run with a rescue checkpoint every 0.3 s, watched: (iterations seen in the
    rescue file, stderr, its folder, the trajectory)."""
    tmp_path = tmp_path_factory.mktemp("watched")
    trajectory = tmp_path / "watched.npy"
    job = start_mpi(5, [*LONG, "--rescue-every", "0.3", "--quiet", "--save-trajectory", trajectory],
                    tmp_path)
    seen, _ = watch(job, tmp_path / RESCUE)
    _, stderr = finish(job)
    assert job.returncode == 0, stderr
    return seen, stderr, tmp_path, np.load(trajectory)


def test_a_rescue_checkpoint_is_kept_while_training_and_removed_at_the_end(watched_run):
    seen, stderr, folder, trajectory = watched_run
    assert len(seen) >= 2, seen  # rewritten as training went on
    assert seen == sorted(seen) and 0 < seen[0] and seen[-1] < 500
    assert not (folder / RESCUE).exists()  # a finished run's results are in its outputs
    assert [p.name for p in folder.iterdir()] == ["watched.npy"]
    assert not notes(stderr)  # --quiet: no start line
    assert trajectory.shape == (500, 2000)


def test_a_killed_worker_under_mpich_loses_at_most_the_rescue_interval(watched_run, tmp_path):
    """mpiexec ends the whole job when a worker is SIGKILLed; the rescue checkpoint, at most
    --rescue-every seconds old, resumes bit for bit."""
    *_, uninterrupted = watched_run
    marker = tmp_path / "killed-run-marker.json"  # this job's own mark on its command lines
    rescue = tmp_path / RESCUE
    job = start_mpi(5, [*LONG, "--rescue-every", "0.5", "--quiet", "--out", marker], tmp_path)
    try:
        seen, _ = watch(job, rescue, until=lambda seen: len(seen) >= 2)  # rewritten once
        assert len(seen) >= 2 and job.poll() is None, seen
        ranks = {}
        for pid in subprocess.run(["pgrep", "-f", str(marker)], capture_output=True,
                                  text=True).stdout.split():
            try:
                with open(f"/proc/{pid}/environ", "rb") as handle:
                    environment = dict(item.split(b"=", 1) for item in handle.read().split(b"\0")
                                       if b"=" in item)
            except OSError:
                continue
            if b"PMI_RANK" in environment:
                ranks[int(environment[b"PMI_RANK"])] = int(pid)
        assert sorted(ranks) == [0, 1, 2, 3, 4], ranks
        age = time.time() - rescue.stat().st_mtime
        os.kill(ranks[3], signal.SIGKILL)  # worker 3
    finally:
        _, stderr = finish(job)
    assert job.returncode != 0 and not marker.exists(), stderr  # the whole job ended
    assert age < 0.5 + 1.0  # the rescue file was rewritten every 0.5 s of training
    iteration, _, config = checkpoint.load(rescue, expected_config={})
    assert 2 <= iteration < 500 and config["scheme"] == "naive"
    results, trajectory = train(5, [*LONG, "--resume", rescue], tmp_path, "resumed")
    assert results["iterations"][0]["iteration"] == iteration
    assert max_relative_difference(trajectory, uninterrupted[iteration:]) <= 1e-12
    assert np.array_equal(trajectory, uninterrupted[iteration:])  # bit for bit, in fact
    assert not rescue.exists()  # the resumed run finished: its own rescue file is gone


def test_rescue_every_zero_writes_no_checkpoint(tmp_path):
    job = start_mpi(5, [*SMALL, "--scheme", "naive", "--iterations", "200", "--delay",
                        "fixed:p=1,seconds=0.005", "--rescue-every", "0"], tmp_path)
    seen, temporary = watch(job, tmp_path / RESCUE)
    _, stderr = finish(job)
    assert job.returncode == 0, stderr
    assert not seen and not temporary and not (tmp_path / RESCUE).exists()
    assert len(notes(stderr)) == 1 and "no checkpoint is kept" in notes(stderr)[0]


def test_an_explicit_checkpoint_is_also_written_on_the_time_bound(tmp_path):
    """--checkpoint plays the rescue checkpoint's part: on --checkpoint-every, on the time
    bound, at the end; it stays."""
    ckpt = tmp_path / "run.npz"
    job = start_mpi(5, [*LONG, "--checkpoint", ckpt, "--checkpoint-every", "100000",
                        "--rescue-every", "0.3", "--quiet"], tmp_path)
    seen, _ = watch(job, ckpt)
    _, stderr = finish(job)
    assert job.returncode == 0, stderr
    assert len(seen) >= 2 and seen[0] < 500, seen  # written before --checkpoint-every
    assert checkpoint_iteration(ckpt) == 500 and not (tmp_path / RESCUE).exists()


def test_the_start_line_says_what_this_mpi_survives_once(tmp_path):
    earlier = tmp_path / RESCUE
    earlier.write_bytes(b"an earlier run's rescue checkpoint")
    result = run_mpi(5, [*SMALL, "--iterations", "3"], tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = notes(result.stderr)
    assert len(lines) == 1, result.stderr  # rank 0 only
    line = lines[0]
    for text in ("MPICH", "ends the whole job if a worker dies", "at most 60 s old",
                 f"--resume {RESCUE}", ".[ft]", "mpirun --with-ft ulfm", "docs/fault-tolerance.md"):
        assert text in line, line
    # Another run's rescue file is in the way: said once; nothing was due in 3 iterations,
    # and a finished run removes only its own.
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and f"{RESCUE} of an earlier run" in warnings[0], result.stderr
    assert earlier.read_bytes() == b"an earlier run's rescue checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == [RESCUE]


def test_a_failed_write_while_training_is_one_warning_and_training_goes_on(tmp_path, monkeypatch,
                                                                          capsys):
    from types import SimpleNamespace

    from gc_fast import train as trainer

    monkeypatch.chdir(tmp_path)
    args = trainer.build_parser().parse_args(["--iterations", "10", "--rescue-every", "0.001",
                                              "--quiet"])
    hook = trainer.Checkpoints(SimpleNamespace(args=args))
    hook.identity = {"scheme": "naive"}
    state = {"x": np.arange(3.0), "n_steps": 1}
    run = SimpleNamespace(code=None, optimizer=SimpleNamespace(state=lambda: state))
    save = checkpoint.save

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save", full_disk)
    for iteration in range(5):  # the first starts the clock, the others fail to write
        hook.after_iteration(run, iteration, None)
        time.sleep(0.005)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "No space left on device" in warnings[0], warnings
    assert RESCUE in warnings[0] and not list(tmp_path.iterdir())
    monkeypatch.setattr(checkpoint, "save", save)  # the disk has room again
    hook.after_iteration(run, 5, None)
    assert checkpoint_iteration(tmp_path / RESCUE) == 6
    hook.discard()  # the run finished and wrote its outputs
    assert not list(tmp_path.iterdir())


def test_a_bad_rescue_interval_is_one_error_line(tmp_path):
    for value in ("-1", "soon", "nan"):
        result = subprocess.run([sys.executable, "-m", "gc_fast.train", "--rescue-every", value],
                                cwd=tmp_path, env=mpi_env(), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if "gc_fast.train: error:" in line]
        assert len(errors) == 1 and "--rescue-every" in errors[0], result.stderr


def test_soak_ten_thousand_iterations(tmp_path):
    """Memory stays flat on every rank and every message is accounted for."""
    out = tmp_path / "soak.json"
    result = run_mpi(4, ["--dataset", "amazon-like", "--rows", "300", "--features", "400",
                         "--iterations", "10000", "--scheme", "crc", "--stragglers", "1",
                         "--delay", "fixed:p=0.02,seconds=0.002", "--eval-every", "10000",
                         "--quiet", "--out", out], tmp_path, timeout=400)
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())["summary"]
    assert summary["messages_sent_by_workers"] == summary["messages_received"]
    assert summary["messages_received"] >= 2 * 10000  # n - s = 2 messages decode each iteration
    assert summary["messages_stale"] > 0  # stragglers really were outrun
    for stats in summary["worker_stats"]:
        assert stats["messages_sent"] > 1000  # every worker took part all along
        assert stats["rss_end_bytes"] - stats["rss_start_bytes"] < 8 * 2**20
    master = summary["master_rss_bytes"]
    assert master["end"] - master["after_first_iteration"] < 8 * 2**20
