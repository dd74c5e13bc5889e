"""What a worker computes: the problems gc_fast trains and their per-worker tasks (no MPI).

A problem says, for a gradient code, which coordinates each worker receives
and sends (``supports``) and builds each worker's task (``task``). A task
computes a worker's coded messages at a point: ``run(point, outs)`` fills the
message buffers and yields after every partition (None), so the driver can
abandon a stale iteration between partitions, and yields the message index k
(in the worker's send order) once message k is complete, so the driver can
send it before computing the next one. A driver that gathers the point itself
gathers it into the task's ``point`` buffer and passes that, saving a copy.

Problems:

* ``SparseLinearProblem``: a linear model's data term on CSR rows (logistic
  or squared loss), computed by the fused kernels of gc_fast.kernels: the
  trainer's and the estimators' problem.
* ``DenseProblem``: user-supplied partition gradients (``gc_fast.run``).

Besides ``n_features``, ``bind(code)``, ``supports(code)`` and
``task(code, worker)``, a problem gives local mode's virtual clock its compute
load (``message_load``, ``local_costs``) and warms its kernels up before the
clock starts (``warm_up``).
"""
import dataclasses

import numpy as np

from . import kernels
from .codes import message_partitions
from .data import columns_touched, partition_bounds, worker_data_from_rows, worker_support

DEFAULT_PARTITION_SECONDS = 1e-3  # virtual compute of 1/n of a user's data, unless costs say


class SparseLinearTask:
    """Coded gradient of a linear model's data term on one worker's sparse rows.

    Messages are vectors on the worker's support (the columns its rows touch);
    message k is sum_j B[m_k, j] * row_scale * (gradient of partition j).
    The point and the message being summed are interleaved in one buffer
    (point[k] next to sum[k]), so the kernel's scatter finds in cache the lines
    its dot products just read; each finished message is copied out.
    """

    def __init__(self, worker_data, *, loss="logistic", backend="cython"):
        self.worker_data = worker_data
        self.support = worker_data.support
        self.loss = loss
        self.backend = backend
        self.message_lengths = [len(self.support)] * len(worker_data.message_plan)
        pairs = np.zeros(2 * len(self.support))
        self.point, self._sum = pairs[0::2], pairs[1::2]

    def run(self, point, outs):
        """Fill outs[k] with message k at `point` (values on the support)."""
        if point is not self.point:
            self.point[:] = point
        blocks = self.worker_data.blocks
        for index, plan in enumerate(self.worker_data.message_plan):
            self._sum[:] = 0.0
            for block_index, row_weight in plan:
                block = blocks[block_index]
                kernels.coded_gradient(
                    block.indptr, block.indices, block.data, block.y, row_weight,
                    self.point, self._sum, loss=self.loss, backend=self.backend,
                )
                yield None
            outs[index][:] = self._sum
            yield index


class DenseGradientTask:
    """Coded combination of user-supplied per-partition gradients (dense vectors).

    ``partition_gradient(j, point)`` returns the gradient of partition j at
    the point, as a vector on this task's support.
    """

    def __init__(self, partition_gradient, code, worker, support):
        self.partition_gradient = partition_gradient
        self.code = code
        self.support = support
        self.messages = code.messages_of(worker)
        self.message_lengths = [len(support)] * len(self.messages)
        self.point = np.empty(len(support))

    def run(self, point, outs):
        """Fill outs[k] with message k at `point` (values on the support)."""
        B = self.code.B
        for index, message in enumerate(self.messages):
            out = outs[index]
            out[:] = 0.0
            for j in np.flatnonzero(B[message]):
                out += B[message, j] * self.partition_gradient(int(j), point)
                yield None
            yield index


class PieceMessageTask:
    """A communication-efficient code's message (gc_fast.generator_codes.CommEfficientCode):
    the worker's partition gradients, one message of an inner task each, folded into one
    vector on piece coordinates: sum_j sum_u coefficient[j, u] * (piece u of g_j)."""

    def __init__(self, inner, code, worker, n_features):
        self.inner = inner
        self.support = inner.support
        self.point = inner.point
        message_support, piece_of, self._position = code.message_support(self.support,
                                                                         n_features)
        self._weights = code.coefficients(worker)[:, piece_of]  # (held partitions, support)
        self.message_lengths = [len(message_support)]
        self._gradients = [np.empty(len(self.support)) for _ in self._weights]

    def run(self, point, outs):
        """Fill outs[0] with the message at `point` (values on the message support)."""
        for index in self.inner.run(point, self._gradients):
            if index is None:
                yield None
        total = np.zeros(len(self.support))
        for weights, gradient in zip(self._weights, self._gradients, strict=True):
            total += weights * gradient
        outs[0][:] = np.bincount(self._position, weights=total, minlength=len(outs[0]))
        yield 0


