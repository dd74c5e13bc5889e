"""What a worker computes each iteration: its coded message(s) at a given point.

A task is transport-agnostic (no MPI): the runtime (MPI) and the local
simulator drive the same generator. `run` fills the message buffers and
yields after every partition (None), so the driver can abandon a stale
iteration between partitions, and yields the message kind k once message k
is complete, so the driver can send it before computing the next one.
A driver that gathers the point itself can gather it into the task's `point`
buffer and pass that to `run`, which saves a copy.
"""
import numpy as np

from . import kernels


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
        self.n_messages = len(worker_data.message_plan)
        self.message_lengths = [len(self.support)] * self.n_messages
        pairs = np.zeros(2 * len(self.support))
        self.point, self._sum = pairs[0::2], pairs[1::2]

    def run(self, point, outs):
        """Fill outs[k] with message k at `point` (values on the support)."""
        if point is not self.point:
            self.point[:] = point
        blocks = self.worker_data.blocks
        for kind, plan in enumerate(self.worker_data.message_plan):
            self._sum[:] = 0.0
            for block_index, row_weight in plan:
                block = blocks[block_index]
                kernels.coded_gradient(
                    block.indptr, block.indices, block.data, block.y, row_weight,
                    self.point, self._sum, loss=self.loss, backend=self.backend,
                )
                yield None
            outs[kind][:] = self._sum
            yield kind


class DenseGradientTask:
    """Coded combination of user-supplied per-partition gradients (dense vectors).

    `partition_gradient(j, w)` returns the gradient of partition j at w.
    """

    def __init__(self, partition_gradient, code, worker, dim):
        self.partition_gradient = partition_gradient
        self.code = code
        self.worker = worker
        self.support = np.arange(dim, dtype=np.int64)
        self.messages = code.messages_of(worker)
        self.n_messages = len(self.messages)
        self.message_lengths = [dim] * self.n_messages
        self.point = np.empty(dim)

    def run(self, point, outs):
        B = self.code.B
        for kind, message in enumerate(self.messages):
            out = outs[kind]
            out[:] = 0.0
            for j in np.flatnonzero(B[message]):
                out += B[message, j] * np.asarray(self.partition_gradient(int(j), point), dtype=np.float64)
                yield None
            yield kind
