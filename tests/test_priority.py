"""CPU priorities of ranks that share cores (gc_fast.priority), without MPI."""
import json
import os
import subprocess
import sys

import pytest

from gc_fast import priority


def test_auto_ranks_only_oversubscribed_nodes():
    assert priority.wanted("auto", ranks_on_node=9, cores=2)
    assert not priority.wanted("auto", ranks_on_node=2, cores=2)
    assert priority.wanted("on", ranks_on_node=1, cores=64)
    assert not priority.wanted("off", ranks_on_node=64, cores=1)
    with pytest.raises(ValueError, match="unknown priority mode 'fast'"):
        priority.wanted("fast", 9, 2)


def test_worker_nice_grows_from_one_and_stops_at_19():
    assert [priority.worker_nice(k) for k in range(8)] == [1, 4, 7, 10, 13, 16, 19, 19]


PROBE = """
import json, os
from gc_fast import priority
before = priority.autogroup_nice()
now = priority.lower_priority({nice})
print(json.dumps([before, now, os.nice(0), priority.autogroup_nice()]))
"""


def _probe(nice, *, own_session):
    result = subprocess.run([sys.executable, "-c", PROBE.format(nice=nice)], capture_output=True,
                            text=True, check=True, start_new_session=own_session)
    return json.loads(result.stdout)


@pytest.mark.skipif(priority.autogroup_nice() is None, reason="this kernel has no autogroups")
def test_a_session_leader_lowers_its_process_and_its_autogroup():
    if os.nice(0) > 7:
        pytest.skip("this test runs at a nice above 7 already")
    before, now, process_nice, group_nice = _probe(7, own_session=True)
    assert before == 0 and now == 7 and process_nice == 7 and group_nice == 7


def test_a_process_in_a_shared_session_leaves_the_session_alone():
    shared_before = priority.autogroup_nice()
    before, now, process_nice, group_nice = _probe(5, own_session=False)
    assert now == 5 and process_nice == 5
    assert group_nice == before == shared_before  # the caller's session keeps its nice


def test_priorities_are_only_ever_lowered():
    if os.nice(0) > 3:
        pytest.skip("this test runs at a nice above 3 already")
    # A process already at nice 9 asked for 3 stays at 9 (raising priority needs privilege).
    code = ("import os; os.nice(9); from gc_fast import priority; "
            "print(priority.lower_priority(3), os.nice(0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["9", "9"]
