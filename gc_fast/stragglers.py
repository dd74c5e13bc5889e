"""Injected straggler delays, reproducible per (seed, iteration, worker).

Delay specs (worker numbers are MPI ranks 1..n; the library's worker index
is rank - 1):

  none                         no injected delay (default)
  fixed:p=P,seconds=D          each worker, each iteration, is delayed D s
                               with probability P
  count:k=K,seconds=D          exactly K workers, drawn at random each
                               iteration, are delayed D s
  exp:shift=A,mean=M           every worker is delayed A + Exp(mean M) s
  slow:workers=1,3,factor=F    those workers compute F times slower (F >= 1);
                               no added delay
  fail:workers=2,at=T          those workers stop answering from iteration T
                               on (their delay is inf)
  pause:workers=2,at=T,seconds=D
                               at iteration T those workers freeze for D s
                               without noticing newer work (a stalled VM, a
                               long GC pause), then send their stale message
  kill:workers=2,4,at=T[,T2]   those worker processes SIGKILL themselves at
                               iteration T (one T for all, or one per worker
                               in the order given; T = setup: once set up,
                               before reporting to the master): a real
                               process death, which only a fault-tolerant
                               MPI survives

Draws depend only on (seed, iteration, worker), and for count on the number
of workers, so every scheme compared under one seed faces the same stragglers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VALID_FORMS = (
    "none | fixed:p=P,seconds=D | count:k=K,seconds=D | exp:shift=A,mean=M | "
    "slow:workers=1,3,factor=F | fail:workers=2,at=T | pause:workers=2,at=T,seconds=D | "
    "kill:workers=2,4,at=T[,T2]"
)
_KEYS = {
    "none": (),
    "fixed": ("p", "seconds"),
    "count": ("k", "seconds"),
    "exp": ("shift", "mean"),
    "slow": ("workers", "factor"),
    "fail": ("workers", "at"),
    "pause": ("workers", "at", "seconds"),
    "kill": ("workers", "at"),
}
# Keys that take a list of values: the workers, and for kill one iteration per worker.
_LIST_KEYS = {"kill": ("workers", "at")}
# kill's at=setup: the worker dies once set up, before iteration 0 (an iteration before all).
KILL_AT_SETUP = -1
# Separates the random streams of the forms that draw, so they never coincide.
# count is keyed by (seed, iteration) alone and drawn with choice(n, k), as the
# paper-style baseline script draws its stragglers, so both face the same ones.
_STREAM_KEY = {"fixed": (1,), "count": (), "exp": (3,)}


def _format_number(value: float) -> str:
    """Shortest text that parses back to exactly `value`."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


