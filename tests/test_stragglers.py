"""Tests for gc_fast.stragglers: spec parsing, reproducible delays, slow and failed workers."""
import numpy as np
import pytest

from gc_fast.stragglers import DelayModel, parse_delay

VALID_SPECS = {
    "none": DelayModel(),
    "fixed:p=0.25,seconds=1.5": DelayModel("fixed", probability=0.25, seconds=1.5),
    "count:k=2,seconds=0.1": DelayModel("count", count=2, seconds=0.1),
    "exp:shift=0.01,mean=0.2": DelayModel("exp", shift=0.01, mean=0.2),
    "slow:workers=1,3,factor=4": DelayModel("slow", workers=(1, 3), factor=4.0),
    "fail:workers=2,at=10": DelayModel("fail", workers=(2,), at=10),
}


@pytest.mark.parametrize("spec", sorted(VALID_SPECS))
def test_valid_specs_parse_and_round_trip(spec):
    model = parse_delay(spec)
    assert model == VALID_SPECS[spec]
    assert str(model) == spec
    assert parse_delay(str(model)) == model


@pytest.mark.parametrize("spec,expected", [
    (" fixed: p = 0.1 , seconds = 2 ", DelayModel("fixed", probability=0.1, seconds=2.0)),
    ("fail:at=0,workers=4,2,2", DelayModel("fail", workers=(2, 4), at=0)),
    ("slow:factor=1,workers=5", DelayModel("slow", workers=(5,), factor=1.0)),
    ("fixed:p=0.1234567890123,seconds=1e-3", DelayModel("fixed", probability=0.1234567890123, seconds=0.001)),
    ("count:k=0,seconds=0", DelayModel("count", count=0, seconds=0.0)),
])
def test_spec_variants_parse(spec, expected):
    model = parse_delay(spec)
    assert model == expected
    assert parse_delay(str(model)) == model


@pytest.mark.parametrize("spec", [
    "", "bogus", "fixed", "fixed:p=0.1", "fixed:p=0.1,seconds=1,extra=2", "fixed:p=1.5,seconds=1",
    "fixed:p=-0.1,seconds=1", "fixed:p=0.1,seconds=-1", "fixed:p=nan,seconds=1", "fixed:p=0.1,seconds=inf",
    "fixed:p=x,seconds=1", "fixed:p=0.1,seconds=1,", "fixed:p=0.1,p=0.2,seconds=1", "fixed:p=0.1,0.2,seconds=1",
    "count:k=-1,seconds=1", "count:k=1.5,seconds=1", "exp:shift=-1,mean=1", "exp:shift=0,mean=-1",
    "slow:workers=1,factor=0.5", "slow:workers=0,factor=2", "slow:workers=a,factor=2", "slow:factor=2",
    "fail:workers=2,at=-1", "fail:workers=2,at=1.5", "none:p=1", ":p=1", "fixed:=1,seconds=1", "fixed:0.1",
])
def test_invalid_specs_raise_one_line_naming_the_forms(spec):
    with pytest.raises(ValueError, match="valid forms: none \\| fixed:p=P,seconds=D") as error:
        parse_delay(spec)
    assert "\n" not in str(error.value)


def test_validate_checks_worker_numbers_and_count():
    parse_delay("fail:workers=4,at=0").validate(4)
    with pytest.raises(ValueError, match="1\\.\\.3"):
        parse_delay("fail:workers=4,at=0").validate(3)
    with pytest.raises(ValueError, match="1\\.\\.2"):
        parse_delay("slow:workers=1,3,factor=2").validate(2)
    with pytest.raises(ValueError, match="0\\.\\.2"):
        parse_delay("count:k=3,seconds=1").delays(0, 0, 2)


@pytest.mark.parametrize("spec", ["fixed:p=0.3,seconds=2", "count:k=3,seconds=2", "exp:shift=0.5,mean=1"])
def test_delays_are_reproducible_and_vary(spec):
    model = parse_delay(spec)
    first = model.delays(11, 5, 20)
    assert first.dtype == np.float64 and first.shape == (20,)
    assert np.array_equal(first, model.delays(11, 5, 20))
    assert np.array_equal(first, parse_delay(spec).delays(11, 5, 20))
    assert not np.array_equal(first, model.delays(11, 6, 20))
    assert not np.array_equal(first, model.delays(12, 5, 20))


@pytest.mark.parametrize("spec", ["fixed:p=0.3,seconds=2", "exp:shift=0.5,mean=1"])
def test_per_worker_draws_do_not_depend_on_the_number_of_workers(spec):
    model = parse_delay(spec)
    assert np.array_equal(model.delays(3, 7, 10), model.delays(3, 7, 1000)[:10])


@pytest.mark.parametrize("spec", ["fixed:p=0.3,seconds=2", "count:k=3,seconds=2", "exp:shift=0.5,mean=1",
                                  "fail:workers=2,5,at=4", "slow:workers=1,factor=3", "none"])
def test_delays_matrix_matches_delays_whatever_the_call_order(spec):
    model = parse_delay(spec)
    iterations = [9, 0, 3, 4, 3]
    matrix = model.delays_matrix(2, iterations, 8)
    assert matrix.shape == (5, 8)
    for row, iteration in reversed(list(enumerate(iterations))):
        assert np.array_equal(matrix[row], model.delays(2, iteration, 8))
    assert np.array_equal(model.delays_matrix(2, range(4), 8)[3], model.delays(2, 3, 8))


