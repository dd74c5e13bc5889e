"""How inexact --message-dtype float32 is: the decoded gradient's error, per scheme.

In process, no MPI. On the default Amazon-shaped data (gc_fast.data.load_data,
26,210 training rows, 241,915 features), at the query points of iterations
POINTS of a float64 NAG run (the trainer's: l2 = 1e-4, lr = 1/L), for each
scheme with n = 8 workers and every tolerated straggler pattern (every set of
s stragglers, all C(n, s), each missing its last message: its only one, the
coded one of a partial scheme; s = 0 for naive), the float32 transport's
decoded gradient

    g32 = sum_i a_i * f32(m_i),   m_i = sum_j B_ij g_j(f32(w))   (float64 sums)

is compared with the exact one g64 = sum_j g_j(w): the point w is rounded to
float32 on its way to the workers, each message on its way back, and the
decode runs in float64 on the rounded values. g_j is partition j's share of
the data term's gradient (gc_fast.problems.SparseLinearProblem's partitions,
1/N row weights); a = code.decode(arrived). Reported per scheme: the median
and the largest relative error ||g32 - g64|| / ||g64|| over points and
patterns (and the largest at each point), the largest with float64 messages
(the exact transport), with only the point rounded and with only the messages
rounded, and the conditioning of the decode: the largest |a_i|, ||a||_2, the
condition number of the rows of B the decode combines, and the amplification
sum_i |a_i| ||m_i|| / ||g64|| of the messages' rounding (its error is at most
that times float32's unit roundoff, 6e-8). For scale, rounding g64 itself to
float32 costs ~3e-8 (the "floor").

Then the trainer, float64 against float32 (mpiexec -n 9, 50 iterations,
naive and crc s = 3, three 20 ms stragglers an iteration; float64 over
--shared-memory off, the same wire): final training loss, test AUC, bytes
per iteration and the final iterates' relative distance.

    python bench/float32_error.py                 # table + bench/results/float32_error.json
    python bench/float32_error.py --no-trainer    # the in-process part only (~1 min)
"""
import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's gc_fast

import numpy as np  # noqa: E402
from _mpi import environment, mpiexec  # noqa: E402
from scipy.special import expit  # noqa: E402

from gc_fast.codes import make_code  # noqa: E402
from gc_fast.data import load_data  # noqa: E402
from gc_fast.objective import lipschitz_logistic, logistic_gradient  # noqa: E402
from gc_fast.optim import make_optimizer  # noqa: E402
from gc_fast.problems import SparseLinearProblem  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "float32_error.json"
N_WORKERS = 8
L2 = 1e-4
POINTS = (0, 10, 50)  # iterations of the float64 trajectory (0: w = 0, which float32 holds exactly)
SCHEMES = [("naive", 0, {}), ("frc", 1, {}), ("frc", 3, {}), ("crc", 1, {}), ("crc", 3, {}),
           ("crc", 1, {"construction": "random"}), ("crc", 3, {"construction": "random"}),
           ("partial-crc", 1, {}), ("partial-crc", 3, {})]
TRAINER_RUNS = [("naive", 0), ("crc", 3)]
TRAINER_ITERATIONS = 50
TRAINER_DELAY = "count:k=3,seconds=0.02"


def f32(values):
    """values rounded to float32, back in float64."""
    return values.astype(np.float32).astype(np.float64)


def trajectory_points(data, iterations):
    """{t: the query point of iteration t} of float64 NAG on the data term + L2 (the trainer's)."""
    X, y = data.X_train, data.y_train
    lr = 1.0 / lipschitz_logistic(X, L2, seed=0)
    optimizer = make_optimizer("nag", np.zeros(X.shape[1]), lr, l2=L2)
    points = {}
    for t in range(max(iterations) + 1):
        if t in iterations:
            points[t] = optimizer.query_point().copy()
        optimizer.step(logistic_gradient(X, y, optimizer.query_point(), 0.0))
    return points


def partition_gradients(X, y, bounds, w):
    """(k, d): row j is partition j's share of the data term's gradient at w (1/N weights)."""
    residual = -y * expit(-y * (X @ w)) / X.shape[0]
    return np.array([X[a:b].T @ residual[a:b] for a, b in zip(bounds[:-1], bounds[1:],
                                                              strict=True)])


