"""Master-side assembly of one iteration's gradient from arriving messages (no MPI).

Every message lives in one flat buffer at a fixed offset, so a message is
copied once on arrival and the decoded gradient is one decode-combine pass
over the arrived messages. The MPI runtime and the local simulator share it.

Arrivals are decoded as they come (codes.ArrivalDecoder). Under an exact code,
the set of workers expected to decode first (schedule.expected_decode) decodes
with its own decode vector whenever all of it has arrived, whatever else has.
With a running sum (start(out)), its messages are summed into `out` while the
other workers are still computing, so little is left to do once the set is
complete. The sum always runs in message order, as decode_combine does, so it
is bit-identical to a combine from scratch.

A communication-efficient code (gc_fast.generator_codes.CommEfficientCode)
decodes to a matrix, one row per piece of the gradient: its messages live on
piece coordinates (``message_support``) and are combined once per piece, with
no running sum.
"""
import numpy as np

from . import kernels
from .codes import ArrivalDecoder
from .schedule import expected_decode


class GradientAssembler:
    """Collects the messages of one iteration and decodes at the earliest decodable set."""

    def __init__(self, code, supports, n_features, *, backend="cython"):
        self.code = code
        self.n_features = int(n_features)
        self.backend = backend
        self.split = code.scheme == "comm-efficient"
        if self.split:
            self.pieces = code.piece_bounds(self.n_features)
            self._padded = np.zeros(code.split * code.message_length(self.n_features))
            supports = [code.message_support(support, self.n_features)[0]
                        for support in supports]
        message_supports = [supports[w] for w in code.message_worker]
        lengths = np.array([len(s) for s in message_supports], dtype=np.int64)
        self.ptr = np.zeros(code.n_messages + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.ptr[1:])
        # int32 positions where they fit: half the traffic
        position = np.int32 if self.n_features <= np.iinfo(np.int32).max else np.int64
        self.idx = (np.concatenate(message_supports).astype(position)
                    if code.n_messages else np.zeros(0, position))
        self.values = np.zeros(self.ptr[-1], dtype=np.float64)
        self.decoder = ArrivalDecoder(code)
        self.decode_vector = None
        # Only an exact vector stays right for every superset of its set; an inexact code
        # (ignore, the approximate ones) decodes what has arrived when it decodes.
        expected = None if self.split or not code.exact else expected_decode(code)
        self.expected = np.zeros(code.n_messages) if expected is None else expected
        self._expected_messages = np.flatnonzero(self.expected)
        self.running = None
        self._summed = 0  # how many of _expected_messages the running sum holds
        self._n_expected_arrived = 0
        self._one_message_ptr = [np.array([0, length], dtype=np.int64) for length in lengths]

    def store_in(self, values):
        """Keep the messages in `values` (e.g. slots in shared memory that workers write)
        instead of private memory; same layout (self.ptr)."""
        if values.dtype != np.float64 or values.shape != self.values.shape:
            raise ValueError(f"message storage must be {self.values.shape[0]} float64 values")
        self.values = values

    def start(self, out=None):
        """Forget the previous iteration's arrivals; with `out`, zero it and keep in it a
        running sum of the expected set's messages as they arrive (see combine)."""
        self.decoder.reset()
        self.decode_vector = None
        self.running = out
        self._summed = 0
        self._n_expected_arrived = 0
        if out is not None:
            out[:] = 0.0

    def message_view(self, message):
        """Where message `message` is stored (a view into the flat buffer)."""
        return self.values[self.ptr[message]:self.ptr[message + 1]]

    def add(self, message):
        """Record that `message` has been written; True once the gradient is decodable."""
        if self.expected[message] != 0.0:
            self._n_expected_arrived += 1
        complete = self._n_expected_arrived == len(self._expected_messages) > 0
        vector = self.decoder.add(message, decode=not complete)
        if self.running is not None and self.expected[message] != 0.0:
            self._extend_running_sum()
        # The expected set's own vector is exact for any superset of the expected set.
        self.decode_vector = self.expected if complete else vector
        return self.decode_vector is not None

    def record(self, message):
        """Record that `message` has been written, after the decode (no decoding)."""
        self.decoder.add(message, decode=False)

    def decode_now(self):
        """Decode what has arrived whatever the code's wait says (a spent time budget)."""
        self.decode_vector = self.code.decode_now(self.decoder.mask)

    def decode_all(self):
        """Decode every message of the iteration (all recorded): the full gradient."""
        self.decode_vector = self.code.decode_mask(np.ones(self.code.n_messages, dtype=bool))

    def used(self):
        """Boolean mask of the messages the decode combines (non-zero coefficient)."""
        vector = self.decode_vector
        return (vector != 0).any(axis=0) if vector.ndim == 2 else vector != 0

    def decode_error(self):
        """||a B - 1||^2 / k of the decode in use (0 for an exact decode)."""
        return self.code.decode_error(self.decode_vector)

    @property
    def arrived(self):
        """The messages recorded this iteration, in arrival order."""
        return self.decoder.arrived

    def _extend_running_sum(self):
        """Add expected messages to the running sum, in message order, while they have arrived."""
        expected = self._expected_messages
        while self._summed < len(expected) and self.decoder.mask[expected[self._summed]]:
            m = expected[self._summed]
            start, stop = self.ptr[m], self.ptr[m + 1]
            kernels.decode_combine(self.running, self._one_message_ptr[m], self.idx[start:stop],
                                   self.expected[m:m + 1], self.values[start:stop],
                                   backend=self.backend, check=False)
            self._summed += 1

    def residual(self):
        """max |a @ B - 1| of the decode vector in use (0 for an exact decode)."""
        return self.code.residual(self.decode_vector)

    def combine(self, out):
        """out <- sum_i a_i * message_i scattered to global coordinates. When `out` holds the
        running sum and the decode vector is the expected one, the sum is already complete."""
        if out is self.running and self.decode_vector is self.expected:
            return out
        if self.split:
            return self._combine_pieces(out)
        out[:] = 0.0
        return kernels.decode_combine(out, self.ptr, self.idx, self.decode_vector,
                                      self.values, backend=self.backend)

    def _combine_pieces(self, out):
        """Piece u of out <- sum_i A[u, i] * message_i (messages on piece coordinates)."""
        padded, length = self._padded, len(self._padded) // self.code.split
        padded[:] = 0.0
        for piece, row in enumerate(self.decode_vector):
            kernels.decode_combine(padded[piece * length:(piece + 1) * length], self.ptr,
                                   self.idx, np.ascontiguousarray(row), self.values,
                                   backend=self.backend)
        out[:] = padded[:self.n_features]
        return out