class OnePerPartition:
    """The view of a code an inner task of PieceMessageTask sees: worker `worker` sends one
    message per held partition, the plain partition gradient."""

    def __init__(self, code, worker):
        self.held = code.partitions_of(worker)
        self.n_partitions = code.n_partitions
        self.B = np.zeros((len(self.held), code.n_partitions))
        self.B[np.arange(len(self.held)), self.held] = 1.0

    def partitions_of(self, worker):
        return self.held

    def messages_of(self, worker):
        return np.arange(len(self.held))


def split_task(build, code, worker, n_features):
    """build(code, worker) for a code with whole messages; wrapped in a PieceMessageTask (on
    OnePerPartition) for a communication-efficient code."""
    if code.scheme != "comm-efficient":
        return build(code, worker)
    return PieceMessageTask(build(OnePerPartition(code, worker), worker), code, worker,
                            n_features)


def warm_up(task):
    """Run a task once at the zero point: compiles and loads its kernels."""
    outs = [np.zeros(length) for length in task.message_lengths]
    for _ in task.run(np.zeros(len(task.support)), outs):
        pass


class SparseLinearProblem:
    """A linear model's data term on CSR rows, split into contiguous row ranges.

    Parameters
    ----------
    X : scipy.sparse.csr_matrix or gc_fast.data.shards.ShardedDataset
        Rows in canonical CSR form (float64, sorted int32 indices), or a
        sharded set (``python -m gc_fast.data shard``), whose partitions each
        worker reads itself: no rank then holds all the rows.
    y : ndarray or None
        Labels: {-1, +1} for the logistic loss, real values for the squared
        one; None with a sharded set, which carries its labels.
    loss : {"logistic", "squared"}
        The gradient is that of mean_i loss(x_i . w, y_i).
    backend : str
        Compute kernels (gc_fast.kernels.BACKENDS).
    """

    def __init__(self, X, y=None, loss="logistic", backend="cython"):
        self.shards = X if hasattr(X, "rows") else None
        if self.shards is not None:
            if y is not None:
                raise ValueError("a sharded data set carries its labels: pass y=None")
            self.X = self.y = None
            self.n_rows, self.n_features = X.n_train, X.n_features
        else:
            if y is None:
                raise ValueError("labels y are missing: pass y with the rows X")
            self.X, self.y = X, y
            self.n_rows, self.n_features = X.shape
        self.loss = loss
        self.backend = backend
        self.bounds = None

    def bind(self, code):
        """Split the rows into code.n_partitions ranges; ValueError if there are too few."""
        n_rows = self.n_rows
        if code.n_partitions > n_rows:
            raise ValueError(f"{code.n_partitions} partitions (one per worker) need at least "
                             f"{code.n_partitions} samples, got {n_rows} sample"
                             f"{'s' if n_rows != 1 else ''} (rows): use fewer workers or more rows")
        self.bounds = partition_bounds(n_rows, code.n_partitions)

    def partition_rows(self, j):
        """Partition j's rows and labels (read from its shards for a sharded set)."""
        start, stop = int(self.bounds[j]), int(self.bounds[j + 1])
        if self.shards is not None:
            return self.shards.rows(start, stop)
        return self.X[start:stop], self.y[start:stop]

    def supports(self, code):
        """Per worker, the columns its rows touch (a sharded set's are read from its files:
        under MPI the workers send theirs instead)."""
        if self.shards is None:
            return [worker_support(self.X, self.bounds, code.partitions_of(w))
                    for w in range(code.n_workers)]
        columns = [self.partition_rows(j)[0].indices for j in range(code.n_partitions)]
        return [columns_touched((columns[j] for j in code.partitions_of(w)), self.n_features)
                for w in range(code.n_workers)]

    def task(self, code, worker):
        """Worker `worker`'s rows and message plan as a SparseLinearTask."""
        def build(view, worker):
            data = worker_data_from_rows(self.partition_rows, self.n_features, view, worker,
                                         row_scale=1.0 / self.n_rows)
            return SparseLinearTask(data, loss=self.loss, backend=self.backend)

        return split_task(build, code, worker, self.n_features)

    def message_load(self, code):
        """(non-zeros, fraction of the rows) each message covers, for the virtual clock."""
        covers = message_partitions(code).astype(np.float64)
        if self.shards is None:
            nonzeros = np.diff(self.X.indptr[self.bounds]).astype(np.float64)
        else:
            nonzeros = np.array([self.partition_rows(j)[0].nnz
                                 for j in range(code.n_partitions)], dtype=np.float64)
        return covers @ nonzeros, covers @ (np.diff(self.bounds) / self.n_rows)

    def local_costs(self, costs):
        """The virtual clock costs this problem's kernels per non-zero, as calibrated."""
        return costs

    warm_up = staticmethod(warm_up)


