"""First-order optimisers driven by an exact (decoded) gradient.

The master asks the optimiser for the point at which the next gradient is
needed (`query_point`), the workers compute coded pieces of the gradient of
the data term there, and the master hands the decoded sum back with `step`,
which adds the L2 term. Keeping the update in one place is what makes every
scheme's trajectory comparable: given the same gradients, every scheme takes
the same steps. The update is one fused kernel pass (gc_fast.kernels).
"""
import numpy as np

from . import kernels

OPTIMIZERS = ("nag", "gd")


class GradientDescent:
    """Plain gradient descent: x <- x - lr * (grad(x) + l2 x)."""

    name = "gd"

    def __init__(self, x0, lr, *, l2=0.0, backend="cython"):
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"learning rate must be a positive finite number, got {lr}")
        self.x = np.array(x0, dtype=np.float64, copy=True)
        self.lr = float(lr)
        self.l2 = float(l2)
        self.backend = backend
        self.n_steps = 0

    def query_point(self):
        """The point at which the next gradient is evaluated."""
        return self.x

    def keep_query_point_in(self, buffer):
        """Hold the query point in `buffer` from now on (shared memory the workers read:
        the step then writes the next point where they read it, and publishing copies
        nothing)."""
        buffer[:] = self.query_point()
        self.x = buffer

    def _momentum(self):
        return 0.0

    def step(self, grad):
        """Take one step given the data term's gradient at query_point()."""
        kernels.nesterov_step(self.x, self.query_point(), grad, self.lr, self._momentum(), self.l2,
                              backend=self.backend, check=False)
        self.n_steps += 1

    def state(self):
        """Everything needed to resume bit-for-bit."""
        return {"x": self.x.copy(), "n_steps": self.n_steps}

    def load_state(self, state):
        self.x[:] = state["x"]
        self.n_steps = int(state["n_steps"])


class Nesterov(GradientDescent):
    """Nesterov's accelerated gradient, gradient taken at the look-ahead point y.

    x_{t+1} = y_t - lr * (grad(y_t) + l2 y_t);  y_{t+1} = x_{t+1} + t/(t+3) * (x_{t+1} - x_t).
    """

    name = "nag"

    def __init__(self, x0, lr, *, l2=0.0, backend="cython"):
        super().__init__(x0, lr, l2=l2, backend=backend)
        self.y = self.x.copy()

    def query_point(self):
        return self.y

    def keep_query_point_in(self, buffer):
        buffer[:] = self.y
        self.y = buffer

    def _momentum(self):
        return self.n_steps / (self.n_steps + 3.0)

    def state(self):
        return {**super().state(), "y": self.y.copy()}

    def load_state(self, state):
        super().load_state(state)
        self.y[:] = state["y"]


def make_optimizer(name, x0, lr, *, l2=0.0, backend="cython"):
    """Optimiser by name ("nag" or "gd")."""
    classes = {"nag": Nesterov, "gd": GradientDescent}
    if name not in classes:
        raise ValueError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    return classes[name](x0, lr, l2=l2, backend=backend)
