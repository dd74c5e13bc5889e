"""Every scheme through the real MPI trainer, same data, same injected stragglers.

    python bench/compare.py                   # the default grid, about 6 minutes on 2 cores
    python bench/compare.py --workers 8,12 --stragglers 1,2,3 --repeats 3 --iterations 40 \\
        --delay fixed:p=0.2,seconds=0.05     # a larger grid (about 15 minutes on 2 cores)
    python bench/compare.py --workers 4 --stragglers 1 --repeats 2 --iterations 10 \\
        --rows 2000 --features 5000 --out /tmp/c.json --figures /tmp/fig   # a smoke test
    python bench/compare.py --replot bench/results/compare.json   # tables and figures only
    python bench/compare.py --testbed t2.micro --workers 8 --stragglers 1,3 --delay none \
        --natural-stragglers gap=10,seconds=2 --out bench/results/compare_t2.micro.json \
        --figures docs/figures/t2.micro   # across an emulated cluster, its own stragglers (root)

For each repetition r (seed = --seed + r) the script writes the Amazon-shaped
data set (gc_fast.data.amazon_like with that seed; --rows/--features shrink
it) to a temporary .npz once, computes the trainer's default step size 1/L on
its training split once, and then runs, in a seeded random order,

    mpiexec -n N+1 python -m gc_fast.train --dataset DATA.npz --test-fraction F
        --scheme SCHEME --stragglers S --iterations T --delay SPEC --seed SEED
        --lr 1/L --eval-every 1 --quiet --out RUN.json

for every scheme (--schemes; default naive, ignore, frc, crc, partial-frc,
partial-crc) and every n in --workers and s in --stragglers. Within a
repetition every scheme sees the same data, the same train/test split, the
same step size and the same straggler draws (the trainer's delays depend only
on seed, iteration and worker); repetitions differ in all of them. naive
tolerates no straggler, so it runs once per n and repetition (s = 0) and is
the reference of every s. Invalid combinations (frc and partial-frc need
(s + 1) | n; s < n) are skipped and listed.

With --testbed PROFILE every run goes across the same emulated cluster (gc_fast.testbed:
one rank per host, shaped links, capped CPU, TCP), and --natural-stragglers slows random
hosts during each run from the same seeded schedule, counted from the run's launch; the
spells applied are kept with the run in --out.

Loading one .npz per rank instead of generating the data set on each of the
N + 1 ranks, and passing the step size the trainer would compute anyway, cut
a run's start-up on a small machine; the timed loop is the trainer's own.

Outputs:
- --out (default bench/results/compare.json): the settings, the skipped
  combinations, every run (command, wall time, the trainer's whole --out JSON:
  config, summary, per-iteration records), the summary table and the bytes
  table.
- --figures DIR (default docs/figures):
  compare_time_per_iteration.png  mean time per iteration per scheme, error
      bars = standard deviation over repetitions (min-max as whiskers), per n and s;
  compare_auc_vs_time.png  test AUC against cumulative iteration time (first
      repetition), one panel per (n, s);
  compare_arrivals.png  arrival time of every worker's message per iteration,
      naive and crc (first n, smallest s, first repetition); cells not waited
      for (the master had decoded) are grey with a cross, a dot marks an
      injected delay.
- The summary table and the bytes table on stdout. The bytes table sets the
  trainer's sparse messages (the worker's support only) against the paper's
  dense ones: n full-width float64 models sent, and n_features * 8 bytes for
  each message the paper's master waits for (naive n, ignore and crc n - s,
  frc the first of every group as counted in the run, the partial schemes'
  dense analogue n first messages plus the coded ones counted in the run),
  n of them on the wire each way.
"""
import argparse
import contextlib
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _mpi import environment, mpiexec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # the checkout's gc_fast

ALL_SCHEMES = ("naive", "ignore", "frc", "crc", "partial-frc", "partial-crc")
EXACT_SCHEMES = ("naive", "frc", "crc", "partial-frc", "partial-crc")
COLOURS = {"naive": "#4d4d4d", "ignore": "#e6a817", "frc": "#1f77b4", "crc": "#d62728",
           "partial-frc": "#8fbcdb", "partial-crc": "#f4a3a3"}
