"""The random part of sampled designs, on plain numbers: quasi-random points of a box
(scipy.stats.qmc) and Monte Carlo draws (numpy's Generator). designs.py checks the request
and says which numbers go in; everything here is determined by the Generator it is given,
so a stored seed reproduces a design exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import qmc, truncnorm  # type: ignore[import-untyped]


def unit_points(
    kind: str, *, dimensions: int, samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, str | None]:
    """``samples`` points of the unit cube, shape (samples, dimensions), by ``kind`` ("lhs",
    "sobol" or "halton", scrambled), and a warning for the caller, or None.

    Sobol' points are balanced only in powers of 2 (scipy warns on other sizes): the next
    power is drawn with random_base2, which does not warn, and the first ``samples`` kept;
    the warning says so when that is not all of them."""
    if kind == "lhs":
        return qmc.LatinHypercube(dimensions, rng=rng).random(samples), None
    if kind == "halton":
        return qmc.Halton(dimensions, rng=rng).random(samples), None
    if kind != "sobol":
        raise ValueError(f"not a quasi-random design kind: {kind!r}")
    power = math.ceil(math.log2(samples))
    points = qmc.Sobol(dimensions, rng=rng).random_base2(power)[:samples]
    if samples == 2**power:
        return points, None
    smaller = f"{2 ** (power - 1)} or " if power else ""
    return points, (
        f"Sobol' points are balanced only in powers of 2; these are the first {samples} of "
        f"{2**power}. samples = {smaller}{2**power} keeps the balance."
    )


def box_columns(
    unit: np.ndarray, *, lows: Sequence[float], highs: Sequence[float], integer: Sequence[bool]
) -> list[list[Any]]:
    """The unit points scaled to [low, high) per column (qmc.scale), as Python numbers.

    An integer column's bounds are inclusive whole numbers: it is scaled to [low, high + 1)
    and floored, so each of low..high gets equal weight and a Latin hypercube's strata
    stay strata."""
    upper = [high + 1 if whole else high for high, whole in zip(highs, integer, strict=True)]
    points = qmc.scale(unit, lows, upper)
    columns: list[list[Any]] = []
    for column, (whole, high) in enumerate(zip(integer, highs, strict=True)):
        if whole:
            floored = np.minimum(np.floor(points[:, column]), high)
            columns.append([int(value) for value in floored])
        else:
            columns.append(points[:, column].tolist())
    return columns


def monte_carlo_draws(
    rng: np.random.Generator, box: Mapping[str, Any], *, integer: bool, size: int
) -> np.ndarray:
    """``size`` draws of one parameter from ``box`` (distribution uniform, normal or
    lognormal with their checked numbers). Integers: uniform on low..high inclusive.
    A normal with low and/or high is truncated there (scipy.stats.truncnorm, exact, not
    resampled); lognormal's mean and sigma are those of the underlying normal (numpy's)."""
    distribution = box.get("distribution", "uniform")
    if integer:
        return rng.integers(int(box["low"]), int(box["high"]), size=size, endpoint=True)
    if distribution == "uniform":
        return rng.uniform(box["low"], box["high"], size)
    if distribution == "lognormal":
        return rng.lognormal(box["mean"], box["sigma"], size)
    if distribution != "normal":
        raise ValueError(f"not a distribution: {distribution!r}")
    mean, std = box["mean"], box["std"]
    low = -math.inf if box.get("low") is None else box["low"]
    high = math.inf if box.get("high") is None else box["high"]
    if math.isinf(low) and math.isinf(high):
        return rng.normal(mean, std, size)
    draws = truncnorm.rvs(
        (low - mean) / std, (high - mean) / std, loc=mean, scale=std, size=size, random_state=rng
    )
    return np.atleast_1d(draws)
