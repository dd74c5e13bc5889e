"""Master-side assembly of one iteration's gradient from arriving messages (no MPI).

Every message lives in one flat buffer at a fixed offset, so a message is
copied once on arrival and the decoded gradient is one decode-combine pass
over the arrived messages. The MPI runtime and the local simulator share it.
"""
import numpy as np

from . import kernels


class GradientAssembler:
    """Collects the messages of one iteration and decodes at the earliest decodable set."""

    def __init__(self, code, supports, n_features, *, backend="cython"):
        self.code = code
        self.n_features = int(n_features)
        self.backend = backend
        message_supports = [supports[w] for w in code.message_worker]
        lengths = np.array([len(s) for s in message_supports], dtype=np.int64)
        self.ptr = np.zeros(code.n_messages + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.ptr[1:])
        position = np.int32 if self.n_features <= np.iinfo(np.int32).max else np.int64  # half the traffic
        self.idx = (np.concatenate(message_supports).astype(position)
                    if code.n_messages else np.zeros(0, position))
        self.values = np.zeros(self.ptr[-1], dtype=np.float64)
        self.arrived = []
        self.arrived_mask = np.zeros(code.n_messages, dtype=bool)
        self.decode_vector = None

    def store_in(self, values):
        """Keep the messages in `values` (e.g. slots in shared memory that workers write)
        instead of private memory; same layout (self.ptr)."""
        if values.dtype != np.float64 or values.shape != self.values.shape:
            raise ValueError(f"message storage must be {self.values.shape[0]} float64 values")
        self.values = values

    def start(self):
        """Forget the previous iteration's arrivals."""
        self.arrived = []
        self.arrived_mask[:] = False
        self.decode_vector = None

    def message_view(self, message):
        """Where message `message` is stored (a view into the flat buffer)."""
        return self.values[self.ptr[message]:self.ptr[message + 1]]

    def add(self, message):
        """Record that `message` has been written; True once the gradient is decodable."""
        self.arrived.append(int(message))
        self.arrived_mask[message] = True
        self.decode_vector = self.code.decode_mask(self.arrived_mask)
        return self.decode_vector is not None

    def residual(self):
        """max |a @ B - 1| of the decode vector in use (0 for an exact decode)."""
        return self.code.residual(self.decode_vector)

    def combine(self, out):
        """out <- sum_i a_i * message_i scattered to global coordinates."""
        out[:] = 0.0
        return kernels.decode_combine(out, self.ptr, self.idx, self.decode_vector,
                                      self.values, backend=self.backend)
