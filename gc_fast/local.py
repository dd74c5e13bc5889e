"""Local mode: every worker in-process, on the simulator's virtual clock.

``LocalTransport`` is the driver's transport when no MPI is running (a
notebook, a script): the simulator's timing model (gc_fast.simulate) turns
the injected delays, the compute and the message sizes into per-message
arrival times, the master receives the messages in that order and decodes
at the earliest decodable set, and only the messages the decode uses are
computed. The trajectory is the MPI run's (exact decoding); the iteration
times are the simulator's for the same run. With Settings.message_dtype
"float32" the point and the messages are rounded to float32, and counted in
bytes, as the MPI float32 transports send them.
"""
import numpy as np

from . import kernels


class LocalTransport:
    """In-process workers whose messages arrive at simulated times (see the module doc)."""

    readable_on_arrival = False  # messages are computed once the decode is known
    shared_memory = False
    clock = " (virtual)"
    last_heard = None  # the virtual clock keeps no per-worker history

    def __init__(self, run, supports, assembler, costs=None):
        from .simulate import (
            Workload,
            compute_factors,
            default_costs,
            simulate_iterations,
            straggler_delays,
        )

        code, problem, settings = run.code, run.problem, run.settings
        self.code = code
        self.backend = settings.backend
        self.tasks = [problem.task(code, w) for w in range(code.n_workers)]
        self.supports = supports
        self.outs = [[assembler.message_view(m) for m in code.messages_of(w)]
                     for w in range(code.n_workers)]
        self.index_in_worker = np.zeros(code.n_messages, dtype=np.int64)
        for w in range(code.n_workers):
            messages = code.messages_of(w)
            self.index_in_worker[messages] = np.arange(len(messages))
        self.points = [np.empty(len(s)) for s in supports]
        self.wire = np.dtype(settings.message_dtype)
        self.message_bytes = self.wire.itemsize * np.diff(assembler.ptr).astype(np.float64)
        self.point_bytes = self.wire.itemsize * np.array([len(s) for s in supports],
                                                         dtype=np.float64)
        message_nnz, message_fraction = problem.message_load(code)
        workload = Workload(scheme=code.scheme, n_workers=code.n_workers,
                            n_stragglers=code.n_stragglers, partitions_per_worker=None,
                            message_worker=code.message_worker, message_nnz=message_nnz,
                            message_fraction=message_fraction, message_bytes=self.message_bytes,
                            point_bytes=self.point_bytes, n_features=problem.n_features,
                            supports="exact supports")
        delays = straggler_delays(run.delay_model, settings.seed, settings.iterations,
                                  code.n_workers)
        self.times, self.arrivals = simulate_iterations(
            workload, problem.local_costs(costs or default_costs()), delays, code=code,
            compute_factor=compute_factors(run.delay_model, code.n_workers),
            wait_seconds=settings.wait_seconds)
        self.dead = {}
        self.n_received = self.n_stale = 0
        self.bytes_sent = self.bytes_received = self.stale = 0
        self.iteration = -1

    def start(self, iteration, point):
        """Begin `iteration` at `point`: the workers will read it when they compute."""
        self.iteration = iteration
        self.point = point
        self.order = list(np.argsort(self.arrivals[iteration], kind="stable"))[::-1]
        self.bytes_sent = int(self.point_bytes.sum())
        self.bytes_received = 0

    def receive(self, deadline=None):
        """The next message by simulated arrival time, or None if it comes after `deadline`
        (virtual seconds) or never (it stays next)."""
        if not self.order:
            return None
        message = self.order[-1]
        at = self.arrivals[self.iteration, message]
        if not np.isfinite(at) or (deadline is not None and at > deadline):
            return None
        self.order.pop()
        self.n_received += 1
        self.bytes_received += int(self.message_bytes[message])
        return int(message), float(at)

    def complete(self, assembler):
        """Compute the arrived messages the decode uses (non-zero coefficient).

        A worker's task computes its messages in send order, so message k needs
        messages 0..k-1 computed first; they arrived before it and are used too.
        """
        used = assembler.used()
        last_index = {}
        for message in assembler.arrived:
            if used[message]:
                worker = int(self.code.message_worker[message])
                last_index[worker] = max(last_index.get(worker, 0),
                                         int(self.index_in_worker[message]))
        for worker, last in last_index.items():
            kernels.gather(self.point, self.supports[worker], self.points[worker],
                           backend=self.backend)
            self._round(self.points[worker])
            steps = self.tasks[worker].run(self.points[worker], self.outs[worker])
            for done in steps:
                if done == last:
                    steps.close()
                    break
            for out in self.outs[worker][:last + 1]:
                self._round(out)

    def _round(self, values):
        """Round `values` in place to the wire's dtype, as the MPI transports send them."""
        if self.wire != np.float64:
            values[:] = values.astype(self.wire)

    def seconds(self):
        """The simulated length of the current iteration (decode, combine and step)."""
        return float(self.times[self.iteration])

    def shutdown(self, timeout=None):
        """No workers to stop: (no silent workers, no reports)."""
        return [], {}
