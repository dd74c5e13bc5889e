"""pytest configuration of the benchmark suite (bench/), separate from the tests (tests/).

The suite is run explicitly; `python -m pytest` alone runs tests/ only
(pyproject.toml: testpaths = ["tests"]), and this directory's modules are
named bench_*.py, so the tests never collect them. This conftest makes
`python -m pytest bench` collect every bench/bench_*.py (pytest's default
pattern is test_*.py); a file named on the command line is collected by
pytest itself as usual.

Commands (from the repository root, venv active):

    python -m pytest bench                          # the whole suite, a few minutes
    python -m pytest bench/bench_runtime.py         # one file
    python -m pytest bench -k "decode_vector"       # a selection
    python -m pytest bench --benchmark-disable      # run every benchmark once, as a smoke test

Save a baseline (kept in the repository under bench/.benchmarks-saved/<machine>/NNNN_baseline.json):

    python -m pytest bench --benchmark-storage=file://bench/.benchmarks-saved --benchmark-save=baseline

Compare a later change with the newest saved run (or name one: --benchmark-compare=0001), and fail
on a regression of the minimum by more than 20%:

    python -m pytest bench --benchmark-storage=file://bench/.benchmarks-saved \\
        --benchmark-compare --benchmark-compare-fail=min:20%
    pytest-benchmark --storage file://bench/.benchmarks-saved compare --group-by=name   # tables only

A flat JSON of one run (every benchmark's stats and extra_info) for scripts; it also holds
every round's time (stats.data, tens of MB), which bench/results/benchmark.json has stripped:

    python -m pytest bench --benchmark-json bench/results/benchmark.json
    python -c "import json; p = 'bench/results/benchmark.json'; d = json.load(open(p)); \\
        [b['stats'].pop('data', None) for b in d['benchmarks']]; json.dump(d, open(p, 'w'), indent=1)"

bench/.benchmarks-saved/Linux-CPython-3.11-64bit/0001_baseline.json and
bench/results/benchmark.json are the same session (2 shared cores, other jobs running).

Every benchmark reports its ratio to its baseline in extra_info (speedup_vs_paper: the
paper-style way of doing the same work; speedup_vs_cold for cached decoding); the tables
pytest-benchmark prints do not show extra_info, the JSON files do. The end-to-end benchmarks (bench_runtime.py) start
mpiexec; GC_BENCH_E2E_ITERATIONS (default 30) sets their iterations. bench_testbed.py runs the
trainer and the paper-style script across the emulated t2.micro cluster (gc_fast.testbed; root
and network namespaces, skipped with the reason elsewhere): its extra_info holds
speedup_vs_paper, the network bound of each case and the workers' CPU per iteration.
"""
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collect_file(file_path, parent):
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and file_path.parent == HERE and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