@dataclass(frozen=True)
class DelayModel:
    """A parsed delay spec; see the module docstring for the forms."""

    kind: str = "none"
    probability: float = 0.0
    seconds: float = 0.0
    count: int = 0
    shift: float = 0.0
    mean: float = 0.0
    workers: tuple[int, ...] = ()  # MPI ranks 1..n
    factor: float = 1.0
    at: int = 0
    kill_at: tuple[int, ...] = ()  # kill: iteration of death, one per entry of workers

    def __str__(self) -> str:
        workers = ",".join(str(rank) for rank in self.workers)
        return {
            "none": "none",
            "fixed": (f"fixed:p={_format_number(self.probability)},"
                      f"seconds={_format_number(self.seconds)}"),
            "count": f"count:k={self.count},seconds={_format_number(self.seconds)}",
            "exp": f"exp:shift={_format_number(self.shift)},mean={_format_number(self.mean)}",
            "slow": f"slow:workers={workers},factor={_format_number(self.factor)}",
            "fail": f"fail:workers={workers},at={self.at}",
            "pause": f"pause:workers={workers},at={self.at},seconds={_format_number(self.seconds)}",
            "kill": f"kill:workers={workers},at={','.join(map(_kill_time, self.kill_at))}",
        }[self.kind]

    def validate(self, n_workers: int) -> None:
        """Check the spec fits n_workers workers (ranks 1..n_workers, k <= n_workers)."""
        bad_ranks = [rank for rank in self.workers if rank > n_workers]
        if bad_ranks:
            raise ValueError(
                f"delay spec {str(self)!r} names workers {bad_ranks}; "
                f"worker numbers must be in 1..{n_workers}"
            )
        if self.kind == "count" and self.count > n_workers:
            raise ValueError(f"delay spec {str(self)!r} delays {self.count} workers; "
                             f"k must be in 0..{n_workers}")

    def compute_factor(self, worker: int) -> float:
        """How many times slower worker (0-indexed) computes: F for slow workers, else 1."""
        return self.factor if self.kind == "slow" and worker + 1 in self.workers else 1.0

    def killed(self, iteration: int, worker: int) -> bool:
        """Whether worker (0-indexed) is to be dead (kill form) at this iteration."""
        deaths = zip(self.workers, self.kill_at, strict=True)
        return self.kind == "kill" and any(rank == worker + 1 and iteration >= at
                                           for rank, at in deaths)

    def killed_at_setup(self, worker: int) -> bool:
        """Whether worker (0-indexed) is to die once set up (kill form, at=setup)."""
        return self.killed(KILL_AT_SETUP, worker)

    def pause(self, iteration: int, worker: int) -> float:
        """Seconds worker (0-indexed) freezes, deaf to newer work, before sending this iteration."""
        if self.kind == "pause" and iteration == self.at and worker + 1 in self.workers:
            return self.seconds
        return 0.0

    def delays(self, seed: int, iteration: int, n_workers: int) -> np.ndarray:
        """Injected delay in seconds per worker for one iteration (inf for failed workers)."""
        return self.delays_matrix(seed, [iteration], n_workers)[0]

    def delays_matrix(self, seed: int, iterations, n_workers: int) -> np.ndarray:
        """Delays for many iterations at once: (len(iterations), n_workers) float64.

        Row i equals delays(seed, iterations[i], n_workers): one random
        generator per (seed, iteration), vectorised over workers.
        """
        self.validate(n_workers)
        iterations = np.asarray(iterations, dtype=np.int64).ravel()
        result = np.zeros((len(iterations), n_workers))
        if self.kind == "fail":
            ranks = np.asarray(self.workers, dtype=np.int64)
            result[np.ix_(iterations >= self.at, ranks - 1)] = np.inf
        elif self.kind == "kill":
            for rank, at in zip(self.workers, self.kill_at, strict=True):
                result[iterations >= at, rank - 1] = np.inf
        elif self.kind in _STREAM_KEY:
            for row, iteration in enumerate(iterations):
                rng = np.random.default_rng([seed, int(iteration), *_STREAM_KEY[self.kind]])
                result[row] = self._draw(rng, n_workers)
        return result

    def _draw(self, rng: np.random.Generator, n_workers: int) -> np.ndarray:
        if self.kind == "fixed":
            return np.where(rng.random(n_workers) < self.probability, self.seconds, 0.0)
        if self.kind == "count":
            delays = np.zeros(n_workers)
            delays[rng.choice(n_workers, self.count, replace=False)] = self.seconds
            return delays
        return self.shift + self.mean * rng.standard_exponential(n_workers)


def _kill_time(at: int) -> str:
    return "setup" if at == KILL_AT_SETUP else str(at)


def _spec_error(spec: str, reason: str) -> ValueError:
    return ValueError(f"bad delay spec {spec!r}: {reason}; valid forms: {VALID_FORMS}")


