"""First-order optimisers driven by an exact (decoded) gradient.

The master asks the optimiser for the point at which the next gradient is
needed (`query_point`), the workers compute coded pieces of the gradient of
the data term there, and the master hands the decoded sum back with `step`.
Keeping the update in one place is what makes every scheme's trajectory
comparable: given the same gradients, every scheme takes the same steps.
"""
import numpy as np

OPTIMIZERS = ("nag", "gd")


class GradientDescent:
    """Plain gradient descent: x <- x - lr * grad(x)."""

    name = "gd"

    def __init__(self, x0, lr):
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"learning rate must be a positive finite number, got {lr}")
        self.x = np.array(x0, dtype=np.float64, copy=True)
        self.lr = float(lr)
        self.n_steps = 0

    def query_point(self):
        """The point at which the next gradient is evaluated."""
        return self.x

    def step(self, grad):
        self.x -= self.lr * grad
        self.n_steps += 1

    def state(self):
        """Everything needed to resume bit-for-bit."""
        return {"x": self.x.copy(), "n_steps": self.n_steps}

    def load_state(self, state):
        self.x[:] = state["x"]
        self.n_steps = int(state["n_steps"])


class Nesterov(GradientDescent):
    """Nesterov's accelerated gradient, gradient taken at the look-ahead point.

    x_{t+1} = y_t - lr * grad(y_t);  y_{t+1} = x_{t+1} + t/(t+3) * (x_{t+1} - x_t).
    """

    name = "nag"

    def __init__(self, x0, lr):
        super().__init__(x0, lr)
        self.y = self.x.copy()
        self._x_prev = np.empty_like(self.x)

    def query_point(self):
        return self.y

    def step(self, grad):
        self._x_prev[:] = self.x
        np.subtract(self.y, self.lr * grad, out=self.x)
        momentum = self.n_steps / (self.n_steps + 3.0)
        # y = x + momentum * (x - x_prev), written without temporaries of size d.
        np.subtract(self.x, self._x_prev, out=self.y)
        self.y *= momentum
        self.y += self.x
        self.n_steps += 1

    def state(self):
        return {"x": self.x.copy(), "y": self.y.copy(), "n_steps": self.n_steps}

    def load_state(self, state):
        super().load_state(state)
        self.y[:] = state["y"]


def make_optimizer(name, x0, lr):
    """Optimiser by name ("nag" or "gd")."""
    if name == "nag":
        return Nesterov(x0, lr)
    if name == "gd":
        return GradientDescent(x0, lr)
    raise ValueError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