AMAZON_TRAIN, AMAZON_TEST = 26210, 6550


# ---- planning --------------------------------------------------------------------------------

def int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def scheme_list(text):
    schemes = [v.strip() for v in text.split(",") if v.strip()]
    if schemes == ["all"]:
        return list(ALL_SCHEMES)
    bad = [v for v in schemes if v not in ALL_SCHEMES]
    if bad or not schemes:
        raise argparse.ArgumentTypeError(f"unknown schemes {bad}; valid: {', '.join(ALL_SCHEMES)} or all")
    return schemes


def plan_cases(schemes, workers, stragglers):
    """(cases, skipped): cases are (scheme, n, s); skipped are dicts with the reason."""
    cases, skipped = [], []
    for n in workers:
        if "naive" in schemes:
            cases.append(("naive", n, 0))
        for s in stragglers:
            for scheme in schemes:
                if scheme == "naive":
                    continue
                reason = None
                if not 0 < s < n:
                    reason = f"s must be in 1..n-1 = 1..{n - 1}"
                elif scheme in ("frc", "partial-frc") and n % (s + 1):
                    reason = f"{scheme} needs (s + 1) | n: {s + 1} does not divide {n}"
                if reason:
                    skipped.append({"scheme": scheme, "n": n, "s": s, "reason": reason})
                else:
                    cases.append((scheme, n, s))
    return cases, skipped


# ---- running ---------------------------------------------------------------------------------





