"""Comparing schemes: simulate every (scheme, s) under the same delays, plan, tabulate, plot."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..codes import make_code
from .workload import build_workload, simulate_iterations, summarize

EXACT_MAX_WORKERS = 32  # the exact decode rule (code objects) by default up to this n


def configurations(schemes, stragglers, n_workers, *, explicit):
    """(scheme, s) pairs to simulate and the notes on skipped ones.

    naive runs once with s = 0. frc needs (s + 1) | n: an explicitly named frc
    with a bad s is an error, under "all" it is skipped with a note.
    """
    pairs, notes = [], []
    for scheme in schemes:
        for s in ([0] if scheme == "naive" else stragglers):
            if scheme in ("frc", "partial-frc") and n_workers % (s + 1):
                valid = [v for v in range(n_workers) if n_workers % (v + 1) == 0]
                message = (f"{scheme} needs (s + 1) to divide n = {n_workers}: "
                           f"s must be one of {valid}, got {s}")
                if explicit:
                    raise ValueError(message)
                notes.append(f"skipped {scheme} s={s}: (s + 1) does not divide n = {n_workers}")
                continue
            pairs.append((scheme, s))
    return pairs, notes


def make_exact_code(scheme, n, s, *, partitions_per_worker=None, construction=None, seed=0):
    """The code object the trainer would build: its placement and its exact decoder."""
    options = {}
    if scheme.startswith("partial-"):
        options["partitions_per_worker"] = partitions_per_worker or s + 2
    if construction is not None and scheme in ("crc", "partial-crc"):
        options["construction"] = construction
    try:
        return make_code(scheme, n, s, seed=seed, **options)
    except RuntimeError as error:
        raise ValueError(f"{error} (or pass --decode-rule structural)") from None


def compare(pairs, n_workers, X, costs, delays, factors, *, partitions_per_worker=None,
            construction=None, seed=0, decode_rule="auto"):
    """Simulate every (scheme, s) under the same delays; a list of result dicts.

    decode_rule: "exact" builds the code objects (their placement, supports
    and, for crc, decoder), "structural" does not, "auto" does for n <=
    EXACT_MAX_WORKERS. Each result: scheme, n_stragglers, exact (not ignore),
    decode_rule, supports, summarize's statistics and the times.
    """
    results = []
    for scheme, s in pairs:
        small = n_workers <= EXACT_MAX_WORKERS
        code = (make_exact_code(scheme, n_workers, s, partitions_per_worker=partitions_per_worker,
                                construction=construction, seed=seed)
                if decode_rule == "exact" or (decode_rule == "auto" and small) else None)
        workload = build_workload(scheme, n_workers, s, X,
                                  partitions_per_worker=partitions_per_worker, seed=seed, code=code)
        exact_rule = code is not None and scheme in ("crc", "partial-crc")
        times, _ = simulate_iterations(workload, costs, delays, compute_factor=factors,
                                       code=code if exact_rule else None)
        results.append({"scheme": scheme, "n_stragglers": s, "exact": scheme != "ignore",
                        "decode_rule": "exact" if exact_rule else "structural",
                        "supports": workload.supports, **summarize(times), "times": times})
    return results


def plan(results):
    """Best exact (scheme, s) by mean time, the runner-up and the margin; ignore listed apart."""
    exact = sorted((r for r in results if r["exact"]), key=lambda r: r["mean_s"])
    inexact = sorted((r for r in results if not r["exact"]), key=lambda r: r["mean_s"])
    if not exact:
        raise ValueError("--plan needs at least one exact scheme (naive, frc, crc, partial-*)")
    best = exact[0]
    chosen = {"best": _pick(best), "runner_up": None, "margin_s": None, "margin_percent": None,
              "best_inexact": _pick(inexact[0]) if inexact else None}
    if len(exact) > 1:
        runner = exact[1]
        chosen["runner_up"] = _pick(runner)
        margin = runner["mean_s"] - best["mean_s"]
        chosen["margin_s"] = margin
        chosen["margin_percent"] = (100 * margin / best["mean_s"]
                                    if np.isfinite(best["mean_s"]) and best["mean_s"] > 0 else None)
    return chosen


def _pick(result):
    return {key: result[key] for key in ("scheme", "n_stragglers", "mean_s", "p95_s")}


def milliseconds(seconds):
    """Seconds as milliseconds with three decimals ("inf" if not finite)."""
    return "inf" if not np.isfinite(seconds) else f"{1e3 * seconds:.3f}"


def format_table(header, rows):
    """Right-aligned columns separated by two spaces, the header first."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    return "\n".join("  ".join(str(cell).rjust(width)
                               for cell, width in zip(line, widths, strict=True))
                     for line in [header, *rows])


