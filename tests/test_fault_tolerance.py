"""Real process deaths under Open MPI 5 with ULFM: workers SIGKILLed at any moment (set-up,
the first decode, mid-run, while a checkpoint is written, shutdown) and the master; and the
master's death under MPICH.

These runs need the fault-tolerant MPI of the `ft` extra, which cannot share a
venv with the mpich wheel, so they use a second venv: GC_FAST_FT_VENV, else
.venv-ft beside the checkout (.ci/run makes it; the README says how).
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import MPIEXEC, mpi_env

ROOT = Path(__file__).resolve().parent.parent
FT_VENV = Path(os.environ.get("GC_FAST_FT_VENV", ROOT / ".venv-ft"))
FT_MPIRUN, FT_PYTHON = FT_VENV / "bin" / "mpirun", FT_VENV / "bin" / "python"
# 100 short iterations: the master learns of a death a few ms after it, well before the end.
SMALL = ["--rows", "1200", "--features", "3000", "--iterations", "100", "--quiet"]

# Set-up long enough (several seconds) to kill a rank in the middle of it.
LARGE = ["--rows", "200000", "--features", "3000", "--iterations", "20", "--quiet"]

needs_ft = pytest.mark.skipif(
    not (FT_MPIRUN.exists() and FT_PYTHON.exists()),
    reason=f"no fault-tolerant MPI venv at {FT_VENV}: python3 -m venv .venv-ft && "
           f".venv-ft/bin/pip install -e '.[ft]' (or set GC_FAST_FT_VENV)")


def ft_command(n_ranks, args):
    return [str(FT_MPIRUN), "--with-ft", "ulfm", "--oversubscribe", "-n", str(n_ranks),
            str(FT_PYTHON), "-m", "gc_fast.train", *map(str, args)]


def ft_env():
    env = mpi_env()
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def run_ft(n_ranks, args, cwd, timeout=120):
    return subprocess.run(ft_command(n_ranks, args), cwd=cwd, env=ft_env(), capture_output=True,
                          text=True, timeout=timeout)


class Job:
    """An MPI job started in the background, to kill one of its ranks from outside (SIGKILL,
    as the OOM killer or a lost VM would) at a chosen moment: its output is read as it comes."""

    def __init__(self, command, cwd, env):
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        self.output = {"stdout": b"", "stderr": b""}
        self.readers = [threading.Thread(target=self._read, args=(name,), daemon=True)
                        for name in self.output]
        for reader in self.readers:
            reader.start()
        self.killed_at = None

    def _read(self, name):
        stream = getattr(self.process, name)
        while chunk := os.read(stream.fileno(), 65536):
            self.output[name] += chunk

    @property
    def stderr(self):
        return self.output["stderr"].decode("utf-8", "replace")

    def ranks(self):
        """{MPI rank: pid} of this job's processes (descendants of its launcher)."""
        parents, ranks = {}, {}
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        for pid in parents:
            ancestor = parents[pid]
            while ancestor > 1 and ancestor != self.process.pid:
                ancestor = parents.get(ancestor, 0)
            if ancestor != self.process.pid:
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as handle:
                    environment = handle.read().split(b"\0")
            except OSError:
                continue
            for variable in environment:
                name, _, value = variable.partition(b"=")
                if name in (b"OMPI_COMM_WORLD_RANK", b"PMI_RANK") and b"gc_fast.train" in \
                        Path(f"/proc/{pid}/cmdline").read_bytes():
                    ranks[int(value)] = pid
        return ranks

    def pid(self, rank, timeout=30):
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up and self.process.poll() is None:
            pid = self.ranks().get(rank)
            if pid:
                return pid
            time.sleep(0.02)
        raise AssertionError(f"rank {rank} never started:\n{self.stderr}")

    def wait_until(self, condition, timeout=60, what="the moment to kill"):
        give_up = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"the job ended before {what}:\n{self.stderr}"
            assert time.monotonic() < give_up, f"no {what} within {timeout} s:\n{self.stderr}"
            time.sleep(0.0002)

    def kill(self, pid):
        os.kill(pid, signal.SIGKILL)
        self.killed_at = time.monotonic()

    def finish(self, timeout=60):
        """(exit status, seconds from the kill to the launcher's exit)."""
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in self.ranks().values():
                os.kill(pid, signal.SIGKILL)
            self.process.kill()
            raise AssertionError(f"the job did not end within {timeout} s:\n{self.stderr}") \
                from None
        for reader in self.readers:
            reader.join(timeout=5)
        return status, time.monotonic() - self.killed_at