def prepare_data(directory, seed, rows, features, l2):
    """Write repetition `seed`'s data set as .npz; return (path, test_fraction, lr, shape info)."""
    import scipy.sparse as sp

    from gc_fast.data import amazon_like, load_dataset, save_npz_dataset
    from gc_fast.objective import lipschitz_logistic

    sizes = {}
    if rows is not None:  # as the trainer's --rows does
        sizes.update(n_train=rows, n_test=max(1, rows // 4))
    if features is not None:
        sizes["n_features"] = features
    data = amazon_like(seed=seed, **sizes)
    n_train, n_test = data.X_train.shape[0], data.X_test.shape[0]
    path = Path(directory) / f"amazon_like_seed{seed}.npz"
    save_npz_dataset(path, sp.vstack([data.X_train, data.X_test], format="csr"),
                     np.concatenate([data.y_train, data.y_test]))
    test_fraction = n_test / (n_train + n_test)
    split = load_dataset(path, test_fraction=test_fraction, seed=seed)  # the trainer's split
    lr = 1.0 / lipschitz_logistic(split.X_train, l2, seed=seed)  # the trainer's default step
    info = {"seed": seed, "n_train": int(split.X_train.shape[0]), "n_test": int(split.X_test.shape[0]),
            "n_features": int(split.X_train.shape[1]),
            "nnz_per_row": float(split.X_train.nnz / split.X_train.shape[0]), "lr": lr}
    return path, test_fraction, lr, info


def run_trainer(case, data_path, test_fraction, lr, seed, args, directory, bed=None):
    scheme, n, s = case
    out = Path(directory) / f"{scheme}_n{n}_s{s}_seed{seed}.json"
    argv = [sys.executable, "-m", "gc_fast.train",
            "--dataset", str(data_path), "--test-fraction", repr(test_fraction),
            "--scheme", scheme, "--stragglers", str(s), "--iterations", str(args.iterations),
            "--delay", args.delay, "--seed", str(seed), "--lr", repr(lr), "--l2", repr(args.l2),
            "--eval-every", "1", "--quiet", "--out", str(out)]
    pipes = dict(cwd=directory, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 text=True)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if bed is None:
            command = [mpiexec(), "-n", str(n + 1), *argv]
            process = subprocess.Popen(command, start_new_session=True, **pipes)
        else:
            process = bed.popen(argv, n + 1, **pipes)
            command = process.args
            if args.natural_stragglers is not None:
                from gc_fast.testbed.slowdowns import Slowdowns, SpellSettings

                log = out.with_suffix(".spells.jsonl")
                stack.enter_context(Slowdowns(bed, SpellSettings.parse(args.natural_stragglers),
                                              log))
        record = {"scheme": scheme, "n": n, "s": s, "seed": seed, "command": shlex.join(command)}
        try:
            stdout, stderr = process.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the launcher and the ranks it started
            stdout, stderr = process.communicate()
            record.update(returncode=None, error=f"timed out after {args.timeout} s")
        else:
            record["returncode"] = process.returncode
            if process.returncode:
                lines = (stderr or stdout).strip().splitlines()
                record["error"] = lines[-1] if lines else f"exit status {process.returncode}"
    record["wall_s"] = time.perf_counter() - started
    if not record.get("error"):
        record["result"] = json.loads(out.read_text())
        out.unlink()
    spells = out.with_suffix(".spells.jsonl")
    if spells.exists():
        record["spells"] = [json.loads(line) for line in spells.read_text().splitlines()]
    return record


def run_all(args):
    cases, skipped = plan_cases(args.schemes, args.workers, args.stragglers)
    for skip in skipped:
        print(f"skipping {skip['scheme']} n={skip['n']} s={skip['s']}: {skip['reason']}")
    n_runs = len(cases) * args.repeats
    print(f"{len(cases)} configurations x {args.repeats} repetitions = {n_runs} trainer runs, "
          f"{args.iterations} iterations each, --delay {args.delay}", flush=True)
    results = {
        "settings": {
            "argv": sys.argv[1:], "workers": args.workers, "stragglers": args.stragglers,
            "schemes": args.schemes, "repeats": args.repeats, "iterations": args.iterations,
            "delay": args.delay, "base_seed": args.seed, "rows": args.rows, "features": args.features,
            "l2": args.l2, "testbed": args.testbed,
            "natural_stragglers": args.natural_stragglers, "python": platform.python_version(), "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "skipped": skipped, "data": [], "runs": [],
    }
    started = time.perf_counter()
    done = 0
    with contextlib.ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="gc_compare_"))
        bed = None
        if args.testbed:
            from gc_fast.testbed import Testbed, TestbedUnavailable

            try:
                bed = stack.enter_context(Testbed.from_profile(args.testbed,
                                                               max(args.workers) + 1))
            except TestbedUnavailable as error:
                raise SystemExit(f"compare.py: {error}") from None
        for repetition in range(args.repeats):
            seed = args.seed + repetition
            data_path, test_fraction, lr, info = prepare_data(directory, seed, args.rows, args.features,
                                                              args.l2)
            results["data"].append(info)
            order = np.random.default_rng([args.seed, repetition]).permutation(len(cases))
            for index in order:
                record = run_trainer(cases[index], data_path, test_fraction, lr, seed, args,
                                     directory, bed)
                record["repetition"] = repetition
                results["runs"].append(record)
                done += 1
                scheme, n, s = cases[index]
                what = (f"{1e3 * record['result']['summary']['mean_iteration_s']:8.2f} ms/it"
                        if "result" in record else f"FAILED: {record['error']}")
                print(f"[{done:>3}/{n_runs} {time.perf_counter() - started:6.0f} s] rep {repetition} "
                      f"{scheme:<12} n={n:<3} s={s}  {what}  ({record['wall_s']:.1f} s)", flush=True)
            save(results, args.out)  # keep what is done if a later run is interrupted
    results["settings"]["wall_s"] = time.perf_counter() - started
    results["settings"]["loadavg_end"] = os.getloadavg()
    return results


def save(results, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, allow_nan=False))
    temporary.replace(path)


# ---- analysis --------------------------------------------------------------------------------

def completed(results):
    return [run for run in results["runs"] if "result" in run]


def paper_waited_messages(run):
    """Messages the paper's dense master waits for per iteration (mean), and on the wire."""
    scheme, n, s = run["scheme"], run["n"], run["s"]
    iterations = run["result"]["iterations"]
    arrived = np.mean([sum(a is not None for a in it["arrival"]) for it in iterations])
    if scheme == "naive":
        waited = n
    elif scheme in ("ignore", "crc"):
        waited = n - s  # the paper's code waits for exactly n - s and solves least squares
    elif scheme == "frc":
        waited = arrived  # first message of every group: the same rule as the trainer's
    else:  # partial: no paper code; dense analogue, all n first messages + the coded ones it needed
        waited = arrived
    on_wire = 2 * n if scheme.startswith("partial") else n
    return float(waited), on_wire, float(arrived)