def test_fixed_delay_frequency():
    model = parse_delay("fixed:p=0.2,seconds=1.5")
    delays = model.delays_matrix(0, range(2000), 50)
    assert set(np.unique(delays)) == {0.0, 1.5}
    assert abs(np.mean(delays > 0) - 0.2) < 0.01
    per_worker = np.mean(delays > 0, axis=0)
    assert per_worker.min() > 0.15 and per_worker.max() < 0.25
    assert not np.any(parse_delay("fixed:p=0,seconds=1").delays_matrix(0, range(50), 10))
    assert np.all(parse_delay("fixed:p=1,seconds=1").delays_matrix(0, range(50), 10) == 1.0)


def test_count_delays_exactly_k_workers_uniformly():
    model = parse_delay("count:k=3,seconds=0.7")
    delays = model.delays_matrix(1, range(3000), 12)
    assert np.all(np.sum(delays == 0.7, axis=1) == 3)
    assert np.all((delays == 0.0) | (delays == 0.7))
    frequency = np.mean(delays > 0, axis=0)
    assert np.all(np.abs(frequency - 0.25) < 0.04)
    assert not np.array_equal(delays[0], delays[1]) or not np.array_equal(delays[1], delays[2])
    assert np.all(parse_delay("count:k=12,seconds=1").delays(0, 0, 12) == 1.0)


def test_count_draws_like_the_paper_style_baseline():
    """The baseline script delays choice(n, k) of a generator seeded (seed, iteration): same workers here."""
    model = parse_delay("count:k=2,seconds=1")
    for iteration in range(20):
        expected = np.random.default_rng([5, iteration]).choice(9, 2, replace=False)
        assert set(np.flatnonzero(model.delays(5, iteration, 9))) == set(expected)


def test_exponential_delays_statistics():
    delays = parse_delay("exp:shift=0.5,mean=2").delays_matrix(4, range(500), 100)
    assert delays.min() >= 0.5
    assert abs(delays.mean() - 2.5) < 0.05
    assert abs(np.median(delays - 0.5) - 2 * np.log(2)) < 0.05
    assert np.all(parse_delay("exp:shift=0.3,mean=0").delays(0, 0, 5) == 0.3)


def test_fail_stops_listed_workers_from_iteration_at():
    model = parse_delay("fail:workers=2,4,at=3")
    for iteration in range(6):
        delays = model.delays(0, iteration, 5)
        expected_failed = iteration >= 3
        assert np.isinf(delays[[1, 3]]).all() == expected_failed
        assert np.all(delays[[0, 2, 4]] == 0.0)
    assert all(model.compute_factor(worker) == 1.0 for worker in range(5))


def test_slow_workers_compute_slower_without_added_delay():
    model = parse_delay("slow:workers=1,3,factor=2.5")
    assert [model.compute_factor(worker) for worker in range(4)] == [2.5, 1.0, 2.5, 1.0]
    assert not np.any(model.delays_matrix(0, range(10), 4))


def test_none_never_delays():
    model = parse_delay("none")
    assert not np.any(model.delays_matrix(0, range(10), 6))
    assert model.compute_factor(0) == 1.0


def test_many_workers():
    delays = parse_delay("count:k=100,seconds=1").delays(5, 2, 10_000)
    assert delays.shape == (10_000,) and np.sum(delays > 0) == 100
    assert parse_delay("fixed:p=0.01,seconds=1").delays_matrix(5, range(20), 10_000).shape == (20, 10_000)


def test_pause_freezes_named_workers_at_one_iteration_only():
    model = parse_delay("pause:workers=2,3,at=4,seconds=0.5")
    assert str(model) == "pause:workers=2,3,at=4,seconds=0.5"
    assert model.pause(4, 1) == 0.5 and model.pause(4, 2) == 0.5
    assert model.pause(4, 0) == 0.0 and model.pause(3, 1) == 0.0 and model.pause(5, 1) == 0.0
    assert not model.delays(0, 4, 4).any()
    with pytest.raises(ValueError, match="missing key 'seconds'"):
        parse_delay("pause:workers=2,at=4")


def test_kill_names_each_workers_iteration_of_death():
    model = parse_delay("kill:workers=4,2,at=9,3")
    assert str(model) == "kill:workers=4,2,at=9,3" and parse_delay(str(model)) == model
    assert not model.killed(2, 1) and model.killed(3, 1) and model.killed(30, 1)
    assert not model.killed(8, 3) and model.killed(9, 3) and not model.killed(50, 0)
    delays = model.delays_matrix(0, range(12), 4)  # the simulator sees a dead worker as silent
    assert np.isinf(delays[3:, 1]).all() and np.isinf(delays[9:, 3]).all()
    assert (delays[:3] == 0).all() and (delays[:, [0, 2]] == 0).all()
    assert parse_delay("kill:workers=2,3,at=5").kill_at == (5, 5)
    with pytest.raises(ValueError, match="one per worker"):
        parse_delay("kill:workers=2,3,at=1,2,3")
    with pytest.raises(ValueError, match="named twice"):
        parse_delay("kill:workers=2,2,at=1")


def test_kill_at_setup_dies_before_the_first_iteration():
    model = parse_delay("kill:workers=3,2,at=setup,4")
    assert str(model) == "kill:workers=3,2,at=setup,4" and parse_delay(str(model)) == model
    assert model.killed_at_setup(2) and not model.killed_at_setup(1)
    assert not model.killed_at_setup(0) and not parse_delay("kill:workers=3,at=0").killed_at_setup(2)
    assert model.killed(0, 2) and not model.killed(3, 1) and model.killed(4, 1)
    delays = model.delays_matrix(0, range(6), 4)  # dead from iteration 0 on
    assert np.isinf(delays[:, 2]).all() and np.isinf(delays[4:, 1]).all()
    assert (delays[:4, 1] == 0).all() and (delays[:, [0, 3]] == 0).all()
    assert not parse_delay("fail:workers=2,at=0").killed_at_setup(1)
    with pytest.raises(ValueError, match="at=later"):
        parse_delay("kill:workers=2,at=later")
