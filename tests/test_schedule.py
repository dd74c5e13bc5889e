"""The priority order, the expected decode set and CPU priorities (gc_fast.schedule), no MPI."""
import json
import os
import subprocess
import sys
from itertools import combinations

import numpy as np
import pytest
from test_codes import PLACEMENT_CASES as CASES  # noqa: E402

from gc_fast import schedule
from gc_fast.codes import make_code


@pytest.mark.parametrize("scheme, n, s, options", CASES)
def test_priority_order_is_a_permutation_whose_prefixes_decode_earliest(scheme, n, s, options):
    code = make_code(scheme, n, s, **options)
    order = schedule.priority_order(code)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    if scheme == "ignore":
        return  # decodes from any n - s: nothing to order
    # The shortest decodable prefix of the order is as short as any decodable set of workers.
    shortest = min(k for k in range(1, n + 1)
                   if any(code.is_decodable(np.concatenate([code.messages_of(w) for w in ws]))
                          for ws in combinations(range(n), k)))
    prefix = next(k for k in range(1, n + 1)
                  if code.is_decodable(np.concatenate([code.messages_of(w) for w in order[:k]])))
    assert prefix == shortest


def test_priority_order_on_known_codes():
    np.testing.assert_array_equal(schedule.priority_order(make_code("frc", 8, 3)), [0, 4, 1, 5, 2, 6, 3, 7])
    np.testing.assert_array_equal(schedule.priority_order(make_code("frc", 6, 1)), [0, 2, 4, 1, 3, 5])
    np.testing.assert_array_equal(schedule.priority_order(make_code("crc", 8, 3)), np.arange(8))
    # CRC s = 1, n even: the rows are equal-weight pairs, and every other worker decodes.
    crc = make_code("crc", 8, 1)
    np.testing.assert_array_equal(schedule.priority_order(crc), [0, 2, 4, 6, 1, 3, 5, 7])
    np.testing.assert_allclose(schedule.expected_decode(crc) @ crc.B, 1.0, atol=1e-12)
    np.testing.assert_array_equal(np.flatnonzero(schedule.expected_decode(crc)), [0, 2, 4, 6])




def test_auto_ranks_only_oversubscribed_nodes():
    assert schedule.wanted("auto", ranks_on_node=9, cores=2)
    assert not schedule.wanted("auto", ranks_on_node=2, cores=2)
    assert schedule.wanted("on", ranks_on_node=1, cores=64)
    assert not schedule.wanted("off", ranks_on_node=64, cores=1)
    with pytest.raises(ValueError, match="unknown priority mode 'fast'"):
        schedule.wanted("fast", 9, 2)


def test_worker_nice_grows_from_one_and_stops_at_19():
    assert [schedule.worker_nice(k) for k in range(8)] == [1, 4, 7, 10, 13, 16, 19, 19]


PROBE = """
import json, os
from gc_fast import schedule
before = schedule.autogroup_nice()
now = schedule.lower_priority({nice})
print(json.dumps([before, now, os.nice(0), schedule.autogroup_nice()]))
"""


def _probe(nice, *, own_session):
    result = subprocess.run([sys.executable, "-c", PROBE.format(nice=nice)], capture_output=True,
                            text=True, check=True, start_new_session=own_session)
    return json.loads(result.stdout)


@pytest.mark.skipif(schedule.autogroup_nice() is None, reason="this kernel has no autogroups")
def test_a_session_leader_lowers_its_process_and_its_autogroup():
    if os.nice(0) > 7:
        pytest.skip("this test runs at a nice above 7 already")
    before, now, process_nice, group_nice = _probe(7, own_session=True)
    assert before == 0 and now == 7 and process_nice == 7 and group_nice == 7


def test_a_process_in_a_shared_session_leaves_the_session_alone():
    shared_before = schedule.autogroup_nice()
    before, now, process_nice, group_nice = _probe(5, own_session=False)
    assert now == 5 and process_nice == 5
    if shared_before is None:
        pytest.skip("this kernel has no autogroups: no session nice to leave alone")
    assert group_nice == before == shared_before  # the caller's session keeps its nice


def test_priorities_are_only_ever_lowered():
    if os.nice(0) > 3:
        pytest.skip("this test runs at a nice above 3 already")
    # A process already at nice 9 asked for 3 stays at 9 (raising priority needs privilege).
    code = ("import os; os.nice(9); from gc_fast import schedule; "
            "print(schedule.lower_priority(3), os.nice(0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["9", "9"]