def summary_rows(results):
    """One row per (scheme, n, s): spread over repetitions, paired speed-up vs naive."""
    runs = completed(results)
    naive = {(r["n"], r["repetition"]): r["result"]["summary"]["mean_iteration_s"]
             for r in runs if r["scheme"] == "naive"}
    keys = sorted({(r["n"], r["s"], ALL_SCHEMES.index(r["scheme"])) for r in runs})
    rows = []
    for n, s, scheme_index in keys:
        scheme = ALL_SCHEMES[scheme_index]
        group = [r for r in runs if (r["scheme"], r["n"], r["s"]) == (scheme, n, s)]
        means = np.array([r["result"]["summary"]["mean_iteration_s"] for r in group])
        medians = np.array([r["result"]["summary"]["median_iteration_s"] for r in group])
        # geometric mean of the per-repetition ratios (same seed, data and delays on both sides)
        speedups = [np.log(naive[(n, r["repetition"])] / r["result"]["summary"]["mean_iteration_s"])
                    for r in group if (n, r["repetition"]) in naive]
        aucs = [r["result"]["summary"]["final_test_auc"] for r in group]
        aucs = [a for a in aucs if a is not None]
        skipped_fraction = np.mean([
            np.mean([a is None for it in r["result"]["iterations"] for a in it["arrival"]]) for r in group])
        rows.append({
            "scheme": scheme, "n": n, "s": s, "repeats": len(group),
            "mean_ms": 1e3 * float(means.mean()), "std_ms": 1e3 * float(means.std(ddof=1)) if len(means) > 1 else 0.0,
            "min_ms": 1e3 * float(means.min()), "max_ms": 1e3 * float(means.max()),
            "median_ms": 1e3 * float(np.median(medians)),
            "speedup_vs_naive": float(np.exp(np.mean(speedups))) if speedups else None,
            "final_test_auc": float(np.mean(aucs)) if aucs else None,
            "final_train_loss": float(np.mean([r["result"]["summary"]["final_train_loss"] for r in group])),
            "max_decode_residual": float(max(r["result"]["summary"]["max_decode_residual"] for r in group)),
            "messages_skipped_fraction": float(skipped_fraction),
        })
    return rows


def bytes_rows(results):
    """Per (scheme, n, s): the trainer's bytes per iteration against the paper's dense messages."""
    runs = completed(results)
    keys = sorted({(r["n"], r["s"], ALL_SCHEMES.index(r["scheme"])) for r in runs})
    rows = []
    for n, s, scheme_index in keys:
        scheme = ALL_SCHEMES[scheme_index]
        group = [r for r in runs if (r["scheme"], r["n"], r["s"]) == (scheme, n, s)]
        n_features = group[0]["result"]["config"]["n_features"]
        dense = 8 * n_features
        counts = [paper_waited_messages(r) for r in group]
        waited = float(np.mean([c[0] for c in counts]))
        on_wire = counts[0][1]
        sent = float(np.mean([r["result"]["summary"]["bytes_sent_per_iteration"] for r in group]))
        received = float(np.mean([r["result"]["summary"]["bytes_received_per_iteration"] for r in group]))
        rows.append({
            "scheme": scheme, "n": n, "s": s, "n_features": n_features,
            "sent_bytes": sent, "received_bytes": received,
            "messages_received_before_decode": float(np.mean([c[2] for c in counts])),
            "paper_sent_bytes": float(n * dense), "paper_messages_waited": waited,
            "paper_received_waited_bytes": waited * dense,
            "paper_messages_on_wire": on_wire, "paper_received_on_wire_bytes": float(on_wire * dense),
            "sent_ratio_paper_over_ours": n * dense / sent,
            "received_ratio_paper_waited_over_ours": waited * dense / received,
        })
    return rows


