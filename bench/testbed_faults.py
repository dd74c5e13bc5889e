"""Network faults and the long run on the emulated cluster: links down, flapping, the deadline stop.

    python bench/testbed_faults.py [--iterations 10000] [--scenarios long,down_10s,...]
        [--out bench/results/testbed_faults.json]

Needs root (the test bed). Holds /tmp/testbed.lock while it uses the test bed (or inherits it from
`flock /tmp/testbed.lock python bench/testbed_faults.py ...`). Every run is
`python -m gc_fast.testbed --hosts 5 [faults] -- python -m gc_fast.train --rows 20000 --features
2000 ...` on t2.micro hosts (a 1-core master on 1 Gbit/s, four workers on 12% of a core and
100 Mbit/s: an iteration takes a few milliseconds and keeps the workers' links about a third
busy), CRC with s = 1 against naive without faults. The faults' clock is the trainer's first
checkpoint (iteration 100), so that they meet the training loop. Each host's memory (its cgroup's
anonymous memory) is sampled every second. Scenarios:

- naive: the reference, no faults (its whole trajectory).
- long: --iterations under natural stragglers (gap=3,seconds=1,seed=0): memory on every host
  over the run, every message accounted for, the final iterate and the loss every 100 iterations
  against naive's (no trajectory kept, so that the master's memory is the trainer's own).
- down_10s, down_30s: h2's link down 10 s / 30 s, 5 s into the run; down_30s_window: the
  second through the window shim (below).
- flap_30s: h2's link down and up every second for 30 s.
- stop: h2's and h3's links down 20 s with --deadline 3: the master's one line, its checkpoint,
  how the job ends (--timeout 90 bounds it); stop_abort: the same through a shim that ends the job
  with MPI_Abort when the trainer returns 3 (the change gc_fast/train.py needs), then a resume
  from its checkpoint on a healthy test bed, against naive's final iterate.
- saturated_down_3s: --rows 2000 --features 5000, where the workers' 100 Mbit/s links are the
  bottleneck (the master sends each a point per iteration at about the link's rate): h2 down 3 s;
  saturated_down_3s_window: the same through the window shim, against the first's final iterate.
  The window shim's master queues no new point for a worker whose previous point has not reached
  it yet (the change gc_fast/transports.py needs: today a worker cut off for T seconds comes back
  to T seconds of queued points, which it must receive one by one before its messages are
  current again).

Every run: the exit status and wall time, the trainer's and the test bed's lines, the faulted
workers' silences (longest run of iterations without their messages, and the share of later
iterations that used them), messages sent = used + stale + drained, the trajectory against
naive's, each host's memory over the training loop (start, end, highest, fitted growth) and its
samples, every second. Writes bench/results/testbed_faults.json.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _mpi import ROOT, environment

sys.path.insert(0, str(ROOT))
from gc_fast.simulate.calibrate import testbed_lock  # noqa: E402

DATA = ["--rows", "20000", "--features", "2000"]
SATURATED_DATA = ["--rows", "2000", "--features", "5000"]
HOSTS = 5
EVAL_EVERY = 100
ABORT_SHIM = '''"""gc_fast.train, ending the whole job with MPI_Abort when a run failed (status 3), after
the same grace as transports.abort_on_error (mpiexec forwards the master's line first)."""
import sys
import time

from gc_fast import train, transports

status = train.main(sys.argv[1:])
if status == 3:
    from mpi4py import MPI

    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(transports.ABORT_GRACE_SECONDS)
    MPI.COMM_WORLD.Abort(3)
sys.exit(status)
'''
WINDOW_SHIM = '''"""gc_fast.train whose master queues no new point for a worker whose previous point has not
reached it yet (MasterTransport._publish skips it until that Isend has completed)."""
import sys

from gc_fast import train, transports


def _publish(self, point):
    sent = 0
    for worker, support in enumerate(self.supports):
        if worker in self.dead:
            continue
        pool = self.send_pools[worker]
        pending = []
        for request, buffer in pool.in_flight:
            if transports._test_or_failed(request):
                pool.free.append(buffer)
            else:
                pending.append((request, buffer))
        pool.in_flight = pending
        if pending:
            continue
        buffer = pool.acquire()
        self._gather(point, support, buffer)
        sent += buffer.nbytes
        self._send(worker, buffer, self.iteration % self.period)
    return sent


transports.MasterTransport._publish = _publish
sys.exit(train.main(sys.argv[1:]))
'''


def scenarios(iterations):
    """name -> (test-bed options, trainer options, what the run keeps)."""
    crc = ["--scheme", "crc", "--stragglers", "1", "--iterations", str(iterations)]
    return {
        "naive": ([], ["--scheme", "naive", "--iterations", str(iterations)], "trajectory"),
        "long": (["--natural-stragglers", "gap=3,seconds=1,seed=0"], crc, "model"),
        "down_10s": (["--link-down", "h2:5:10"], crc, "trajectory"),
        "down_30s": (["--link-down", "h2:5:30"], crc, "trajectory"),
        "down_30s_window": (["--link-down", "h2:5:30"], crc, "trajectory"),
        "flap_30s": (["--flap", "h2:5:1:30"], crc, "trajectory"),
        "stop": (["--link-down", "h2:5:20", "--link-down", "h3:5:20", "--timeout", "90"],
                 [*crc, "--deadline", "3"], "model"),
        "stop_abort": (["--link-down", "h2:5:20", "--link-down", "h3:5:20", "--timeout", "90"],
                       [*crc, "--deadline", "3"], "model"),
        "saturated_down_3s": (["--link-down", "h2:5:3"], crc, "model"),
        "saturated_down_3s_window": (["--link-down", "h2:5:3"], crc, "model"),
    }


def run(directory, name, bed_options, train_options, keep, *, data=DATA, trainer=None,
        clock=True, resume=None):
    """One job across the test bed; what it left (files parsed) and how it ended."""
    folder = Path(directory, name)
    folder.mkdir()
    paths = {key: folder / f"{key}{suffix}" for key, suffix in
             [("out", ".json"), ("trajectory", ".npy"), ("model", ".npy"),
              ("checkpoint", ".npz"), ("report", "-report.json"), ("faults", "-faults.jsonl"),
              ("memory", "-memory.jsonl"), ("spells", "-spells.jsonl")]}
    bed = ["--hosts", str(HOSTS), "--report", str(paths["report"]),
           "--fault-log", str(paths["faults"]), "--memory-log", str(paths["memory"]),
           "--straggler-log", str(paths["spells"]), *bed_options]
    train = [*data, "--eval-every", str(EVAL_EVERY), "--quiet", "--out", str(paths["out"]),
             "--save-model", str(paths["model"]), *train_options]
    if keep == "trajectory":
        train += ["--save-trajectory", str(paths["trajectory"])]
    checkpoint = resume or paths["checkpoint"]
    train += ["--checkpoint", str(checkpoint), "--checkpoint-every", "100"]
    if resume is not None:
        train += ["--resume", str(resume)]
    if clock:
        bed += ["--fault-clock", str(paths["checkpoint"])]
    command = [sys.executable, "-m", "gc_fast.testbed", *bed, "--",
               *(trainer or [sys.executable, "-m", "gc_fast.train"]), *train]
    print(f"[{name}] {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, cwd=folder,
                            env=environment(), timeout=900)
    seconds = time.monotonic() - started
    lines = [line for line in result.stderr.splitlines() if line.startswith(("gc_fast.", "Abort("))
             or "BAD TERMINATION" in line]
    print(f"[{name}] exit {result.returncode} after {seconds:.1f} s: " + " | ".join(lines[1:]),
          flush=True)
    loaded = {key: (json.loads(path.read_text()) if path.suffix == ".json" else
                    [json.loads(line) for line in path.read_text().splitlines()]
                    if path.suffix == ".jsonl" else np.load(path) if path.suffix == ".npy"
                    else None) if path.exists() else None
              for key, path in paths.items() if key != "checkpoint"}
    loaded["checkpoint_iteration"] = None
    if Path(checkpoint).exists():
        with np.load(checkpoint) as saved:
            loaded["checkpoint_iteration"] = int(saved["iteration"])
    loaded.update(returncode=result.returncode, seconds=round(seconds, 2), lines=lines,
                  command=" ".join(["python", *command[1:]]).replace(sys.executable, "python"))
    return loaded


def accounting(out):
    """Messages sent by the workers against used + stale + drained at STOP."""
    summary, iterations = out["summary"], out["iterations"]
    used = sum(len(r["used"]) for r in iterations)
    stale = sum(r["stale_messages"] for r in iterations)
    drained = summary["messages_stale"] - stale
    sent = summary["messages_sent_by_workers"]
    return {"sent": sent, "received": summary["messages_received"], "used": used,
            "stale": stale, "drained": drained,
            "accounted": sent == summary["messages_received"] == used + stale + drained}


def silences(out, rank):
    """Worker `rank`'s longest silence (iterations without its messages) and whether it was used
    again afterwards."""
    messages = [m for m, w in enumerate(out["message_worker"]) if w == rank]
    silent = [any(r["arrival"][m] is None for m in messages) for r in out["iterations"]]
    times = [r["time"] for r in out["iterations"]]
    best, first = (0, -1, 0.0), None
    for index, quiet in enumerate([*silent, False]):
        if quiet and first is None:
            first = index
        elif not quiet and first is not None:
            spent = sum(times[first:index])
            if spent > best[2]:
                best = (first, index - 1, spent)
            first = None
    first, last, spent = best
    after = [not quiet for quiet in silent[last + 1:]]
    return {"worker": rank, "longest_silence_iterations": [first, last],
            "longest_silence_seconds": round(spent, 3),
            "iterations_after": len(after),
            "used_after_share": round(float(np.mean(after)), 3) if after else None,
            "first_used_after": (last + 1 + after.index(True)) if True in after else None,
            "messages_sent": out["summary"]["worker_stats"][rank - 1]["messages_sent"]}


def memory(samples, out):
    """Every host's anonymous memory over the training loop (from the per-second samples): the
    start (after the first tenth), end, highest, and the fitted growth in MiB per minute."""
    if not samples or out is None:
        return None
    at = np.array([s["at"] for s in samples])
    anon = np.array([[a or 0 for a in s["anon"]] for s in samples], dtype=float) / 2**20
    running = np.nonzero(anon[:, 1] > 0.5 * anon[:, 1].max())[0]
    end = at[running[-1]]
    total = out["summary"]["total_s"]
    window = (at >= end - 0.9 * total) & (at <= end)
    hosts = []
    for host in range(anon.shape[1]):
        values, times = anon[window, host], at[window]
        slope = float(np.polyfit(times, values, 1)[0] * 60) if len(values) >= 3 else None
        hosts.append({"name": f"h{host}", "samples": int(window.sum()),
                      "start_mib": round(float(np.median(values[:3])), 1),
                      "end_mib": round(float(np.median(values[-3:])), 1),
                      "max_mib": round(float(values.max()), 1),
                      "growth_mib_per_minute": None if slope is None else round(slope, 3)})
    return hosts


def samples(log):
    """The per-second memory samples, per host, in MiB: seconds after the launch, the cgroup's
    usage ("current") and its anonymous memory."""
    if not log:
        return None
    return {"at": [s["at"] for s in log],
            **{key: {f"h{host}": [round((s[key][host] or 0) / 2**20, 1) for s in log]
                     for host in range(len(log[0][key]))}
               for key in ("current", "anon")}}


def relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def losses(out):
    return np.array([r["train_loss"] for r in out["iterations"] if r["train_loss"] is not None])


def judge(name, runs, naive):
    """The record of one scenario."""
    result = runs[name]
    out = result["out"]
    record = {key: result[key] for key in ("command", "returncode", "seconds", "lines",
                                           "checkpoint_iteration")}
    record["link_faults"] = (result["report"] or {}).get("link_faults")
    if result["spells"] is not None:
        record["natural_straggler_spells"] = len(result["spells"]) // 2
    if out is None:
        return record
    summary = out["summary"]
    record.update(
        iterations=len(out["iterations"]),
        mean_ms=round(1e3 * summary["mean_iteration_s"], 3),
        median_ms=round(1e3 * summary["median_iteration_s"], 3),
        training_seconds=round(summary["total_s"], 2),
        messages=accounting(out),
        master_rss_mib={key: round(value / 2**20, 1)
                        for key, value in summary["master_rss_bytes"].items()},
        worker_rss_mib=[{"start": round(w["rss_start_bytes"] / 2**20, 1),
                         "end": round(w["rss_end_bytes"] / 2**20, 1),
                         "peak": round(w["peak_rss_bytes"] / 2**20, 1)}
                        for w in summary["worker_stats"]],
        memory=memory(result["memory"], out),
        memory_samples=samples(result["memory"]))
    faulted = sorted({e["host"] for e in record["link_faults"] or []})
    record["silences"] = [silences(out, host) for host in faulted]
    if naive is not None and name != "naive" and not name.startswith("saturated"):
        reference = naive["trajectory"]
        if result["trajectory"] is not None:
            difference = np.linalg.norm(result["trajectory"] - reference, axis=1)
            record["trajectory_vs_naive"] = float(np.max(
                difference / np.linalg.norm(reference, axis=1)))
        if result["model"] is not None:
            record["final_iterate_vs_naive"] = relative(result["model"], reference[-1])
        mine, theirs = losses(out), losses(naive["out"])
        if len(mine) == len(theirs):
            record["losses_vs_naive"] = float(np.max(np.abs(mine - theirs) / np.abs(theirs)))
    first = runs.get("saturated_down_3s")
    if (name == "saturated_down_3s_window" and first and first["model"] is not None
            and result["model"] is not None):
        record["final_iterate_vs_saturated_down_3s"] = relative(result["model"], first["model"])
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10_000)
    parser.add_argument("--scenarios", default=None,
                        help="comma-separated (default: all; naive always runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/testbed_faults.json")
    args = parser.parse_args()
    chosen = scenarios(args.iterations)
    if args.scenarios:
        chosen = {k: v for k, v in chosen.items()
                  if k == "naive" or k in args.scenarios.split(",")}
    started = time.time()
    runs, records = {}, {}
    with testbed_lock(), tempfile.TemporaryDirectory() as directory:
        shim, window = Path(directory, "train_with_abort.py"), Path(directory, "train_window.py")
        shim.write_text(ABORT_SHIM)
        window.write_text(WINDOW_SHIM)
        for name, (bed, train, keep) in chosen.items():
            options = {}
            if name.startswith("saturated"):
                options["data"] = SATURATED_DATA
            if name == "stop_abort":
                options["trainer"] = [sys.executable, str(shim)]
            if name.endswith("_window"):
                options["trainer"] = [sys.executable, str(window)]
            runs[name] = run(directory, name, bed, train, keep, clock=name != "naive",
                             **options)
            records[name] = judge(name, runs, runs["naive"])
            if name == "stop_abort" and runs[name]["checkpoint_iteration"]:
                resumed = f"{name}_resumed"
                runs[resumed] = run(directory, resumed, [], train, "model", clock=False,
                                    resume=Path(directory, name, "checkpoint.npz"))
                records[resumed] = judge(resumed, runs, runs["naive"])
                records[resumed]["resumed_from"] = runs[name]["checkpoint_iteration"]
    result = {
        "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
        "wall_minutes": round((time.time() - started) / 60, 1),
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(),
                    "load_average_at_end": os.getloadavg()},
        "setup": {"hosts": HOSTS, "profile": "t2.micro", "data": " ".join(DATA),
                  "saturated_data": " ".join(SATURATED_DATA), "iterations": args.iterations,
                  "eval_every": EVAL_EVERY},
        "scenarios": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({name: {k: r.get(k) for k in ("returncode", "seconds", "mean_ms",
                                                    "trajectory_vs_naive",
                                                    "final_iterate_vs_naive", "messages",
                                                    "silences")}
                      for name, r in records.items()}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
