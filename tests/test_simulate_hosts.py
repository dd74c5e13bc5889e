"""The simulator's separate hosts (CostModel.hosts): hand computations, no timing assertions."""
import dataclasses
import json

import numpy as np
import pytest

from gc_fast import simulate
from gc_fast.data import amazon_like
from gc_fast.simulate import (
    CostModel,
    Workload,
    build_workload,
    simulate_iterations,
    straggler_delays,
    timeline,
)
from gc_fast.simulate.bound import network_bound
from gc_fast.simulate.calibrate import (
    _holds,
    fit_network_costs,
    worker_cpu_measured,
    worker_cpu_seconds,
)
from gc_fast.simulate.compare import make_exact_code
from gc_fast.simulate.costs import on_hosts
from gc_fast.simulate.timing import _fair_rates, _host_links
from gc_fast.stragglers import parse_delay
from gc_fast.testbed.hosts import PROFILES, HostSpec, host_specs

MBIT = 10**6
# Round costs: every part but the one under test is zero.
BARE = dict(nnz_seconds=1e-8, latency=0.0, message_seconds=0.0, master_byte_seconds=0.0,
            step_byte_seconds=0.0)


def workload(n, point_bytes, message_bytes, nnz, n_features=1000):
    """A naive workload of one message per worker, with these sizes (hand-built)."""
    return Workload(scheme="naive", n_workers=n, n_stragglers=0, partitions_per_worker=None,
                    message_worker=np.arange(n), message_nnz=np.full(n, float(nnz)),
                    message_fraction=np.full(n, 1.0 / n),
                    message_bytes=np.full(n, float(message_bytes)),
                    point_bytes=np.full(n, float(point_bytes)), n_features=n_features,
                    supports="hand-built")


def one_iteration(work, costs, delays=None):
    delays = np.zeros((1, work.n_workers)) if delays is None else delays
    times, arrival = simulate_iterations(work, costs, delays)
    return float(times[0]), arrival[0]


def test_one_worker_is_point_compute_message_and_master_by_hand():
    costs = CostModel(nnz_seconds=1e-8, latency=2e-3, message_seconds=1e-3,
                      master_byte_seconds=1e-9, step_byte_seconds=1e-9, net_byte_seconds=1e-9,
                      hosts=[(0.5, 8 * MBIT), (0.25, 4 * MBIT)])
    work = workload(1, point_bytes=2e5, message_bytes=1e5, nnz=1e6, n_features=1000)
    master_rate, worker_rate = 1e6, 0.5e6  # bytes per second
    hand_over = (1e-9 * 2e5 + 1e-3 + 1e-9 * 2e5) / 0.5  # gather, handling, network stack
    point = 2e5 / min(master_rate, worker_rate) + 2e-3
    compute = (1e-8 * 1e6 + 2 * 1e-3) / 0.25  # kernel, handling the point and the message
    message = 1e5 / worker_rate + 2e-3
    receive = (1e-3 + 1e-9 * 1e5) / 0.5
    master = (1e-9 * 1e5 + 1e-9 * 8 * 1000) / 0.5  # decode-combine and step at its share
    seconds, arrival = one_iteration(work, costs)
    assert arrival[0] == pytest.approx(hand_over + point + compute + message + receive)
    assert seconds == pytest.approx(hand_over + point + compute + message + receive + master)


def test_a_slower_link_raises_the_time_as_computed():
    fast = CostModel(**BARE, hosts=[(1.0, None), (1.0, 80 * MBIT), (1.0, 80 * MBIT)])
    slow = dataclasses.replace(fast, hosts=[(1.0, None), (1.0, 80 * MBIT), (1.0, 20 * MBIT)])
    work = workload(2, point_bytes=1e6, message_bytes=5e5, nnz=1e5)
    compute = 1e-8 * 1e5
    before, arrival_fast = one_iteration(work, fast)
    after, arrival_slow = one_iteration(work, slow)
    assert before == pytest.approx((1e6 + 5e5) / 10e6 + compute)
    assert after == pytest.approx((1e6 + 5e5) / 2.5e6 + compute)
    assert arrival_slow[0] == pytest.approx(arrival_fast[0])  # the other worker's is as before


def test_a_smaller_cpu_share_stretches_only_the_compute():
    costs = CostModel(**BARE, hosts=[(1.0, None), (0.5, 80 * MBIT)])
    quarter = dataclasses.replace(costs, hosts=[(1.0, None), (0.125, 80 * MBIT)])
    work = workload(1, point_bytes=1e6, message_bytes=1e6, nnz=1e6)
    half_share, _ = one_iteration(work, costs)
    eighth_share, _ = one_iteration(work, quarter)
    assert eighth_share - half_share == pytest.approx(1e-2 / 0.125 - 1e-2 / 0.5)