def observations(rows):
    """Short lines on which scheme wins where, derived from the summary rows."""
    lines = []
    by_case = {}
    for row in rows:
        by_case.setdefault((row["n"], row["s"]), []).append(row)
    naive = {row["n"]: row for row in rows if row["scheme"] == "naive"}
    for (n, s), group in sorted(by_case.items()):
        if s == 0:
            continue
        exact = [r for r in group if r["scheme"] in EXACT_SCHEMES]
        if not exact:
            continue
        best = min(exact, key=lambda r: r["mean_ms"])
        line = (f"n={n} s={s}: fastest exact scheme {best['scheme']} {best['mean_ms']:.1f} ms/it"
                + (f" ({best['speedup_vs_naive']:.2f}x naive's {naive[n]['mean_ms']:.1f})"
                   if n in naive and best["speedup_vs_naive"] else ""))
        ignore = [r for r in group if r["scheme"] == "ignore"]
        if ignore and ignore[0]["final_test_auc"] is not None and best["final_test_auc"] is not None:
            line += (f"; ignore {ignore[0]['mean_ms']:.1f} ms/it, final test AUC "
                     f"{ignore[0]['final_test_auc']:.4f} vs {best['final_test_auc']:.4f} exact")
        lines.append(line)
    return lines


def _spread(row):
    return f"{row['mean_ms']:.1f} ± {row['std_ms']:.1f} [{row['min_ms']:.1f}-{row['max_ms']:.1f}]"


def print_tables(results):
    rows, byte_rows = results["summary"], results["bytes"]
    print("\nTime per iteration (mean over repetitions of each run's mean; ± sd [min-max]; vs naive: "
          "geometric mean of the per-repetition ratios), "
          f"{results['settings']['iterations']} iterations, --delay {results['settings']['delay']}")
    print(f"{'scheme':<12}{'n':>4}{'s':>3}{'reps':>5}  {'mean ms/it ± sd [min-max]':<30}{'median':>8}"
          f"{'vs naive':>10}{'test AUC':>10}{'train loss':>12}{'skipped':>9}")
    for r in rows:
        speedup = f"{r['speedup_vs_naive']:.2f}x" if r["speedup_vs_naive"] else "-"
        auc_text = f"{r['final_test_auc']:.4f}" if r["final_test_auc"] is not None else "n/a"
        print(f"{r['scheme']:<12}{r['n']:>4}{r['s']:>3}{r['repeats']:>5}  {_spread(r):<30}"
              f"{r['median_ms']:>8.1f}{speedup:>10}{auc_text:>10}{r['final_train_loss']:>12.6f}"
              f"{100 * r['messages_skipped_fraction']:>8.1f}%")
    print("\nBytes per iteration at the master: gc_fast (sparse, the worker's support) vs the paper "
          "(dense, n_features float64 per message)")
    print(f"{'scheme':<12}{'n':>4}{'s':>3}{'sent KB':>10}{'recv KB':>10}{'msgs':>6}"
          f"{'paper sent KB':>15}{'waited':>8}{'paper recv KB':>15}{'on wire KB':>12}{'sent x':>8}{'recv x':>8}")
    for r in byte_rows:
        print(f"{r['scheme']:<12}{r['n']:>4}{r['s']:>3}{r['sent_bytes'] / 1e3:>10.0f}"
              f"{r['received_bytes'] / 1e3:>10.0f}{r['messages_received_before_decode']:>6.1f}"
              f"{r['paper_sent_bytes'] / 1e3:>15.0f}{r['paper_messages_waited']:>8.1f}"
              f"{r['paper_received_waited_bytes'] / 1e3:>15.0f}{r['paper_received_on_wire_bytes'] / 1e3:>12.0f}"
              f"{r['sent_ratio_paper_over_ours']:>7.1f}x{r['received_ratio_paper_waited_over_ours']:>7.1f}x")
    print("  msgs: messages received before the decode (gc_fast); waited: the messages the paper's "
          "master waits for; on wire: all n (2n partial) dense messages the workers send;\n"
          "  sent x / recv x: paper dense bytes / gc_fast bytes (recv: waited-for messages only); gc_fast recv "
          "also counts stale messages of earlier iterations landing in this one")
    if results["skipped"]:
        print("\nSkipped: " + "; ".join(f"{k['scheme']} n={k['n']} s={k['s']} ({k['reason']})"
                                        for k in results["skipped"]))
    print("\nObservations:")
    for line in results["observations"]:
        print("  " + line)


