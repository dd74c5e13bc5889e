"""The emulated cluster (gc_fast.testbed): host settings, the launcher wrapper's arguments, the
natural stragglers' schedule, the network bound, and -- as root, where network namespaces
work -- real multi-host runs: TCP at the shaped rate, CRC across hosts equal to naive, memory
caps, teardown."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import max_relative_difference, mpi_env
from scipy.stats import binom

from gc_fast import make_code
from gc_fast.simulate import build_workload
from gc_fast.simulate.bound import network_bound, undecodable_probability
from gc_fast.testbed import PROFILES, HostSpec, host_specs
from gc_fast.testbed.enter import split_ssh_arguments
from gc_fast.testbed.hosts import parse_rate, parse_share, parse_size
from gc_fast.testbed.slowdowns import SpellSettings, spells

ROOT = Path(__file__).resolve().parent.parent
FT_PYTHON = ROOT / ".venv-ft" / "bin" / "python"


# ---- without root ---------------------------------------------------------------------------

def test_rates_sizes_and_shares_parse():
    assert parse_rate("100mbit") == 100_000_000 and parse_rate("1gbit") == 10**9
    assert parse_rate("none") is None
    assert parse_size("1g") == 2**30 and parse_size("300MiB") == 300 * 2**20
    assert parse_share("12%") == pytest.approx(0.12) and parse_share("0.5") == 0.5
    for bad, parse in [("fast", parse_rate), ("-3mbit", parse_rate), ("lots", parse_size),
                       ("0", parse_share), ("200", parse_share)]:
        with pytest.raises(ValueError):
            parse(bad)


def test_host_specs_apply_profile_and_overrides():
    specs = host_specs(PROFILES["t2.micro"], 4, worker="rate=50mbit", overrides=["2:cpu=0.06"])
    assert specs[0] == PROFILES["t2.micro"].master
    assert [s.rate_bits for s in specs[1:]] == [50_000_000] * 3
    assert [s.cpu for s in specs[1:]] == [0.12, 0.06, 0.12]
    assert specs[1].memory_bytes == 2**30
    with pytest.raises(ValueError, match="bad --host"):
        host_specs(PROFILES["t2.micro"], 4, overrides=["9:cpu=0.1"])
    with pytest.raises(ValueError, match="unknown host setting"):
        host_specs(PROFILES["t2.micro"], 4, worker="disk=1g")
    with pytest.raises(ValueError, match="at least 2 hosts"):
        host_specs(PROFILES["t2.micro"], 1)


def test_wrapper_reads_arguments_as_ssh_does():
    assert split_ssh_arguments(["-x", "10.0.0.2", "proxy", "--a", "1"]) == ("10.0.0.2",
                                                                          "proxy --a 1")
    assert split_ssh_arguments(["-o", "BatchMode=yes", "-x", "h", "cmd"]) == ("h", "cmd")
    with pytest.raises(ValueError):
        split_ssh_arguments(["-x", "host-but-no-command"])


def test_natural_stragglers_are_seeded_and_differ_between_hosts():
    settings = SpellSettings.parse("gap=2,seconds=0.5,cpu=0.1,link=0.2,seed=7")
    def first(host, seed_settings=settings):
        sequence = spells(seed_settings, host)
        return [next(sequence) for _ in range(20)]
    assert first(1) == first(1)
    assert first(1) != first(2)
    spells_1 = first(1)
    assert all(a.start + a.seconds <= b.start for a, b in zip(spells_1[:-1], spells_1[1:], strict=True))
    assert {s.kind for s in spells_1} == {"cpu", "link"}
    assert all(s.factor == (0.1 if s.kind == "cpu" else 0.2) for s in spells_1)
    gaps = np.diff([s.start for s in first(3, SpellSettings(mean_gap=2, mean_seconds=0.001))
                    ] + [0])[:-1]
    assert 0.5 < np.mean(gaps) < 6
    for bad in ("gap=0", "cpu=2", "speed=1"):
        with pytest.raises(ValueError):
            SpellSettings.parse(bad)


@pytest.mark.parametrize("scheme, s", [("naive", 0), ("crc", 2), ("frc", 1)])
def test_undecodable_probability_matches_the_binomial_tail(scheme, s):
    n, p = 6, 0.3
    code = make_code(scheme, n, s, construction="random") if scheme == "crc" else \
        make_code(scheme, n, s)
    if scheme == "frc":  # decodes unless some group of s + 1 is wholly delayed
        expected = 1 - (1 - p ** (s + 1)) ** (n // (s + 1))
    else:  # any n - s decode: undecodable when more than s are delayed
        expected = binom.sf(s, n, p)
    assert undecodable_probability(code, p) == pytest.approx(expected, rel=1e-12)


def test_network_bound_of_naive_is_bytes_over_the_link_plus_compute():
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    X = sp.random(400, 300, density=0.05, format="csr", random_state=1)
    n = 4
    code = make_code("naive", n, 0)
    workload = build_workload("naive", n, 0, X, code=code)
    hosts = [HostSpec(1.0, 10**9, None)] + [HostSpec(0.25, 10**6, None)] * n
    bound = network_bound(workload, hosts, 1e-6, code=code, delay=(0.5, 0.2))
    link = 8 * workload.point_bytes.max() / 10**6 + 8 * workload.message_bytes.max() / 10**6
    compute = 1e-6 * workload.message_nnz.max() / 0.25
    assert bound.transfer_seconds == pytest.approx(link)
    assert bound.compute_seconds == pytest.approx(compute)
    assert bound.wait_seconds == pytest.approx((1 - 0.5**n) * 0.2)
    assert bound.seconds == pytest.approx(link + compute + bound.wait_seconds)
    del rng


def test_command_line_errors_are_one_line(tmp_path):
    for args, fragment in [(["--hosts", "3"], "no command"),
                           (["--hosts", "1", "--", "true"], "at least 2 hosts"),
                           (["--hosts", "3", "--worker", "cpu=9000", "--", "true"], "CPU share")]:
        result = subprocess.run([sys.executable, "-m", "gc_fast.testbed", *args],
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], result.stderr


# ---- as root, on real namespaces --------------------------------------------------------------

def _testbed_missing():
    if os.geteuid() != 0:
        return "the test bed needs root"
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return "pyroute2 is not installed (pip install 'gc_fast[testbed]')"
    probe = subprocess.run([sys.executable, "-m", "gc_fast.testbed", "--hosts", "2",
                            "--profile", "unshaped", "--", "true"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode:
        return f"no test bed on this machine: {probe.stderr.strip()[-300:]}"
    return None


_MISSING = _testbed_missing()
needs_testbed = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")


def run_testbed(args, command, cwd, *, python=sys.executable, timeout=300):
    """python -m gc_fast.testbed ARGS -- COMMAND, as a subprocess."""
    return subprocess.run([str(python), "-m", "gc_fast.testbed", *map(str, args), "--",
                           *map(str, command)], capture_output=True, text=True, cwd=cwd,
                          env=mpi_env(), timeout=timeout)


def leftovers():
    """Ids of test beds whose owner has exited but whose namespaces, links or cgroups remain
    (a test bed another live process owns is not ours to judge)."""
    from gc_fast.testbed import cluster, network

    found = set(network.leftover_ids())
    for root in cluster._cgroup_roots():
        found.update(int(p.name[len(cluster.CGROUP_PREFIX):])
                     for p in root.glob(f"{cluster.CGROUP_PREFIX}*"))
    return sorted(i for i in found if not cluster._alive(i))


@needs_testbed
@pytest.mark.parametrize("python", [sys.executable, FT_PYTHON], ids=["mpich", "openmpi"])
def test_ranks_talk_over_tcp_at_the_shaped_rate(tmp_path, python):
    if not Path(python).exists():
        pytest.skip("no .venv-ft (Open MPI) beside the checkout")
    rate = 20_000_000
    result = run_testbed(["--hosts", "2", "--profile", "unshaped", "--worker", f"rate={rate}bit"],
                     [python, "-m", "gc_fast.testbed.probe", 2_000_000], tmp_path, python=python)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["hosts"] == ["h0", "h1"]
    # Shared memory between the namespaces would move 2 MB in about a millisecond.
    assert 0.5 * rate < probe["bits_per_second"] < 1.1 * rate, probe
    assert leftovers() == []


@needs_testbed
def test_crc_across_hosts_with_stragglers_equals_naive(tmp_path):
    common = ["--rows", 3000, "--features", 20000, "--iterations", 25, "--quiet",
              "--eval-every", 25]
    runs = {}
    for name, extra in [("naive", ["--scheme", "naive"]),
                        ("crc", ["--scheme", "crc", "--stragglers", 1,
                                 "--delay", "fixed:p=0.3,seconds=0.02"])]:
        out, trajectory = tmp_path / f"{name}.json", tmp_path / f"{name}.npy"
        result = run_testbed(
            ["--hosts", 3, "--worker", "cpu=0.5", "--report", tmp_path / f"{name}-hosts.json",
             "--natural-stragglers", "gap=0.5,seconds=0.3,seed=3",
             "--straggler-log", tmp_path / f"{name}-spells.jsonl"],
            [sys.executable, "-m", "gc_fast.train", *common, *extra, "--out", out,
             "--save-trajectory", trajectory], tmp_path)
        assert result.returncode == 0, result.stderr
        runs[name] = json.loads(out.read_text()), np.load(trajectory)
        report = json.loads((tmp_path / f"{name}-hosts.json").read_text())
        assert [h["name"] for h in report["hosts"]] == ["h0", "h1", "h2"]
        assert all(h["peak_memory_bytes"] > 0 for h in report["hosts"])
        logged = (tmp_path / f"{name}-spells.jsonl").read_text().splitlines()
        assert len(logged) >= 2 and len(report["spells"]) >= 1
        assert {json.loads(line)["host"] for line in logged} <= {1, 2}
    summary = runs["crc"][0]["summary"]
    assert summary["shared_memory"] is False
    assert summary["messages_stale"] > 0  # the injected stragglers were really skipped
    assert max_relative_difference(runs["crc"][1], runs["naive"][1]) < 1e-9
    assert leftovers() == []


@needs_testbed
def test_a_rank_over_its_memory_cap_is_killed_and_named(tmp_path):
    allocate = "import numpy, socket; x = numpy.ones(400 * 2**20 // 8) if socket.gethostname() == 'h1' else 0"
    result = run_testbed(["--hosts", "2", "--profile", "unshaped", "--worker", "memory=150m"],
                     [sys.executable, "-c", allocate], tmp_path)
    assert result.returncode != 0
    assert "host h1 ran out of memory" in result.stderr
    assert leftovers() == []


@needs_testbed
def test_a_set_too_large_for_a_host_trains_from_its_shards(tmp_path):
    """Hosts of 200 MB: the whole file is refused in one line naming the shard command; the
    sharded folder trains across them, exactly as the file does on this machine."""
    from helpers import train

    from gc_fast.data import amazon_like, dump_svmlight
    from gc_fast.data.shards import write_shards

    path, folder = tmp_path / "big.svm", tmp_path / "big"
    dump_svmlight(path, amazon_like(n_train=130_000, n_test=0, seed=5))
    write_shards(path, folder)
    common = ["--iterations", 4, "--eval-every", 4, "--quiet", "--scheme", "crc",
              "--stragglers", 1]
    hosts = ["--hosts", 5, "--profile", "unshaped", "--worker", "memory=200m"]
    refused = run_testbed(hosts, [sys.executable, "-m", "gc_fast.train", "--dataset", path,
                                  "--test-fraction", 0, *common], tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "python -m gc_fast.data shard" in refused.stderr
    out, trajectory = tmp_path / "sharded.json", tmp_path / "sharded.npy"
    result = run_testbed([*hosts, "--report", tmp_path / "hosts.json"],
                         [sys.executable, "-m", "gc_fast.train", "--dataset", folder, *common,
                          "--out", out, "--save-trajectory", trajectory], tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())["summary"]
    assert summary["shared_memory"] is False
    report = json.loads((tmp_path / "hosts.json").read_text())
    assert all(h["peak_memory_bytes"] < 200 * 2**20 for h in report["hosts"][1:])
    _, reference = train(5, ["--dataset", path, "--test-fraction", 0, *common[:-4],
                             "--scheme", "naive"], tmp_path, "file")
    assert max_relative_difference(np.load(trajectory), reference) < 1e-9
    assert leftovers() == []


def start_sleeping_job(n_hosts, cwd):
    """A test bed running `sleep 300` on every host, returned once the sleeps have started."""
    job = subprocess.Popen([sys.executable, "-m", "gc_fast.testbed", "--hosts", str(n_hosts),
                            "--profile", "unshaped", "--", "sleep", "300"],
                           stderr=subprocess.PIPE, text=True, cwd=cwd, env=mpi_env())
    for _ in range(300):
        time.sleep(0.1)
        if subprocess.run(["pgrep", "-f", "^sleep 300"], capture_output=True).returncode == 0:
            break
    return job


@needs_testbed
def test_teardown_after_an_interrupted_job_leaves_nothing(tmp_path):
    job = start_sleeping_job(3, tmp_path)
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 130 and "torn down" in stderr
    assert leftovers() == []
    assert subprocess.run(["pgrep", "-f", "^sleep 300"], capture_output=True).returncode == 1
    # A second test bed starts right after.
    again = run_testbed(["--hosts", "2", "--profile", "unshaped"], ["true"], tmp_path)
    assert again.returncode == 0, again.stderr


@needs_testbed
def test_leftovers_of_a_killed_test_bed_are_swept(tmp_path):
    job = start_sleeping_job(2, tmp_path)
    job.kill()  # no chance to tear down
    job.wait()
    assert leftovers() != []
    again = run_testbed(["--hosts", "2", "--profile", "unshaped"], ["true"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert leftovers() == []
    assert subprocess.run(["pgrep", "-f", "^sleep 300"], capture_output=True).returncode == 1
