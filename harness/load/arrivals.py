"""Open-model arrival schedules: intended send times drawn from a profile's rate, never from responses."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator


def poisson_times(
    rate_at: Callable[[float], float], max_rate: float, duration_s: float, rng: random.Random
) -> Iterator[float]:
    """A non-homogeneous Poisson process on [0, duration_s) by thinning (Lewis and Shedler)."""
    if max_rate <= 0:
        return
    t = 0.0
    while True:
        t += rng.expovariate(max_rate)
        if t >= duration_s:
            return
        if rng.random() * max_rate < rate_at(t):
            yield t


def constant_times(
    rate_at: Callable[[float], float], duration_s: float, rng: random.Random, step_s: float = 0.01
) -> Iterator[float]:
    """Evenly spaced arrivals following rate_at: one each time the integrated rate crosses an integer."""
    # A random phase keeps several load processes (workers) from sending in lock-step.
    due = rng.random()
    acc = 0.0
    for i in range(math.ceil(duration_s / step_s)):
        t = i * step_s
        r = rate_at(t)
        if r > 0:
            nxt = acc + r * step_s
            while nxt >= due:
                # Interpolate within the step so constant arrivals are exactly 1/r apart.
                at = t + (due - acc) / r
                if at >= duration_s:
                    return
                yield at
                due += 1.0
            acc = nxt


def schedule(
    rate_at: Callable[[float], float], max_rate: float, duration_s: float, arrival: str, seed: int, share: int = 1
) -> Iterator[float]:
    """Intended send times (s from the run's start) for one load process carrying 1/share of the rate."""
    rng = random.Random(seed)
    k = max(1, share)

    def part(t: float) -> float:
        return rate_at(t) / k

    if arrival == "constant":
        return constant_times(part, duration_s, rng)
    return poisson_times(part, max_rate / k, duration_s, rng)


def expected_count(rate_at: Callable[[float], float], duration_s: float, step_s: float = 0.01) -> float:
    """The integral of rate_at over the run: how many arrivals the schedule should hold on average."""
    n = math.ceil(duration_s / step_s)
    return sum(rate_at(i * step_s) for i in range(n)) * step_s
