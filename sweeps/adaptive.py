"""The adaptive lr search policy: which lrs to train next, from the results stored so far. Pure: no Ray, no torch.

One search covers a group (model, batch size, seed, train settings). Its lrs lie on a lattice,
`lr_k = anchor * resolution**k` (k an integer index), so every value the search can ask for is known up front
and a value asked for twice is the same run. The first round trains the start indices (`spacing` steps apart)
through every token budget: one lineage per lr yields every budget. Each later round looks at every budget T:

* the argmin k0 of the finite losses at T (diverged lrs count as worse than any finite loss, and every lr
  above the smallest diverged one is ignored: divergence bounds the range from above);
* wanted: the lattice points k0 -+ 1 and k0 -+ 2, two on each side at the target resolution: the window of
  the analysis' quadratic, so a budget's lr_opt comes out as a full grid's at that resolution would give it.
  A side with no point is extended by one coarse `spacing` step (an edge argmin), or, below a diverged lr,
  bisected towards it; when both sides have points but a neighbour of k0 is missing, the search jumps to the
  lattice points around the vertex of the parabola (in ln lr) through the argmin and its nearest points on
  each side; once k0 -+ 1 are there, k0 -+ 2 are asked for. An lr that diverged closes the side above.

An lr asked for by budget T is trained through every budget up to T (more budgets cost only their decay
branches), and an lr trained to a smaller budget before is extended, resuming its lineage. The search of a
group ends when no budget asks for anything (every budget's lr_opt is bracketed), when the next round would
exceed the lineage budget (`max_lineages` full lineages' tokens), or after `max_rounds` rounds.

The state is derived from the stored results only (`replay`): round 1 is fixed, and round r + 1 is computed
from the results of rounds 1..r alone, so a driver killed in the middle of a round recomputes the same round
and a resumed search ends with the same runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Policy", "Bracket", "SearchState", "brackets", "lr_value", "next_round", "replay", "wanted"]

SIDE_POINTS = 2  # lattice points wanted on each side of a budget's argmin: the analysis' half_width


@dataclass(frozen=True)
class Policy:
    """How one group's lrs are searched (see the module docstring)."""

    anchor: float  # lr at lattice index 0 (the lowest start lr)
    resolution: float  # target ratio between neighbouring lrs around every optimum, e.g. 2**0.25
    spacing_steps: int  # lattice steps between start lrs, and of an extension beyond an edge argmin
    start: tuple[int, ...]  # lattice indices of the first round
    max_lineages: float  # budget: tokens of this many lineages through every token budget
    max_rounds: int = 10  # rounds at most, the first included

    def __post_init__(self):
        assert self.anchor > 0 and self.resolution > 1 and self.spacing_steps >= 1 and self.start


def lr_value(policy: Policy, k: int) -> float:
    """The lr at lattice index k, to 3 significant digits (so sqrt(2) steps from 1e-3 give 0.000707, 0.00141)."""
    return float(f"{policy.anchor * policy.resolution ** k:.3g}")


# (lattice index, token budget) -> held-out loss in nats/token; math.inf for a diverged run
Observed = Mapping[tuple[int, float], float]
Round = dict[int, float]  # lattice index -> the largest token budget to train that lr through


def _at(observed: Observed, budget: float) -> dict[int, float]:
    return {k: loss for (k, t), loss in observed.items() if t == budget}


def _argmin(points: dict[int, float]) -> tuple[int | None, int | None]:
    """(argmin among finite losses below the smallest diverged index, that smallest diverged index)."""
    diverged = min((k for k, loss in points.items() if not math.isfinite(loss)), default=None)
    finite = [(loss, k) for k, loss in points.items()
              if math.isfinite(loss) and (diverged is None or k < diverged)]
    return (min(finite)[1] if finite else None), diverged