class DenseProblem:
    """User-supplied partition gradients, as dense vectors.

    Parameters
    ----------
    partition_gradient : callable
        ``partition_gradient(j, w)``: the gradient of partition j at w, an
        array of w's shape.
    n_features : int
        Length of w.
    support : sequence of index arrays, optional
        Per partition, where its gradient can be non-zero: partition j's
        gradient is zero outside support[j] and depends on w only through
        w[support[j]]. Worker w then receives and sends only the union of its
        partitions' supports; partition_gradient still gets a full-length w
        (zero outside that union) and returns a full-length gradient.
    load_partition : callable, optional
        ``load_partition(j)``: partition j's data. Each worker calls it once
        per partition it holds, when its task is built, and partition_gradient
        is then called as ``partition_gradient(j, w, data_j)``: a worker
        holds only its own partitions' data.
    """

    def __init__(self, partition_gradient, n_features, support=None, load_partition=None):
        if not callable(partition_gradient):
            raise ValueError("partition_gradient must be a callable (j, w) -> gradient array")
        if load_partition is not None and not callable(load_partition):
            raise ValueError("partition_data must be a sharded folder or a callable j -> "
                             "partition j's data")
        self.partition_gradient = partition_gradient
        self.load_partition = load_partition
        self.n_features = int(n_features)
        self.partition_support = None if support is None else self._check_support(support)

    def _check_support(self, support):
        normalised = []
        for j, indices in enumerate(support):
            indices = np.unique(np.asarray(indices, dtype=np.int64).ravel())
            if indices.size and (indices[0] < 0 or indices[-1] >= self.n_features):
                raise ValueError(f"support[{j}] must hold indices in [0, {self.n_features}), "
                                 f"got {indices[0]}..{indices[-1]}")
            normalised.append(indices)
        return normalised

    def bind(self, code):
        """Check the problem fits `code` (one support per partition)."""
        if (self.partition_support is not None
                and len(self.partition_support) != code.n_partitions):
            raise ValueError(f"support must hold one index array per partition: "
                             f"{code.n_partitions}, got {len(self.partition_support)}")

    def _worker_support(self, code, worker):
        if self.partition_support is None:
            return np.arange(self.n_features, dtype=np.int64)
        chunks = [self.partition_support[j] for j in code.partitions_of(worker)]
        return np.unique(np.concatenate(chunks)) if chunks else np.zeros(0, np.int64)

    def supports(self, code):
        """Per worker, the coordinates it receives and sends."""
        return [self._worker_support(code, w) for w in range(code.n_workers)]

    def _gradient(self, j, w, held=None):
        gradient = np.asarray(self.partition_gradient(j, w) if held is None
                              else self.partition_gradient(j, w, held[j]), dtype=np.float64)
        if gradient.shape != (self.n_features,):
            raise ValueError(f"partition_gradient({j}, w) returned shape {gradient.shape}; it "
                             f"must return the gradient as an array of shape ({self.n_features},)")
        return gradient

    def task(self, code, worker):
        """Worker `worker`'s task: its coded messages on its support (with load_partition,
        its partitions' data loaded once, here)."""
        support = self._worker_support(code, worker)
        held = (None if self.load_partition is None else
                {int(j): self.load_partition(int(j)) for j in code.partitions_of(worker)})

        def gradient(j, point):
            return self._gradient(j, point, held)

        full_point = np.zeros(self.n_features)

        def gradient_on_support(j, point):
            full_point[support] = point
            return gradient(j, full_point)[support]

        each = gradient if self.partition_support is None else gradient_on_support
        return split_task(lambda view, w: DenseGradientTask(each, view, w, support), code,
                          worker, self.n_features)

    def message_load(self, code):
        """(non-zeros, fraction of the data) each message covers: equal partitions, no nnz."""
        fraction = message_partitions(code).sum(axis=1) / code.n_partitions
        return np.zeros(code.n_messages), fraction

    def local_costs(self, costs):
        """User gradients are costed per share of the data (costs.partition_seconds)."""
        if costs.partition_seconds is None:
            return dataclasses.replace(costs, partition_seconds=DEFAULT_PARTITION_SECONDS)
        return costs

    def warm_up(self, task):
        """Nothing to compile: user gradients are not called before the clock starts."""
