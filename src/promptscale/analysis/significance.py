"""Paired bootstrap over examples: is a row's difference from the baseline row real?

Both rows are scored on the same eval examples. One resample draws the units (examples; MultiRC
questions, since its exact match is per question) with replacement; every seed's predictions of
both rows are scored on that same resample with the task's metric, each row's seeds are averaged,
and the resample's difference is row − baseline. Seeds are thus pooled the way the table's cell
pools them (the mean over seeds), and pairing is by example: the two rows need not have the same
seeds or number of seeds.

The p-value is two-sided: twice the smaller share of resampled differences on either side of 0
(with the +1 correction of a Monte Carlo p-value, so never 0), capped at 1. With B resamples the
smallest p-value is about 2/(B+1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from promptscale.analysis.predictions import Examples, PredictionsError, same_gold, units

if TYPE_CHECKING:
    from promptscale.analysis.scoring import Scorer


@dataclass(frozen=True)
class Comparison:
    delta: float  # row − baseline on all examples, ×100, seeds averaged
    p_value: float
    resamples: int
    examples: int


def aligned(members: list[Examples], order: tuple) -> list[Examples]:
    """The members with their examples in ``order``; PredictionsError if their examples differ."""
    out = []
    for m in members:
        if m.ids == order:
            out.append(m)
            continue
        if set(m.ids) != set(order) or len(m.ids) != len(order):
            raise PredictionsError(f"the rows were scored on different examples ({len(m.ids)} vs {len(order)})")
        where = {i: k for k, i in enumerate(m.ids)}
        out.append(Examples(order, tuple(m.rows[where[i]] for i in order)))
    return out


class Bootstrap:
    """Paired bootstrap of one table column (one task, split and example set): the resamples are
    drawn once, and each member's resampled scores are computed once, whichever rows it is in."""

    def __init__(self, scorer: Scorer, reference: Examples, resamples: int = 1000, seed: int = 0) -> None:
        self.scorer, self.reference, self.order, self.resamples = scorer, reference, reference.ids, resamples
        self.units = units(reference)
        rng = np.random.default_rng(seed)
        self.counts = rng.multinomial(len(self.units), np.full(len(self.units), 1 / len(self.units)), size=resamples)
        self._memo: dict = {}

    def _member(self, member: Examples) -> tuple[float, np.ndarray]:
        if id(member) not in self._memo:
            (m,) = aligned([member], self.order)
            same_gold([self.reference, m])
            self._memo[id(member)] = (self.scorer.score(m), self.scorer.resampled(m, self.units, self.counts))
            self._memo[id(member), "keep"] = member  # the id stays this member's while memoized
        return self._memo[id(member)]

    def compare(self, rows: list[Examples], baseline: list[Examples]) -> Comparison:
        """A row's seeds (``rows``) against the baseline row's seeds, on the same resamples."""
        if not rows or not baseline:
            raise PredictionsError("a row without predictions")

        def side(members):
            scored = [self._member(m) for m in members]
            return np.mean([s for s, _ in scored]), np.mean([r for _, r in scored], axis=0)

        (a, a_star), (b, b_star) = side(rows), side(baseline)
        diffs = a_star - b_star
        below, above = np.sum(diffs <= 0), np.sum(diffs >= 0)
        p = min(1.0, 2 * (min(below, above) + 1) / (self.resamples + 1))
        return Comparison(
            delta=100 * float(a - b), p_value=float(p), resamples=self.resamples, examples=len(self.order)
        )