def resident_megabytes(pid):
    try:
        with open(f"/proc/{pid}/status") as handle:
            lines = [line for line in handle if line.startswith("VmRSS:")]
        return int(lines[0].split()[1]) / 1024 if lines else 0.0
    except OSError:
        return 0.0


def gc_fast_lines(stderr):
    """gc_fast's own lines on stderr: Open MPI's runtime may add lines of its own as the job
    ends ("pmix_ptl_base: send_msg: write failed", "Old events were ..."), never a traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert not any("Traceback" in line for line in lines), stderr
    return [line.strip("\r") for line in lines if line.lstrip("\r").startswith("gc_fast")]


def train_ft(n_ranks, args, tmp_path, name, base=SMALL):
    out, trajectory = tmp_path / f"{name}.json", tmp_path / f"{name}.npy"
    result = run_ft(n_ranks, [*base, *args, "--out", out, "--save-trajectory", trajectory], tmp_path)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(out.read_text()), np.load(trajectory), result


def assert_same_trajectory(a, b):
    assert a.shape == b.shape
    scale = np.maximum(np.abs(a).max(axis=1, keepdims=True), 1e-300)
    assert np.max(np.abs(a - b) / scale) <= 1e-9


@needs_ft
@pytest.mark.parametrize("n_workers, n_stragglers, kill", [
    (4, 1, "kill:workers=2,at=5"),          # one worker dies
    (6, 2, "kill:workers=2,5,at=3,10"),     # one, then a second: s of them
    (4, 1, "kill:workers=2,at=0"),          # during the first decode
    (4, 1, "kill:workers=3,at=setup"),      # set up, while the master waits for the others
    (6, 2, "kill:workers=2,5,at=setup,7"),  # one at set-up, one mid-run
])
def test_crc_trains_exactly_through_killed_workers(tmp_path, n_workers, n_stragglers, kill):
    naive, naive_path, _ = train_ft(n_workers + 1, ["--scheme", "naive"], tmp_path, "naive")
    coded, coded_path, result = train_ft(
        n_workers + 1, ["--scheme", "crc", "--stragglers", n_stragglers, "--delay", kill], tmp_path, "crc")
    killed = kill.split("workers=")[1].split(",at=")[0].split(",")
    assert sorted(coded["summary"]["dead_workers"]) == sorted(killed)
    assert "training went on without them" in result.stderr
    for rank in killed:  # no message from a dead worker after its death was noticed
        found = coded["summary"]["dead_workers"][rank]
        worker_messages = [m for m, w in enumerate(coded["message_worker"]) if w == int(rank)]
        for record in coded["iterations"][found:]:
            assert not set(record["used"]) & set(worker_messages)
            assert all(record["arrival"][m] is None for m in worker_messages)
    assert_same_trajectory(naive_path, coded_path)


@needs_ft
@pytest.mark.parametrize("kill, first", [
    ("kill:workers=2,3,at=4,8", 8),       # mid-run: checkpoint of the iteration it stops at
    ("kill:workers=2,3,at=setup", 0),     # both at set-up: the run stops before iteration 0
])
def test_more_deaths_than_s_stop_with_one_line_and_a_checkpoint(tmp_path, kill, first):
    rescue = tmp_path / "rescue.npz"
    result = run_ft(5, [*SMALL, "--scheme", "crc", "--stragglers", "1",
                        "--delay", kill, "--checkpoint", rescue], tmp_path)
    assert result.returncode == 3
    # gc_fast's own output is one line, no traceback.
    errors = gc_fast_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith("gc_fast.train: error: workers 2 "), result.stderr
    assert "cannot decode without them" in errors[0] and f"--resume {rescue}" in errors[0]
    with np.load(rescue) as saved:
        assert first <= int(saved["iteration"]) < 100
    # The rescued run resumes with healthy workers and finishes.
    resumed = run_ft(5, [*SMALL, "--scheme", "crc", "--stragglers", "1", "--resume", rescue], tmp_path)
    assert resumed.returncode == 0, resumed.stderr


def kill_rank(job, rank, moment, what):
    """SIGKILL `rank` of `job` from outside once moment(pid) holds."""
    pid = job.pid(rank)
    job.wait_until(lambda: moment(pid), what=what)
    job.kill(pid)


@needs_ft
def test_a_worker_killed_while_the_others_load_data_is_dead_from_the_first_iteration(tmp_path):
    """Killed from outside in its set-up (while every rank loads the data: past MPI_Init, since
    the data is read after it): the master finds it dead before iteration 0, and the run equals
    naive's."""
    _, naive_trajectory, _ = train_ft(5, ["--scheme", "naive"], tmp_path, "naive", base=LARGE)
    out, trajectory = tmp_path / "crc.json", tmp_path / "crc.npy"
    job = Job(ft_command(5, [*LARGE, "--scheme", "crc", "--stragglers", "1", "--out", out,
                             "--save-trajectory", trajectory]), tmp_path, ft_env())
    # a rank's resident memory passes 200 MB only while it builds the data set
    kill_rank(job, 2, lambda pid: resident_megabytes(pid) > 200, "rank 2 loading the data")
    status, _ = job.finish()
    assert status == 0, job.stderr
    coded = json.loads(out.read_text())
    assert coded["summary"]["dead_workers"] == {"2": 0}
    assert gc_fast_lines(job.stderr) == ["gc_fast.train: note: workers 2 (at iteration 0) died; "
                                         "training went on without them"]
    assert_same_trajectory(naive_trajectory, np.load(trajectory))


