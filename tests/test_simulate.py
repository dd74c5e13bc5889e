"""The simulator: timing model, decode rules, delays, trace, plan and CLI (no timing assertions)."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from gc_fast import simulate
from gc_fast.codes import make_code
from gc_fast.data import amazon_like
from gc_fast.simulate import (
    CostModel,
    build_workload,
    decode_times,
    message_arrival_times,
    simulate_iterations,
    straggler_delays,
    timeline,
    trace_delays,
)
from gc_fast.simulate.calibrate import fit_contention, fit_pingpong, predicted_undelayed_seconds
from gc_fast.simulate.compare import make_exact_code
from gc_fast.simulate.workload import _carried_over
from gc_fast.stragglers import parse_delay

# A cluster with equal, round costs: a core per rank, fast links, no per-message CPU.
CLUSTER = CostModel(nnz_seconds=1e-8, bandwidth=1e10, latency=1e-4, message_seconds=0.0,
                    master_byte_seconds=1e-10, step_byte_seconds=1e-10)
SMALL = ["--rows", "1200", "--features", "3000"]


@pytest.fixture(scope="module")
def X():
    return amazon_like(n_train=1200, n_test=0, n_features=3000, seed=0).X_train


def run_scheme(X, scheme, n, s, delays, costs=CLUSTER, exact=False):
    code = make_exact_code(scheme, n, s) if exact else None
    workload = build_workload(scheme, n, s, X, code=code)
    times, _ = simulate_iterations(workload, costs, delays, code=code)
    return times


def test_carry_over_is_the_rest_of_the_partition_in_progress(X):
    workload = build_workload("crc", 4, 1, X)  # 2 partitions per worker, one message each
    assert workload.message_partitions.tolist() == [2, 2, 2, 2]
    compute = np.array([0.8, 0.8, 0.8, 0.8])
    events = simulate.Timeline(begin=np.array([[0.0, 0.0, 0.5, np.inf], [0.0] * 4]),
                               end=np.array([[0.2, 1.0, 1.3, np.inf], [1.0] * 4]),
                               arrival=np.zeros((2, 4)))
    decode = np.array([0.3, 0.5])
    carry = _carried_over(events, decode, compute, workload)
    # Iteration 0 decodes at 0.3: worker 0 is done, worker 1 is 0.6 of the way
    # through its first partition (0.4 s each), worker 2 is still delayed, 3 never came.
    np.testing.assert_allclose(carry, [[0, 0, 0, 0], [0, 0.4 * 0.4, 0, 0]])


def test_a_straggler_mid_partition_delays_its_next_iteration(X):
    delays = np.zeros((2, 4))
    delays[0, 3] = 2e-4  # worker 3 starts late: still computing when iteration 0 decodes
    workload = build_workload("crc", 4, 1, X)
    with_carry, arrival = simulate_iterations(workload, CLUSTER, delays)
    without = dataclasses.replace(workload, message_partitions=None)
    no_carry, arrival_before = simulate_iterations(without, CLUSTER, delays)
    assert with_carry[0] == no_carry[0]
    assert arrival[1, 3] > arrival_before[1, 3]  # it first finished its partition
    np.testing.assert_array_equal(arrival[1, :3], arrival_before[1, :3])


def test_crc_computes_more_so_it_is_slower_without_stragglers(X):
    delays = np.zeros((5, 4))
    naive = run_scheme(X, "naive", 4, 0, delays)
    crc = run_scheme(X, "crc", 4, 1, delays)
    assert np.all(naive < crc)


def test_one_slow_worker_costs_naive_a_second_but_not_crc(X):
    delays = straggler_delays(parse_delay("count:k=1,seconds=1"), 0, 20, 4)
    naive = run_scheme(X, "naive", 4, 0, delays)
    crc = run_scheme(X, "crc", 4, 1, delays, exact=True)
    assert np.all(naive > 1.0) and np.all(naive < 1.1)
    assert np.all(crc < 0.1)


def test_ignore_is_never_slower_than_crc(X):
    delays = straggler_delays(parse_delay("exp:shift=0,mean=0.01"), 3, 30, 6)
    for s in (1, 2):
        assert np.all(run_scheme(X, "ignore", 6, s, delays) <= run_scheme(X, "crc", 6, s, delays))


def test_frc_decodes_with_fewer_than_n_minus_s_arrivals(X):
    # Groups {0,1,2} and {3,4,5}; four stragglers, one fast worker per group.
    delays = np.array([[0.0, 1.0, 1.0, 0.0, 1.0, 1.0]])
    frc = run_scheme(X, "frc", 6, 2, delays)
    crc = run_scheme(X, "crc", 6, 2, delays)
    assert frc[0] < 0.1 < 1.0 < crc[0]
    arrival = np.array([[0.1, 0.5, 0.6, 0.2, 0.7, 0.8]])
    decode, combined = decode_times("frc", 6, 2, arrival)
    assert decode[0] == 0.2 and combined[0].tolist() == [1, 0, 0, 1, 0, 0]


def first_decodable_prefix(code, order):
    return next((length for length in range(1, len(order) + 1)
                 if code.is_decodable(order[:length])), None)


@pytest.mark.parametrize("scheme, n, s, options", [
    ("naive", 5, 0, {}), ("ignore", 6, 2, {}), ("frc", 6, 1, {}), ("frc", 6, 2, {}),
    ("crc", 6, 2, {"construction": "random"}), ("crc", 7, 3, {}),
    ("partial-frc", 4, 1, {}), ("partial-crc", 5, 2, {}),
])
def test_decode_rules_agree_with_the_code_objects(scheme, n, s, options):
    code = make_code(scheme, n, s, **options)
    rng = np.random.default_rng(1)
    orders = [rng.permutation(code.n_messages) for _ in range(25)]
    arrival = np.empty((len(orders), code.n_messages))
    for row, order in enumerate(orders):
        arrival[row, order] = np.arange(1, code.n_messages + 1)
    structural, _ = decode_times(scheme, n, s, arrival)
    exact, combined = decode_times(scheme, n, s, arrival, code=code)
    expected = [first_decodable_prefix(code, order) for order in orders]
    assert exact.tolist() == expected
    assert np.all(structural >= exact)  # cyclic-mds codes may decode before n - s
    if options or not scheme.endswith("crc"):
        assert structural.tolist() == expected
    for row, order in enumerate(orders):
        vector = code.decode(order[:expected[row]])
        assert combined[row].tolist() == (vector != 0).tolist()


def test_delays_are_the_trainers_delay_model_draws():
    for spec in ("fixed:p=0.3,seconds=0.05", "count:k=2,seconds=1", "exp:shift=0.01,mean=0.02",
                 "fail:workers=2,at=3"):
        model = parse_delay(spec)
        assert np.array_equal(straggler_delays(model, 7, 12, 5),
                              model.delays_matrix(7, range(12), 5))
    slow = parse_delay("slow:workers=1,3,factor=4")
    assert simulate.compute_factors(slow, 4).tolist() == [slow.compute_factor(w) for w in range(4)]


def test_master_ingress_receives_one_message_at_a_time():
    costs = CostModel(bandwidth=1e6, latency=0.0, message_seconds=0.0)
    arrival = message_arrival_times(np.zeros(3), np.zeros(3), np.full(3, 1e3), costs)
    assert np.allclose(np.sort(arrival), [1e-3, 2e-3, 3e-3])
    later = message_arrival_times(np.zeros(3), [0.0, 0.0, 0.5], np.full(3, 1e3), costs)
    assert np.allclose(later, [1e-3, 2e-3, 0.501])


def test_workers_share_the_cores_with_the_master_and_background():
    costs = CostModel(bandwidth=1e12, latency=0.0, message_seconds=0.0, cores=1.0)
    # Two workers of 1 s on one core: both take 2 s (the idle master does not count).
    assert np.allclose(message_arrival_times([1.0, 1.0], [0.0, 0.0], [0.0, 0.0], costs), 2.0)
    # A 1 s delay: the other worker runs alone until then.
    assert np.allclose(message_arrival_times([1.0, 1.0], [0.0, 1.0], [0.0, 0.0], costs), [1.0, 2.0])
    loaded = CostModel(bandwidth=1e12, latency=0.0, message_seconds=0.0, cores=1.0, background=1.0)
    assert np.allclose(message_arrival_times([1.0], [0.0], [0.0], loaded), 2.0)


def test_second_message_arrives_after_the_first():
    costs = CostModel(bandwidth=1e12, latency=1e-3, message_seconds=0.0)
    events = timeline([0.3, 0.1, 0.3, 0.1], [[0.0, 0.2]], np.zeros(4), costs,
                      message_worker=[0, 0, 1, 1])
    assert np.allclose(events.arrival, [[0.301, 0.401, 0.501, 0.601]])
    assert np.allclose(events.end, [[0.4, 0.6]])


def test_ten_thousand_workers(tmp_path):
    out = tmp_path / "big.json"
    argv = ["--workers", "10000", "--stragglers", "1,4",
            "--scheme", "naive,ignore,frc,crc,partial-crc",
            "--delay", "exp:shift=0,mean=0.001", "--iterations", "3", "--cores", "inf",
            "--costs", str(write_costs(tmp_path)), "--rows", "30000", "--features", "20000",
            "--json", str(out)]
    assert simulate.main(argv) == 0
    results = json.loads(out.read_text())["results"]
    assert len(results) == 1 + 4 * 2
    assert all(np.isfinite(r["mean_s"]) for r in results)


def write_costs(tmp_path, costs=CLUSTER):
    path = tmp_path / "costs.json"
    costs.save(path)
    return path


def test_cost_model_json_round_trip(tmp_path):
    runs = ({"n_workers": 4, "measured_mean_s": 0.006, "predicted_mean_s": 0.0059},)
    costs = CostModel(nnz_seconds=2e-9, cores=2.0, background=1.5, poll_load=0.01, contention=0.14,
                      calibration_runs=runs)
    path = write_costs(tmp_path, costs)
    loaded = CostModel.load(path)
    assert CostModel.from_dict(costs.to_dict()) == costs
    assert loaded.nnz_seconds == costs.nnz_seconds and loaded.cores == 2.0
    assert loaded.contention == 0.14 and loaded.calibration_runs == runs
    old = costs.to_dict()
    del old["contention"], old["calibration_runs"]
    assert CostModel.from_dict(old).contention == 0.0  # cost files from before the field
    with pytest.raises(ValueError, match="contention"):
        CostModel(contention=-1.0)
    assert CostModel.from_dict(CLUSTER.to_dict()).cores == float("inf")
    with pytest.raises(ValueError, match="valid fields"):
        CostModel.from_dict({"bogus": 1})


def test_contention_slows_oversubscribed_cores_only():
    shared = CostModel(cores=2.0, contention=0.2)
    assert shared.rate(1, 0) == 1.0  # one rank: no oversubscription
    assert np.isclose(shared.rate(3, 0), 2.0 / 3.0 / (1.0 + 0.2 * 0.5))  # 3 ranks on 2 cores
    assert np.isclose(shared.rate(9, 0), 2.0 / 9.0 / (1.0 + 0.2))  # saturated from 4 ranks on
    assert np.isclose(shared.slowdown(13), shared.slowdown(4))
    assert np.isclose(shared.rate(1, 8), 1.0 / (1.0 + 0.2))  # waiting ranks count too
    assert CostModel(contention=0.2).rate(9, 0) == 1.0  # a core per rank


def test_fit_contention_reproduces_the_trainer_runs(X):
    base = CostModel(nnz_seconds=3e-9, bandwidth=1e10, latency=2e-4, message_seconds=5e-5,
                     poll_load=0.04, master_byte_seconds=2e-10, step_byte_seconds=2e-10, cores=2.0)
    truth = dataclasses.replace(base, contention=0.3)
    configurations = [("naive", 4, 0), ("naive", 8, 0), ("crc", 8, 3)]
    runs = [(scheme, n, s, predicted_undelayed_seconds(build_workload(scheme, n, s, X), truth))
            for scheme, n, s in configurations]
    contention, predicted = fit_contention(runs, X, base)
    assert contention == pytest.approx(0.3, rel=1e-3)
    assert np.allclose(predicted, [run[-1] for run in runs], rtol=1e-3)
    # Runs the uncontended model already explains give no contention.
    runs = [(scheme, n, s, predicted_undelayed_seconds(build_workload(scheme, n, s, X), base))
            for scheme, n, s in configurations]
    assert fit_contention(runs, X, base)[0] == pytest.approx(0.0, abs=1e-3)


def test_fit_pingpong_recovers_the_costs():
    message_seconds, bandwidth, poll_load, latency = 5e-5, 4e9, 0.02, 2e-4
    rounds = [{"think": think, "bytes": size,
               "cpu": [2 * message_seconds + 2 * size / bandwidth + poll_load * think] * 2,
               "one_way": latency + 2 * message_seconds + size / bandwidth}
              for think in (0.002, 0.008) for size in (8, 2 ** 18, 2 ** 22)]
    fitted = fit_pingpong({"poll_load": [0.019, 0.021], "rounds": rounds})
    assert np.allclose(fitted, (bandwidth, latency, message_seconds, poll_load), rtol=1e-6)


def test_trace_replays_hand_written_delays(tmp_path, X):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"delays": [[0, 0, 1.0, 0], [0, 0, 0, 0], [0, None, 0, 0]]}))
    delays, censored = trace_delays(path)
    assert delays.shape == (3, 4) and censored == 0 and np.isinf(delays[2, 1])
    naive = run_scheme(X, "naive", 4, 0, delays)
    assert naive[0] > 1.0 > naive[1] and np.isinf(naive[2])
    assert np.all(run_scheme(X, "crc", 4, 1, delays) < 0.1)
    out = tmp_path / "result.json"
    assert simulate.main(["--trace", str(path), "--scheme", "naive,crc",
                          "--costs", str(write_costs(tmp_path)), *SMALL, "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert results[0]["scheme"] == "naive" and results[0]["mean_s"] is None  # inf: never finishes
    assert results[1]["scheme"] == "crc" and results[1]["p95_s"] < 0.1


def test_bad_trace_is_one_line(tmp_path, capsys):
    path = tmp_path / "ragged.json"
    path.write_text(json.dumps({"delays": [[0, 0, 1], [0, 0]]}))
    assert simulate.main(["--trace", str(path), "--costs", str(write_costs(tmp_path)), *SMALL]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "equal-length rows" in lines[0]


def test_trace_from_trainer_arrivals():
    # Partial scheme layout: worker ranks 1, 1, 2, 2, 3, 3;
    # worker 3 was never waited for in iteration 0.
    trace = {"message_worker": [1, 1, 2, 2, 3, 3],
             "iterations": [{"arrival": [0.010, 0.012, 0.011, 0.013, None, None]},
                            {"arrival": [0.010, 0.020, 0.050, 0.060, 0.011, 0.012]}]}
    delays, censored = trace_delays(trace)
    assert censored == 1
    # Delays relative to the median arrival; the censored worker gets the lower bound.
    assert np.allclose(delays, [[0.0, 0.0005, 0.0005], [0.0, 0.039, 0.0]])


def test_plan_picks_a_coded_scheme_against_one_slow_worker(tmp_path, capsys):
    out = tmp_path / "plan.json"
    plot = tmp_path / "plan.png"
    argv = ["--workers", "4", "--plan", "--stragglers", "1", "--delay", "count:k=1,seconds=1",
            "--iterations", "10", "--costs", str(write_costs(tmp_path)), *SMALL, "--json", str(out),
            "--plot", str(plot)]
    assert simulate.main(argv) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    chosen = json.loads(out.read_text())["plan"]
    assert chosen["best"]["scheme"] in ("frc", "crc") and chosen["best"]["n_stragglers"] == 1
    assert chosen["best"]["mean_s"] < 0.1
    assert chosen["runner_up"] is not None and chosen["margin_s"] >= 0
    assert chosen["best_inexact"]["scheme"] == "ignore"
    printed = capsys.readouterr().out
    assert "plan:" in printed and "runner-up:" in printed and "inexact" in printed


@pytest.mark.parametrize("argv, expected", [
    (["--scheme", "bogus"], "valid schemes"),
    (["--workers", "4", "--stragglers", "4"], "[0, 4)"),
    (["--workers", "4", "--scheme", "frc", "--stragglers", "2"], "divide"),
    (["--delay", "sometimes"], "none | fixed"),
    (["--trace", "/nonexistent/trace.json"], "trace"),
])
def test_cli_errors_are_one_line(argv, expected, capsys, tmp_path):
    assert simulate.main([*argv, "--costs", str(write_costs(tmp_path)), *SMALL]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("gc_fast.simulate: error:") and expected in lines[0]


def test_module_entry_point_exits_nonzero_on_bad_input():
    result = subprocess.run([sys.executable, "-m", "gc_fast.simulate", "--scheme", "bogus"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("gc_fast.simulate: error: unknown scheme")


def test_validate_predicts_a_trainer_result(tmp_path, capsys):
    iterations = [{"time": 0.01, "arrival": [0.004, 0.005, None]} for _ in range(5)]
    run = {"config": {"scheme": "crc", "n_workers": 3, "n_stragglers": 1, "delay": "none",
                      "seed": 0, "dataset": "amazon-like", "rows": 1200, "features": 3000,
                      "partitions_per_worker": None, "construction": None},
           "iterations": iterations, "message_worker": [1, 2, 3]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    assert simulate.main(["--validate", str(path), "--costs", str(write_costs(tmp_path))]) == 0
    printed = capsys.readouterr().out
    assert "run.json" in printed and "10.000" in printed


def test_importing_the_api_loads_neither_the_command_line_nor_the_calibration():
    # Local mode imports gc_fast.simulate on every call: it must stay cheap.
    probe = ("import sys, gc_fast; before = set(sys.modules); import gc_fast.simulate; "
             "print(' '.join(sorted(set(sys.modules) - before)))")
    added = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           timeout=60, check=True).stdout.split()
    heavy = {"argparse", "subprocess", "shutil", "matplotlib", "mpi4py",
             "gc_fast.simulate.cli", "gc_fast.simulate.calibrate", "gc_fast.launch"}
    assert "gc_fast.simulate.workload" in added and not heavy & set(added)