def wanted(points: dict[int, float], policy: Policy) -> dict[int, int]:
    """Lattice indices that one budget's results (index -> loss) ask for next, each with its rank (1: a point
    next to the optimum or an extension, 2: a second point on a side); {} when the budget is bracketed."""
    if not points:
        return {}
    best, diverged = _argmin(points)
    if best is None:  # every lr diverged at this budget: go lower
        return {min(points) - policy.spacing_steps: 1}
    finite = {k for k, loss in points.items() if math.isfinite(loss) and (diverged is None or k < diverged)}
    lower, upper = sorted(k for k in finite if k < best), sorted(k for k in finite if k > best)
    ceiling = diverged if diverged is not None else math.inf  # nothing at or above it is asked for
    asks = _outer_asks(best, lower, upper, ceiling, policy)
    if asks:  # an open side first: the other side is refined once the optimum is known to lie between
        return asks
    inner_missing = best - 1 not in points or (best + 1 not in points and best + 1 < ceiling)
    if upper and inner_missing:  # jump to the lattice points around the parabola's vertex
        centre = _vertex(points, lower[-1], best, upper[0])
        asks.update({k: 1 for k in (centre - 1, centre, centre + 1)
                     if lower[-1] < k < upper[0] and k not in points and k < ceiling})
    elif best - 1 not in points:  # the lr above diverged: bisect towards the nearest point below
        asks[best - max((best - lower[-1]) // 2, 1)] = 1
    for j in range(2, SIDE_POINTS + 1):  # the quadratic's window: the points next to those, at resolution
        if best - j + 1 in finite:
            asks.setdefault(best - j, 2)
        if best + j - 1 in finite and best + j < ceiling:
            asks.setdefault(best + j, 2)
    return {k: r for k, r in asks.items() if k not in points}


def _outer_asks(best: int, lower: list[int], upper: list[int], ceiling: float, policy: Policy) -> dict[int, int]:
    """A side with no finite point: one coarse step outwards, or, below a diverged lr, halfway to it."""
    asks = {}
    if not lower:
        asks[best - policy.spacing_steps] = 1
    if not upper and ceiling - best > 1:
        step = policy.spacing_steps if math.isinf(ceiling) else max(int(ceiling - best) // 2, 1)
        asks[best + step] = 1
    return asks


def _vertex(points: dict[int, float], left: int, best: int, right: int) -> int:
    """The lattice index nearest the vertex of the parabola through three points (index, loss), kept
    strictly between `left` and `right`."""
    (x1, y1), (x2, y2), (x3, y3) = ((k, points[k]) for k in (left, best, right))
    denominator = (x2 - x1) * (y2 - y3) - (x2 - x3) * (y2 - y1)
    if denominator == 0:
        return best
    vertex = x2 - ((x2 - x1) ** 2 * (y2 - y3) - (x2 - x3) ** 2 * (y2 - y1)) / (2 * denominator)
    return min(max(round(vertex), left + 1), right - 1)


def next_round(observed: Observed, requested: Round, policy: Policy, budgets: Sequence[float],
               lineage_tokens: Mapping[float, float]) -> tuple[Round, str]:
    """The next round (index -> budget to train through) and why it is what it is.

    `observed` holds the results of the rounds so far, `requested` what they asked for; `lineage_tokens[T]`
    is the tokens of one lineage trained through every budget up to T (the budget is counted in these).
    """
    budgets = sorted(budgets)
    if not requested:
        return {k: budgets[-1] for k in policy.start}, "first round"
    want: Round = {}
    rank: dict[int, tuple[int, int]] = {}  # (best rank, -budgets asking)
    for budget in budgets:
        for k, r in wanted(_at(observed, budget), policy).items():
            if requested.get(k, 0) < budget:
                want[k] = max(want.get(k, 0), budget)
                best, asks = rank.get(k, (r, 0))
                rank[k] = (min(best, r), asks - 1)
    if not want:
        return {}, "bracketed"
    return _within_budget(want, rank, requested, policy, lineage_tokens)


def _within_budget(want: Round, rank: dict[int, tuple[int, int]], requested: Round, policy: Policy,
                   lineage_tokens: Mapping[float, float]) -> tuple[Round, str]:
    """The asks that fit in what is left of the lineage budget: neighbours of an argmin first, then those
    more budgets ask for, then the cheaper; when none fit, the search stops."""
    full = lineage_tokens[max(lineage_tokens)]
    left = policy.max_lineages * full - sum(lineage_tokens[t] for t in requested.values())
    cost = {k: lineage_tokens[t] - lineage_tokens.get(requested.get(k), 0) for k, t in want.items()}
    kept: Round = {}
    for k in sorted(want, key=lambda k: (rank[k], cost[k], k)):
        if cost[k] <= left * (1 + 1e-9):
            kept[k], left = want[k], left - cost[k]
    if not kept:
        return {}, "lineage budget spent"
    return kept, "next round" if len(kept) == len(want) else "next round (cut to the lineage budget)"


@dataclass(frozen=True)
class SearchState:
    """A group's search as the stored results show it."""

    rounds: tuple[Round, ...]  # completed rounds: every result they asked for is stored
    pending: Round  # the round to run now (some of its results missing); {} when the search is over
    reason: str  # why `pending` is what it is: 'first round', 'next round', 'bracketed', ...
    observed: dict[tuple[int, float], float] = field(default_factory=dict)  # results of the completed rounds

    @property
    def requested(self) -> Round:
        """Every index of the completed rounds, with the largest budget it was trained through."""
        out: Round = {}
        for r in self.rounds:
            for k, t in r.items():
                out[k] = max(out.get(k, 0), t)
        return out

    @property
    def done(self) -> bool:
        return not self.pending


def replay(stored: Callable[[int, float], float | None], policy: Policy, budgets: Sequence[float],
           lineage_tokens: Mapping[float, float]) -> SearchState:
    """Rebuild a group's search from the store: `stored(k, T)` is the stored loss (math.inf if diverged) of
    index k at budget T, None if not stored. Round r + 1 is recomputed from rounds 1..r only, so the
    answer does not depend on which results of a round in progress happen to be stored already."""
    budgets, rounds, observed = sorted(budgets), [], {}
    while True:
        requested = SearchState(tuple(rounds), {}, "").requested
        if len(rounds) >= policy.max_rounds:
            return SearchState(tuple(rounds), {}, "max rounds", observed)
        pending, reason = next_round(observed, requested, policy, budgets, lineage_tokens)
        cells = [(k, t) for k, top in pending.items() for t in budgets if t <= top]
        results = {cell: stored(*cell) for cell in cells}
        if not pending or any(v is None for v in results.values()):
            return SearchState(tuple(rounds), pending, reason, observed)
        rounds.append(pending)
        observed.update(results)


@dataclass(frozen=True)
class Bracket:
    """One budget's optimum as the search sees it: the argmin and its nearest trained neighbours."""

    tokens: float
    lr_below: float | None  # nearest trained lr below the argmin (None: the argmin is the lowest)
    lr_best: float | None  # argmin of the finite losses (None: every lr diverged)
    lr_above: float | None  # nearest trained lr above (None: the argmin is the highest)
    above_diverged: bool  # the lr above diverged
    bracketed: bool  # nothing more is wanted at this budget


def brackets(state: SearchState, policy: Policy, budgets: Sequence[float]) -> list[Bracket]:
    """Each budget's bracket after the completed rounds."""
    return [_bracket(_at(state.observed, budget), budget, policy) for budget in sorted(budgets)]


def _bracket(points: dict[int, float], budget: float, policy: Policy) -> Bracket:
    best, _ = _argmin(points)
    below = max((k for k in points if best is not None and k < best), default=None)
    above = min((k for k in points if best is not None and k > best), default=None)
    values = [None if k is None else lr_value(policy, k) for k in (below, best, above)]
    return Bracket(budget, *values, above_diverged=above is not None and not math.isfinite(points[above]),
                   bracketed=bool(points) and not wanted(points, policy))