@needs_ft
def test_a_worker_killed_during_shutdown_is_noted_and_the_run_completes(tmp_path):
    """Worker 3 freezes at the last iteration (the master decodes without it) and is killed
    once the master has written its final checkpoint, while it waits for worker 3's STATS: the
    run is complete, the death noted, exit 0."""
    _, naive_trajectory, _ = train_ft(5, ["--scheme", "naive"], tmp_path, "naive")
    out, trajectory, final = tmp_path / "crc.json", tmp_path / "crc.npy", tmp_path / "final.npz"
    job = Job(ft_command(5, [*SMALL, "--scheme", "crc", "--stragglers", "1", "--out", out,
                             "--save-trajectory", trajectory, "--checkpoint", final,
                             "--checkpoint-every", "1000",  # once, after the last iteration
                             "--delay", "pause:workers=3,at=99,seconds=15"]), tmp_path, ft_env())
    kill_rank(job, 3, lambda pid: final.exists(), "the final checkpoint")
    status, seconds = job.finish()
    assert status == 0, job.stderr
    # Unnoticed, it would be silent: the master waits 10 s for its STATS, then warns.
    assert seconds < 9, job.stderr
    coded = json.loads(out.read_text())
    assert coded["summary"]["dead_workers"] == {"3": 99}
    assert gc_fast_lines(job.stderr) == ["gc_fast.train: note: workers 3 (at iteration 99) died; "
                                         "training went on without them"]
    assert_same_trajectory(naive_trajectory, np.load(trajectory))