def test_the_masters_link_is_shared_by_every_point_and_message():
    n, size = 4, 1e6
    costs = CostModel(**BARE, hosts=[(1.0, 80 * MBIT)] + [(1.0, None)] * n)
    work = workload(n, point_bytes=size, message_bytes=size, nnz=0)
    seconds, arrival = one_iteration(work, costs)
    # n points cross the master's 10 MB/s together (each at a quarter), then n messages.
    assert np.allclose(arrival, 2 * n * size / 10e6)
    assert seconds == pytest.approx(2 * n * size / 10e6)
    # Slower worker links than their fair share: each point moves at its worker's rate.
    capped = dataclasses.replace(costs, hosts=[(1.0, 80 * MBIT)] + [(1.0, 8 * MBIT)] * n)
    _, arrival = one_iteration(work, capped)
    assert np.allclose(arrival, 2 * size / 1e6)


def test_fair_sharing_gives_the_unused_share_to_the_faster_connections():
    rates = _fair_rates(np.array([[1.0, 5.0, 5.0, 0.0], [1.0, 1.0, 0.0, 0.0]]), 7.0)
    assert np.allclose(rates, [[1.0, 3.0, 3.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    # One connection carries its transfers one after another; a never-started one never ends.
    finish = _host_links(np.array([[0.0, 0.5, np.inf]]), np.ones(3), [0, 0, 1], np.ones(2), 5.0)
    assert np.allclose(finish[0, :2], [1.0, 2.0]) and np.isinf(finish[0, 2])
    # A transfer joining later slows the first one down for the overlap.
    finish = _host_links(np.array([[0.0, 0.5]]), np.ones(2), [0, 1], np.ones(2), 1.0)
    assert np.allclose(finish, [[1.5, 2.0]])


def test_a_delayed_worker_starts_its_delay_after_its_point():
    costs = CostModel(**BARE, hosts=[(1.0, None), (1.0, 8 * MBIT), (1.0, 8 * MBIT)])
    events = timeline(np.array([0.1, 0.1]), np.array([[0.0, 0.5]]), np.zeros(2), costs,
                      point_bytes=np.array([1e5, 1e5]))
    assert np.allclose(events.begin, [[0.1, 0.6]]) and np.allclose(events.end, [[0.2, 0.7]])


def test_a_small_cpu_share_limits_the_rate_its_network_stack_moves_bytes():
    costs = CostModel(**BARE, net_byte_seconds=1e-8, hosts=[(1.0, None), (0.01, 800 * MBIT)])
    work = workload(1, point_bytes=1e6, message_bytes=1e6, nnz=0)
    seconds, _ = one_iteration(work, dataclasses.replace(costs, master_byte_seconds=0.0))
    # 0.01 of a core at 10 ns per byte moves 1 MB/s, below the 100 MB/s link; the master pays
    # its network stack per byte handing the point over and receiving the message.
    assert seconds == pytest.approx(2 * 1e6 / 1e6 + 2 * 1e-8 * 1e6)


def test_hosts_round_trip_and_errors(tmp_path):
    hosts = [(spec.cpu, spec.rate_bits) for spec in host_specs(PROFILES["t2.micro"], 9)]
    costs = CostModel(net_byte_seconds=2e-9, wait_poll_seconds=1e-4, hosts=hosts,
                      cores=float("inf"))
    costs.save(tmp_path / "costs.json")
    loaded = CostModel.load(tmp_path / "costs.json")
    assert loaded.hosts == costs.hosts and loaded.net_byte_seconds == 2e-9
    assert json.loads((tmp_path / "costs.json").read_text())["hosts"][1] == [0.12, 1e8]
    assert CostModel(hosts=[HostSpec(0.5, None, None)]).hosts == ((0.5, None),)
    with pytest.raises(ValueError, match="cores must be inf"):
        CostModel(hosts=hosts, cores=2.0)
    with pytest.raises(ValueError, match="link rate"):
        CostModel(hosts=[(1.0, -5)])
    with pytest.raises(ValueError, match="9 hosts but 13 ranks"):
        costs.cpu_shares(13)
    shaped = on_hosts(CostModel(cores=2.0, background=1.0), hosts, "t2.micro")
    assert not shaped.shared and shaped.hosts == costs.hosts and "t2.micro" in shaped.source


def test_no_hosts_keeps_the_cluster_and_machine_models():
    costs = CostModel(bandwidth=1e6, latency=0.0, message_seconds=0.0)
    assert costs.link_rates(3) is None and np.allclose(costs.cpu_shares(3), 1.0)
    arrival = simulate.message_arrival_times(np.zeros(3), np.zeros(3), np.full(3, 1e3), costs)
    assert np.allclose(np.sort(arrival), [1e-3, 2e-3, 3e-3])  # one message at a time, as before


@pytest.fixture(scope="module")
def X():
    return amazon_like(n_train=1200, n_test=0, n_features=3000, seed=0).X_train


def test_the_network_bound_is_below_the_simulated_time(X):
    specs = host_specs(PROFILES["t2.micro"], 9)
    costs = on_hosts(CostModel(nnz_seconds=4e-9, net_byte_seconds=2e-9), specs, "t2.micro")
    for scheme, s in (("naive", 0), ("frc", 1), ("crc", 3)):
        code = make_exact_code(scheme, 8, s)
        work = build_workload(scheme, 8, s, X, code=code)
        times, _ = simulate_iterations(work, costs, np.zeros((1, 8)), code=code)
        bound = network_bound(work, specs, costs.nnz_seconds, code=code)
        assert bound.seconds <= times[0]


def test_cli_testbed_profile_and_a_slower_host(tmp_path, capsys):
    small = ["--rows", "1200", "--features", "3000", "--scheme", "naive", "--costs",
             str(tmp_path / "none.json")]
    CostModel(**BARE).save(tmp_path / "none.json")
    assert simulate.main(["--testbed-profile", "t2.micro", *small, "--json",
                          str(tmp_path / "a.json")]) == 0
    assert "separate hosts: master 1 core 1000 Mbit/s; 8 workers 0.12 core 100 Mbit/s" in (
        capsys.readouterr().out)
    assert simulate.main(["--testbed-profile", "t2.micro", "--host", "3:rate=10mbit", *small,
                          "--json", str(tmp_path / "b.json")]) == 0
    mean = [json.loads((tmp_path / f"{name}.json").read_text())["results"][0]["mean_s"]
            for name in "ab"]
    assert mean[1] > 5 * mean[0]  # the naive master waits for host 3's ten times slower link
    capsys.readouterr()
    assert simulate.main(["--host", "3:rate=10mbit", *small]) == 2
    assert "--host needs --testbed-profile" in capsys.readouterr().err
    assert simulate.main(["--testbed-profile", "nope", *small]) == 2


def fake_result(work, costs, delays, delay_text, code):
    """A trainer --out record whose workers used exactly worker_cpu_seconds."""
    cpu = worker_cpu_seconds(work, costs, delays) * len(delays)
    return {"config": {"scheme": work.scheme, "n_workers": work.n_workers,
                       "n_stragglers": work.n_stragglers, "seed": 0, "delay": delay_text},
            "iterations": [{"time": 0.1}] * len(delays),
            "summary": {"mean_iteration_s": 0.1, "master_cpu_s": 1.0,
                        "worker_stats": [{"cpu_seconds": c, "messages_sent":
                                          len(delays) * int(np.sum(work.message_worker == w))}
                                         for w, c in enumerate(cpu)]}}


def test_fit_network_costs_recovers_the_cpu_costs(X):
    specs = host_specs(PROFILES["t2.micro"], 9)
    truth = on_hosts(CostModel(nnz_seconds=4e-9, net_byte_seconds=2.5e-9, wait_poll_seconds=3e-4,
                               poll_load=0.05), specs, "t2.micro")
    results = []
    for scheme, s, delay in (("naive", 0, "none"), ("crc", 3, "none"),
                             ("naive", 0, "fixed:p=0.25,seconds=0.1")):
        code = make_exact_code(scheme, 8, s)
        work = build_workload(scheme, 8, s, X, code=code)
        delays = straggler_delays(parse_delay(delay), 0, 10, 8)
        results.append(fake_result(work, truth, delays, delay, code))
    start = dataclasses.replace(truth, net_byte_seconds=0.0, wait_poll_seconds=0.0, poll_load=0.0)
    fitted = fit_network_costs(results, X, start)
    assert fitted.net_byte_seconds == pytest.approx(2.5e-9, rel=1e-6)
    assert fitted.wait_poll_seconds == pytest.approx(3e-4, rel=1e-6)
    assert fitted.poll_load == pytest.approx(0.05, rel=1e-6)
    assert len(fitted.calibration_runs) == 3
    run = fitted.calibration_runs[0]
    assert run["fitted_worker_cpu_s"] == pytest.approx(run["measured_worker_cpu_s"])
    assert np.allclose(worker_cpu_measured(results[0]) * 10,
                       [w["cpu_seconds"] for w in results[0]["summary"]["worker_stats"]])


def test_an_inherited_lock_file_is_recognised(tmp_path):
    path = tmp_path / "testbed.lock"
    assert not _holds(path)
    with open(path, "a"):
        assert _holds(path)