def _parse_pairs(spec: str, body: str) -> dict[str, list[str]]:
    """Parse 'k=v,k=v,...' where a token without '=' extends the previous key's list."""
    values: dict[str, list[str]] = {}
    if not body.strip():
        return values
    key = None
    for token in (t.strip() for t in body.split(",")):
        if not token:
            raise _spec_error(spec, "empty item between commas")
        if "=" in token:
            key, value = (part.strip() for part in token.split("=", 1))
            if key in values:
                raise _spec_error(spec, f"key {key!r} given twice")
            values[key] = [value]
        elif key is None:
            raise _spec_error(spec, f"expected key=value, got {token!r}")
        else:
            values[key].append(token)
    return values


def _number(spec: str, key: str, text: str, kind: type, low: float,
            high: float = np.inf) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise _spec_error(spec, f"{key}={text!r} is not {what}") from None
    if not (low <= value <= high) or not np.isfinite(value):
        bounds = f"in [{low:g}, {high:g}]" if np.isfinite(high) else f">= {low:g}"
        if kind is float:
            bounds = "finite and " + bounds
        raise _spec_error(spec, f"{key} must be {bounds}, got {text}")
    return value


def parse_delay(spec: str) -> DelayModel:
    """Parse a delay spec (see the module docstring) into a DelayModel."""
    spec = spec.strip()
    kind, _, body = spec.partition(":")
    kind = kind.strip()
    if kind not in _KEYS:
        raise _spec_error(spec, f"unknown form {kind!r}")
    if kind == "none":
        if body.strip():
            raise _spec_error(spec, "'none' takes no parameters")
        return DelayModel()
    values = _parse_pairs(spec, body)
    unknown = sorted(set(values) - set(_KEYS[kind]))
    missing = [key for key in _KEYS[kind] if key not in values]
    if unknown or missing:
        problems = ([f"unknown key {key!r}" for key in unknown]
                    + [f"missing key {key!r}" for key in missing])
        raise _spec_error(spec, f"{'; '.join(problems)} ({kind} takes {', '.join(_KEYS[kind])})")
    for key, items in values.items():
        if key not in _LIST_KEYS.get(kind, ("workers",)) and len(items) != 1:
            raise _spec_error(spec, f"{key} takes one value, got {len(items)}")
    single = {key: items[0] for key, items in values.items()}

    if kind == "fixed":
        return DelayModel(
            kind, probability=_number(spec, "p", single["p"], float, 0.0, 1.0),
            seconds=_number(spec, "seconds", single["seconds"], float, 0.0),
        )
    if kind == "count":
        return DelayModel(
            kind, count=_number(spec, "k", single["k"], int, 0),
            seconds=_number(spec, "seconds", single["seconds"], float, 0.0),
        )
    if kind == "exp":
        return DelayModel(
            kind, shift=_number(spec, "shift", single["shift"], float, 0.0),
            mean=_number(spec, "mean", single["mean"], float, 0.0),
        )
    if kind == "kill":
        ranks = [_number(spec, "workers", text, int, 1) for text in values["workers"]]
        if len(set(ranks)) != len(ranks):
            raise _spec_error(spec, "a worker is named twice")
        ats = [KILL_AT_SETUP if text == "setup" else _number(spec, "at", text, int, 0)
               for text in values["at"]]
        if len(ats) not in (1, len(ranks)):
            raise _spec_error(spec, f"at takes one iteration or one per worker ({len(ranks)}), "
                                    f"got {len(ats)}")
        kill_at = tuple(ats * len(ranks) if len(ats) == 1 else ats)
        return DelayModel(kind, workers=tuple(ranks), kill_at=kill_at)
    ranks = sorted({_number(spec, "workers", text, int, 1) for text in values["workers"]})
    if kind == "slow":
        factor = _number(spec, "factor", single["factor"], float, 1.0)
        return DelayModel(kind, workers=tuple(ranks), factor=factor)
    at = _number(spec, "at", single["at"], int, 0)
    if kind == "pause":
        return DelayModel(kind, workers=tuple(ranks), at=at,
                          seconds=_number(spec, "seconds", single["seconds"], float, 0.0))
    return DelayModel(kind, workers=tuple(ranks), at=at)