@needs_ft
def test_a_worker_killed_while_a_checkpoint_is_written_is_survived(tmp_path):
    """A checkpoint after every iteration (200 000 features: each write takes milliseconds);
    worker 2 is killed while the master writes one: the run goes on and equals naive's."""
    base = ["--rows", "1200", "--features", "200000", "--iterations", "30", "--quiet"]
    _, naive_trajectory, _ = train_ft(5, ["--scheme", "naive"], tmp_path, "naive", base=base)
    out, trajectory = tmp_path / "crc.json", tmp_path / "crc.npy"
    job = Job(ft_command(5, [*base, "--scheme", "crc", "--stragglers", "1", "--out", out,
                             "--save-trajectory", trajectory, "--checkpoint", tmp_path / "ck.npz",
                             "--checkpoint-every", "1"]), tmp_path, ft_env())

    def writing(_):  # checkpoint.save writes a temporary file, then renames it
        return any(name.startswith(".gc_fast-ckpt-") for name in os.listdir(tmp_path))

    kill_rank(job, 2, writing, "a checkpoint being written")
    status, _ = job.finish()
    assert status == 0, job.stderr
    coded = json.loads(out.read_text())
    assert list(coded["summary"]["dead_workers"]) == ["2"]
    with np.load(tmp_path / "ck.npz") as saved:
        assert int(saved["iteration"]) == 30
    assert_same_trajectory(naive_trajectory, np.load(trajectory))


def assert_no_rank_left(job):
    give_up = time.monotonic() + 5
    while job.ranks() and time.monotonic() < give_up:
        time.sleep(0.05)
    assert not job.ranks(), f"ranks left running: {job.ranks()}"


# Many short iterations; the checkpoint after the 5th is the sign that training has started.
ENDLESS = ["--rows", "1200", "--features", "3000", "--iterations", "100000", "--quiet",
           "--checkpoint", "started.npz", "--checkpoint-every", "5"]


@needs_ft
@pytest.mark.parametrize("moment", ["training", "set-up"])
def test_the_masters_death_ends_every_worker_with_one_line(tmp_path, moment):
    """The master is killed mid-run, or while every rank loads the data: each worker notices
    (its receive from the master fails) and ends with at most one line; no rank is left."""
    args = ENDLESS if moment == "training" else LARGE
    job = Job(ft_command(5, [*args, "--scheme", "crc", "--stragglers", "1"]), tmp_path, ft_env())
    if moment == "training":
        kill_rank(job, 0, lambda pid: (tmp_path / "started.npz").exists(), "training")
    else:
        kill_rank(job, 0, lambda pid: resident_megabytes(pid) > 200, "rank 0 loading the data")
    status, seconds = job.finish()
    assert status != 0
    assert seconds < (5 if moment == "training" else 30), job.stderr  # set-up ends first
    assert_no_rank_left(job)
    lines = gc_fast_lines(job.stderr)
    assert lines and all(line.startswith("gc_fast: worker rank ") and
                         line.endswith(": the master (rank 0) died; this worker stops")
                         for line in lines), job.stderr
    assert len(lines) <= 4


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec")
def test_the_masters_death_ends_the_job_under_mpich(tmp_path):
    """Without ULFM (the mpich wheel's Hydra launcher) a dead rank ends the whole job."""
    job = Job([MPIEXEC, "-n", "5", sys.executable, "-m", "gc_fast.train", *ENDLESS],
              tmp_path, mpi_env())
    kill_rank(job, 0, lambda pid: (tmp_path / "started.npz").exists(), "training")
    status, seconds = job.finish()
    assert status != 0 and seconds < 5, job.stderr
    assert_no_rank_left(job)


@needs_ft
def test_a_rank_killed_while_mpi_starts_ends_the_job_with_one_line_per_rank(tmp_path):
    """Killed as soon as it exists, before MPI has started: Open MPI's start-up waits forever
    for it, so each survivor's start-up watchdog (gc_fast.launch) ends it with one line and
    the job fails instead of hanging."""
    env = {**ft_env(), "GC_FAST_MPI_START_SECONDS": "5"}
    job = Job(ft_command(4, [*SMALL, "--scheme", "crc", "--stragglers", "1"]), tmp_path, env)
    job.kill(job.pid(1))
    status, seconds = job.finish()
    assert status != 0
    assert seconds < 30, job.stderr
    assert_no_rank_left(job)
    lines = gc_fast_lines(job.stderr)
    assert lines and all("MPI did not start within 5 s" in line for line in lines), job.stderr
    assert len(lines) <= 3