def straggler_patterns(code):
    """Per tolerated pattern (every set of s stragglers), the arrived messages: a straggler's
    last message is missing (its only one; a partial scheme's coded one)."""
    n, s = code.n_workers, code.n_stragglers
    for late in itertools.combinations(range(n), s):
        yield [m for w in range(n) for m in code.messages_of(w)[:-1 if w in late else None]]


def measure(data, points, scheme, s, options):
    """The scheme's errors and decode conditioning over points x patterns."""
    code = make_code(scheme, N_WORKERS, s, **options)
    problem = SparseLinearProblem(data.X_train, data.y_train)
    problem.bind(code)
    X, y, bounds = data.X_train, data.y_train, problem.bounds
    vectors = [code.decode(arrived) for arrived in straggler_patterns(code)]
    assert all(a is not None for a in vectors), f"{scheme} s={s}: a pattern did not decode"
    per_point, all_errors = {}, []
    for t, w in points.items():
        exact_partitions = partition_gradients(X, y, bounds, w)
        exact = exact_partitions.sum(axis=0)
        scale = np.linalg.norm(exact)
        messages64 = code.B @ exact_partitions
        at_rounded_point = code.B @ partition_gradients(X, y, bounds, f32(w))
        messages32 = f32(at_rounded_point)
        sizes = np.linalg.norm(messages64, axis=1)
        errors = {name: [np.linalg.norm(a @ messages - exact) / scale for a in vectors]
                  for name, messages in (("float32", messages32), ("float64", messages64),
                                         ("point_only", at_rounded_point),
                                         ("messages_only", f32(messages64)))}
        all_errors += errors["float32"]
        per_point[t] = {
            "gradient_norm": float(scale),
            "float32_floor": float(np.linalg.norm(f32(exact) - exact) / scale),
            **{f"median_{name}": float(np.median(e)) for name, e in errors.items()},
            **{f"max_{name}": float(np.max(e)) for name, e in errors.items()},
            # sum_i |a_i| ||m_i|| / ||g||: how much the decode amplifies a message's rounding
            "max_amplification": float(max(np.abs(a) @ sizes for a in vectors) / scale),
        }
    used = [np.flatnonzero(a) for a in vectors]
    return {
        "scheme": scheme if not options else f"{scheme} ({options['construction']})",
        "s": s, "n_workers": N_WORKERS, "n_patterns": len(vectors),
        "median_error": float(np.median(all_errors)),
        "max_error": max(p["max_float32"] for p in per_point.values()),
        "max_error_float64": max(p["max_float64"] for p in per_point.values()),
        "max_error_point_only": max(p["max_point_only"] for p in per_point.values()),
        "max_error_messages_only": max(p["max_messages_only"] for p in per_point.values()),
        "max_amplification": max(p["max_amplification"] for p in per_point.values()),
        "max_abs_decode_coefficient": float(max(np.abs(a).max() for a in vectors)),
        "max_decode_norm": float(max(np.linalg.norm(a) for a in vectors)),
        # of the rows the decode combines (FRC's one per group: 1)
        "max_condition": float(max(np.linalg.cond(code.B[rows]) for rows in used)),
        "per_point": per_point,
    }


def error_table(rows):
    header = ("scheme", "s", "patterns", "median err", "max err", *(f"max t={t}" for t in POINTS),
              "f64 max", "point only", "msgs only", "max |a_i|", "max ||a||", "cond", "amplif.")
    cells = [(r["scheme"], r["s"], r["n_patterns"], f"{r['median_error']:.2e}",
              f"{r['max_error']:.2e}",
              *(f"{r['per_point'][t]['max_float32']:.2e}" for t in POINTS),
              f"{r['max_error_float64']:.1e}", f"{r['max_error_point_only']:.1e}",
              f"{r['max_error_messages_only']:.1e}",
              f"{r['max_abs_decode_coefficient']:.2f}", f"{r['max_decode_norm']:.2f}",
              f"{r['max_condition']:.1f}", f"{r['max_amplification']:.1f}") for r in rows]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *cells, strict=True)]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(line, widths, strict=True))
                     for line in [header, *cells])