# ---- figures ---------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_time_per_iteration(results, path):
    plt = _pyplot()
    rows = results["summary"]
    workers = sorted({r["n"] for r in rows})
    stragglers = sorted({r["s"] for r in rows if r["s"] > 0})
    schemes = [s for s in ALL_SCHEMES if any(r["scheme"] == s for r in rows)]
    fig, axes = plt.subplots(1, len(workers), figsize=(6.2 * len(workers), 4.2), squeeze=False,
                             sharey=True)
    width = 0.8 / len(schemes)
    for ax, n in zip(axes[0], workers, strict=True):
        for k, scheme in enumerate(schemes):
            xs, means, errors, lows, highs = [], [], [], [], []
            for i, s in enumerate(stragglers):
                match = [r for r in rows if r["scheme"] == scheme and r["n"] == n
                         and (r["s"] == s or scheme == "naive")]
                if not match:
                    continue
                r = match[0]
                xs.append(i + (k - (len(schemes) - 1) / 2) * width)
                means.append(r["mean_ms"])
                errors.append(r["std_ms"])
                lows.append(r["min_ms"])
                highs.append(r["max_ms"])
            if not xs:
                continue
            ax.bar(xs, means, width, yerr=errors, capsize=2, color=COLOURS[scheme],
                   label=scheme + (" (s=0)" if scheme == "naive" else ""), edgecolor="black", linewidth=0.4)
            ax.vlines(xs, lows, highs, color="black", linewidth=0.6, alpha=0.5)
        ax.set_xticks(range(len(stragglers)))
        ax.set_xticklabels([f"s = {s}" for s in stragglers])
        ax.set_title(f"n = {n} workers")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("mean time per iteration (ms)")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    settings = results["settings"]
    where = (f"across an emulated {settings['testbed']} cluster" if settings.get("testbed")
             else "under mpiexec on one machine")
    if settings.get("natural_stragglers") is not None:
        where += f",\nnatural stragglers {settings['natural_stragglers'] or 'default'}"
    fig.suptitle(f"Time per iteration, gc_fast trainer {where}, --delay {settings['delay']}, "
                 f"{settings['iterations']} iterations\nbars: mean of {settings['repeats']} repetitions "
                 "(each the mean of one run), error bars: sd, thin lines: min-max", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_auc_vs_time(results, path):
    plt = _pyplot()
    runs = [r for r in completed(results) if r["repetition"] == 0]
    workers = sorted({r["n"] for r in runs})
    stragglers = sorted({r["s"] for r in runs if r["s"] > 0}) or [0]
    fig, axes = plt.subplots(len(workers), len(stragglers), figsize=(4.2 * len(stragglers), 3.3 * len(workers)),
                             squeeze=False, sharey=True)
    for i, n in enumerate(workers):
        for j, s in enumerate(stragglers):
            ax = axes[i][j]
            for scheme in ALL_SCHEMES:
                match = [r for r in runs if r["scheme"] == scheme and r["n"] == n
                         and (r["s"] == s or scheme == "naive")]
                if not match:
                    continue
                records = match[0]["result"]["iterations"]
                elapsed = np.cumsum([it["time"] for it in records])
                auc = [np.nan if it["test_auc"] is None else it["test_auc"] for it in records]
                style = "--" if scheme == "ignore" else "-"
                ax.plot(elapsed, auc, style, color=COLOURS[scheme], label=scheme, linewidth=1.3)
            ax.set_title(f"n = {n}, s = {s}", fontsize=9)
            ax.grid(alpha=0.3)
            if i == len(workers) - 1:
                ax.set_xlabel("wall-clock time (s, cumulative iteration time)")
            if j == 0:
                ax.set_ylabel("test AUC")
    handles = {}
    for ax in axes.ravel():
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    order = [scheme for scheme in ALL_SCHEMES if scheme in handles]
    fig.legend([handles[k] for k in order], order, fontsize=8, loc="lower center", ncol=len(order))
    settings = results["settings"]
    fig.suptitle(f"Test AUC against training time, --delay {settings['delay']} "
                 f"(repetition 0, seed {settings['base_seed']})", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _arrival_panel(run):
    """(arrival ms [worker, iteration], state [worker, iteration], injected delay mask)."""
    from gc_fast.codes import make_code
    from gc_fast.stragglers import parse_delay

    result = run["result"]
    n, s, scheme = run["n"], run["s"], run["scheme"]
    records = result["iterations"]
    message_worker = np.array(result["message_worker"]) - 1
    T = len(records)
    arrival = np.full((n, T), np.nan)
    state = np.zeros((n, T), dtype=int)  # 0 used, 1 arrived with coefficient 0, 2 not waited for
    code = make_code(scheme, n, s, seed=run["seed"]) if scheme != "ignore" else None
    for t, it in enumerate(records):
        values = np.array([np.nan if a is None else a for a in it["arrival"]])
        coefficient = code.decode(it["used"]) if code is not None else None
        for m, worker in enumerate(message_worker):
            if np.isnan(values[m]):
                state[worker, t] = max(state[worker, t], 2)
                continue
            arrival[worker, t] = np.nanmax([arrival[worker, t], 1e3 * values[m]])
            if coefficient is not None and coefficient[m] == 0.0:
                state[worker, t] = max(state[worker, t], 1)
    delays = parse_delay(result["config"]["delay"]).delays_matrix(run["seed"], range(T), n).T
    return arrival, state, delays > 0


def plot_arrivals(results, path):
    plt = _pyplot()

    runs = [r for r in completed(results) if r["repetition"] == 0]
    workers = sorted({r["n"] for r in runs})
    if not workers:
        return None
    n = workers[0]
    stragglers = sorted({r["s"] for r in runs if r["n"] == n and r["scheme"] == "crc"})
    chosen = [r for r in runs if r["n"] == n and r["scheme"] == "naive"]
    chosen += [r for r in runs if r["n"] == n and r["scheme"] == "crc" and stragglers and r["s"] == stragglers[0]]
    if not chosen:
        return None
    panels = [(run, *_arrival_panel(run)) for run in chosen]
    vmax = max(np.nanmax(p[1]) for p in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 1.0 + 0.33 * n * len(panels)), squeeze=False)
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("#dddddd")
    for ax, (run, arrival, state, delayed) in zip(axes[:, 0], panels, strict=True):
        T = arrival.shape[1]
        image = ax.imshow(arrival, aspect="auto", cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest",
                          extent=(-0.5, T - 0.5, n + 0.5, 0.5))
        skipped = np.argwhere(state == 2)
        ax.scatter(skipped[:, 1], skipped[:, 0] + 1, marker="x", color="#b00000", s=22, linewidths=1.0,
                   label="not waited for (skipped)")
        unused = np.argwhere(state == 1)
        if len(unused):
            ax.scatter(unused[:, 1], unused[:, 0] + 1, marker="s", facecolors="none", edgecolors="white",
                       s=26, linewidths=0.9, label="arrived, coefficient 0")
        injected = np.argwhere(delayed)
        ax.scatter(injected[:, 1] - 0.3, injected[:, 0] + 1 - 0.25, marker="v", color="#ff9900",
                   edgecolors="black", linewidths=0.3, s=14, label="injected delay")
        times = 1e3 * np.array([it["time"] for it in run["result"]["iterations"]])
        ax.set_yticks(range(1, n + 1))
        ax.set_ylabel("worker (rank)")
        summary = run["result"]["summary"]
        ax.set_title(f"{run['scheme']} (n = {n}, s = {run['s']}): mean {1e3 * summary['mean_iteration_s']:.1f} "
                     f"ms/iteration, {int(np.sum(state == 2))} of {state.size} messages skipped; "
                     f"longest iteration {times.max():.0f} ms", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.08, 1.0), facecolor="#9a9a9a",
                  framealpha=1.0)
        fig.colorbar(image, ax=ax, pad=0.01, label="arrival (ms)")
    axes[-1][0].set_xlabel("iteration")
    fig.suptitle(f"Arrival time of each worker's message after the master sent the model; "
                 f"--delay {results['settings']['delay']}, seed {chosen[0]['seed']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def analyse(results, figures):
    results["summary"] = summary_rows(results)
    results["bytes"] = bytes_rows(results)
    results["observations"] = observations(results["summary"])
    figures = Path(figures)
    figures.mkdir(parents=True, exist_ok=True)
    paths = {"time_per_iteration": figures / "compare_time_per_iteration.png",
             "auc_vs_time": figures / "compare_auc_vs_time.png",
             "arrivals": figures / "compare_arrivals.png"}
    plot_time_per_iteration(results, paths["time_per_iteration"])
    plot_auc_vs_time(results, paths["auc_vs_time"])
    if plot_arrivals(results, paths["arrivals"]) is None:
        del paths["arrivals"]
    results["figures"] = {key: os.path.relpath(path, ROOT) for key, path in paths.items()}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    add = parser.add_argument
    add("--workers", type=int_list, default=[8, 12], help="n values, comma-separated (default 8,12)")
    add("--stragglers", type=int_list, default=[1, 3], help="s values, comma-separated (default 1,3)")
    add("--schemes", type=scheme_list, default=list(ALL_SCHEMES), help="comma-separated or all (default all)")
    add("--repeats", type=int, default=2, help="repetitions, seeds --seed, --seed+1, ... (default 2)")
    add("--iterations", type=int, default=30, help="iterations per run (default 30)")
    add("--delay", default="fixed:p=0.2,seconds=0.05", help="the trainer's --delay SPEC "
        "(default fixed:p=0.2,seconds=0.05)")
    add("--seed", type=int, default=0, help="seed of repetition 0 (default 0)")
    add("--rows", type=int, default=None, help=f"training rows (default Amazon's {AMAZON_TRAIN}; test rows = rows/4)")
    add("--features", type=int, default=None, help="features (default Amazon-like 241,915)")
    add("--l2", type=float, default=1e-4, help="L2 weight (default 1e-4, the trainer's)")
    add("--timeout", type=float, default=600.0, help="seconds before a run is killed (default 600)")
    add("--testbed", metavar="PROFILE", default=None,
        help="run every scheme across an emulated cluster of this profile (e.g. t2.micro; "
             "root), one rank per host")
    add("--natural-stragglers", metavar="SETTINGS", default=None,
        help="with --testbed: slow random hosts during each run (gc_fast.testbed's "
             "--natural-stragglers settings, e.g. gap=10,seconds=2,seed=0)")
    add("--out", default=str(HERE / "results" / "compare.json"), help="results JSON")
    add("--figures", default=str(ROOT / "docs" / "figures"), help="directory of the PNG figures")
    add("--replot", metavar="JSON", default=None,
        help="redo tables and figures from a saved results JSON, run nothing")
    args = parser.parse_args(argv)
    if args.replot:
        results = json.loads(Path(args.replot).read_text())
    else:
        if args.repeats < 1 or args.iterations < 1:
            parser.error("--repeats and --iterations must be >= 1")
        if args.natural_stragglers is not None and not args.testbed:
            parser.error("--natural-stragglers needs --testbed PROFILE")
        from gc_fast.stragglers import parse_delay

        try:
            parse_delay(args.delay)
        except ValueError as error:
            parser.error(str(error))
        results = run_all(args)
    if not completed(results):
        raise SystemExit("no run completed; see the errors above")
    analyse(results, args.figures)
    out = args.replot if args.replot and args.out == parser.get_default("out") else args.out
    save(results, out)
    print_tables(results)
    failed = [r for r in results["runs"] if "result" not in r]
    if failed:
        print(f"\n{len(failed)} runs failed:")
        for r in failed:
            print(f"  {r['scheme']} n={r['n']} s={r['s']} seed={r['seed']}: {r['error']}")
    print("\nwrote " + ", ".join([os.path.relpath(out)] + list(results["figures"].values())))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
