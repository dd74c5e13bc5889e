"""A small neural network trained with gradient coding, under injected stragglers.

    python examples/digits_mlp.py              # local mode: simulated workers, virtual clock
    mpirun -n 5 python examples/digits_mlp.py  # 4 MPI workers + a master, real sleeps

A one-hidden-layer network (tanh, softmax output, one flat parameter vector)
on scikit-learn's 8x8 digits, trained by Nesterov's method on the mean
cross-entropy. The rows are split into partitions; gc_fast.run places them on
the workers with a cyclic repetition code (CRC), so the master decodes the
exact gradient from any n - s workers and never waits for the straggler.
The same run without coding (naive: wait for every worker) under the same
stragglers follows the same trajectory, only slower.
"""
import argparse

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import gc_fast

N_HIDDEN = 32


def unpack(w, n_inputs, n_classes):
    """Views (W1, b1, W2, b2) into the flat parameter vector w."""
    sizes = [n_inputs * N_HIDDEN, N_HIDDEN, N_HIDDEN * n_classes, n_classes]
    W1, b1, W2, b2 = np.split(w, np.cumsum(sizes)[:-1])
    return W1.reshape(n_inputs, N_HIDDEN), b1, W2.reshape(N_HIDDEN, n_classes), b2


def forward(w, X, n_classes):
    """Hidden activations and class probabilities."""
    W1, b1, W2, b2 = unpack(w, X.shape[1], n_classes)
    hidden = np.tanh(X @ W1 + b1)
    scores = hidden @ W2 + b2
    scores -= scores.max(axis=1, keepdims=True)
    probabilities = np.exp(scores)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return hidden, probabilities


def cross_entropy_gradient(w, X, Y, n_total):
    """Gradient of sum over these rows of the cross-entropy, divided by n_total."""
    n_classes = Y.shape[1]
    W1, _, W2, _ = unpack(w, X.shape[1], n_classes)
    hidden, probabilities = forward(w, X, n_classes)
    d_scores = (probabilities - Y) / n_total
    d_hidden = (d_scores @ W2.T) * (1.0 - hidden**2)
    return np.concatenate([(X.T @ d_hidden).ravel(), d_hidden.sum(axis=0),
                           (hidden.T @ d_scores).ravel(), d_scores.sum(axis=0)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=8, help="multiple of the workers")
    parser.add_argument("--workers", type=int, default=4, help="workers of local mode")
    parser.add_argument("--delay", default="count:k=1,seconds=0.02",
                        help="injected stragglers (gc_fast.stragglers spec)")
    parser.add_argument("--lr", type=float, default=0.5)
    args = parser.parse_args()

    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.25, random_state=0)
    n_classes = 10
    Y_train = np.eye(n_classes)[y_train]
    bounds = np.arange(args.partitions + 1) * len(X_train) // args.partitions

    def partition_gradient(j, w):
        rows = slice(bounds[j], bounds[j + 1])
        return cross_entropy_gradient(w, X_train[rows], Y_train[rows], len(X_train))

    n_parameters = X_train.shape[1] * N_HIDDEN + N_HIDDEN + N_HIDDEN * n_classes + n_classes
    w0 = np.random.default_rng(0).normal(scale=0.1, size=n_parameters)
    common = dict(lr=args.lr, iterations=args.iterations, delay=args.delay,
                  n_workers=args.workers, keep_trajectory=True)
    runs = {
        "crc, s=1": gc_fast.run(partition_gradient, w0, args.partitions, scheme="crc",
                                n_stragglers=1, **common),
        "uncoded (naive)": gc_fast.run(partition_gradient, w0, args.partitions,
                                       scheme="naive", **common),
    }
    coded, uncoded = runs.values()
    if coded.rank != 0:
        return
    difference = (np.linalg.norm(coded.trajectory - uncoded.trajectory, axis=1)
                  / np.linalg.norm(uncoded.trajectory, axis=1)).max()
    clock = "virtual" if coded.mode == "local" else "wall"
    print(f"mode: {coded.mode}, {coded.code.n_workers} workers, {args.partitions} partitions, "
          f"delay {args.delay}")
    for name, result in runs.items():
        _, probabilities = forward(result.w, X_test, n_classes)
        accuracy = np.mean(probabilities.argmax(axis=1) == y_test)
        print(f"{name:>16}: test accuracy {accuracy:.4f}, "
              f"{1e3 * result.times.mean():.2f} ms/iteration ({clock}), "
              f"messages skipped {result.n_skipped}")
    print(f"max relative difference of the trajectories: {difference:.3e}")


if __name__ == "__main__":
    main()