def trainer_comparison(directory):
    """The trainer's final loss, AUC and bytes, float64 against float32."""
    runs = []
    for scheme, s in TRAINER_RUNS:
        outcome = {"scheme": scheme, "s": s, "n_workers": N_WORKERS,
                   "iterations": TRAINER_ITERATIONS, "delay": TRAINER_DELAY}
        finals = {}
        for dtype in ("float64", "float32"):
            out, model = Path(directory) / f"{scheme}-{dtype}.json", Path(directory) / "w.npy"
            command = [mpiexec(), "-n", str(N_WORKERS + 1), sys.executable, "-m",
                       "gc_fast.train", "--scheme", scheme, "--stragglers", str(s),
                       "--iterations", str(TRAINER_ITERATIONS), "--delay", TRAINER_DELAY,
                       "--message-dtype", dtype, "--shared-memory", "off", "--quiet",
                       "--eval-every", str(TRAINER_ITERATIONS), "--out", str(out),
                       "--save-model", str(model)]
            started = time.perf_counter()
            subprocess.run(command, env=environment(), cwd=directory, check=True,
                           timeout=900)
            summary = json.loads(out.read_text())["summary"]
            finals[dtype] = np.load(model)
            outcome[dtype] = {key: summary[key] for key in (
                "final_train_loss", "final_test_auc", "bytes_sent_per_iteration",
                "bytes_received_per_iteration", "mean_iteration_s", "max_decode_residual")}
            outcome[dtype]["wall_s_with_setup"] = time.perf_counter() - started
        exact, rounded = outcome["float64"], outcome["float32"]
        outcome["loss_relative_difference"] = (abs(rounded["final_train_loss"]
                                                   - exact["final_train_loss"])
                                               / exact["final_train_loss"])
        outcome["auc_difference"] = rounded["final_test_auc"] - exact["final_test_auc"]
        outcome["final_w_relative_difference"] = float(
            np.linalg.norm(finals["float32"] - finals["float64"])
            / np.linalg.norm(finals["float64"]))
        outcome["bytes_ratio"] = {
            way: rounded[f"bytes_{way}_per_iteration"] / exact[f"bytes_{way}_per_iteration"]
            for way in ("sent", "received")}
        runs.append(outcome)
    return runs


def trainer_table(runs):
    lines = ["scheme  s  dtype    train loss      test AUC  KB sent/it  KB recv/it"]
    for run in runs:
        for dtype in ("float64", "float32"):
            r = run[dtype]
            lines.append(f"{run['scheme']:>6} {run['s']:>2}  {dtype}  {r['final_train_loss']:.10f}"
                         f"  {r['final_test_auc']:.6f}  {r['bytes_sent_per_iteration'] / 1e3:10.1f}"
                         f"  {r['bytes_received_per_iteration'] / 1e3:10.1f}")
        lines.append(f"          loss rel. diff {run['loss_relative_difference']:.1e}, AUC diff "
                     f"{run['auc_difference']:+.1e}, final w rel. diff "
                     f"{run['final_w_relative_difference']:.1e}, bytes ratio sent "
                     f"{run['bytes_ratio']['sent']:.3f} received "
                     f"{run['bytes_ratio']['received']:.3f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-trainer", action="store_true", help="skip the mpiexec runs")
    args = parser.parse_args(argv)
    data = load_data("amazon-like")
    points = trajectory_points(data, POINTS)
    rows = [measure(data, points, scheme, s, options) for scheme, s, options in SCHEMES]
    print(f"decoded-gradient relative error, float32 point and messages, n = {N_WORKERS}, "
          f"points at iterations {list(POINTS)}; float32 floor (g64 rounded) "
          f"{max(p['float32_floor'] for r in rows for p in r['per_point'].values()):.1e}")
    print(error_table(rows), flush=True)
    results = {"data": data.name, "n_train": data.X_train.shape[0],
               "n_features": data.n_features, "l2": L2, "gradient_error": rows}
    if not args.no_trainer:
        with tempfile.TemporaryDirectory() as directory:
            results["trainer"] = trainer_comparison(directory)
        print(trainer_table(results["trainer"]))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