def results_table(results):
    """compare's results, one row per (scheme, s)."""
    header = ("scheme", "s", "exact", "mean ms", "std ms", "p50 ms", "p95 ms", "decode rule")
    rows = [(r["scheme"], r["n_stragglers"], "yes" if r["exact"] else "no",
             milliseconds(r["mean_s"]),
             "nan" if np.isnan(r["std_s"]) else f"{1e3 * r['std_s']:.3f}",
             milliseconds(r["p50_s"]), milliseconds(r["p95_s"]), r["decode_rule"])
            for r in results]
    return format_table(header, rows)


def validation_table(runs):
    """validate_run's rows: predicted against measured, one row per trainer run."""
    header = ("run", "scheme", "n", "s", "delay", "pred mean ms", "meas mean ms", "error %",
              "pred p50 ms", "meas p50 ms")
    rows = [(Path(r["run"]).name, r["scheme"], r["n_workers"], r["n_stragglers"], r["delay"],
             milliseconds(r["predicted_mean_s"]), milliseconds(r["measured_mean_s"]),
             f"{r['error_percent']:+.1f}", milliseconds(r["predicted_p50_s"]),
             milliseconds(r["measured_p50_s"])) for r in runs]
    return format_table(header, rows)


def plan_text(chosen):
    """plan's choice in words: the best, the runner-up, the best inexact scheme."""
    best = chosen["best"]
    if not np.isfinite(best["mean_s"]):
        lines = ["plan: no exact scheme finishes every iteration under this straggler model"]
    else:
        lines = [f"plan: {best['scheme']} s={best['n_stragglers']}: {milliseconds(best['mean_s'])} "
                 f"ms per iteration expected (lowest among exact schemes)"]
    runner = chosen["runner_up"]
    if runner is not None:
        percent = chosen["margin_percent"]
        lines.append(f"runner-up: {runner['scheme']} s={runner['n_stragglers']}: "
                     f"{milliseconds(runner['mean_s'])} ms (+{milliseconds(chosen['margin_s'])} ms"
                     + (f", +{percent:.1f}%)" if percent is not None else ")"))
    inexact = chosen["best_inexact"]
    if inexact is not None:
        lines.append(f"inexact, not a candidate: {inexact['scheme']} s={inexact['n_stragglers']}: "
                     f"{milliseconds(inexact['mean_s'])} ms (drops the stragglers' data each "
                     f"iteration)")
    return "\n".join(lines)


def save_plot(results, path, title):
    """Mean iteration time against s, one line per scheme, p50-p95 band (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for scheme in dict.fromkeys(r["scheme"] for r in results):
        rows = [r for r in results if r["scheme"] == scheme]
        s = [r["n_stragglers"] for r in rows]
        mean = np.array([1e3 * r["mean_s"] for r in rows])
        if scheme == "naive":
            axes.axhline(mean[0], color="gray", linestyle="--", label="naive")
            continue
        line, = axes.plot(s, mean, marker="o", linestyle=":" if scheme == "ignore" else "-",
                          label=scheme + (" (inexact)" if scheme == "ignore" else ""))
        axes.fill_between(s, [1e3 * r["p50_s"] for r in rows], [1e3 * r["p95_s"] for r in rows],
                          color=line.get_color(), alpha=0.1)
    axes.set_xticks(sorted({r["n_stragglers"] for r in results if r["scheme"] != "naive"}))
    axes.set_xlabel("stragglers tolerated, s")
    axes.set_ylabel("time per iteration (ms): mean, p50-p95 band")
    axes.set_title(title, fontsize=9)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
