"""The adaptive lr search policy: which lrs to train next, from the results stored so far.
Pure: no Ray, no torch.

One search covers a group (model, batch size, seed, train settings). Its lrs lie on a lattice,
`lr_k = anchor * resolution**k` (k an integer index), so every value the search can ask for is known up front
and a value asked for twice is the same run. The search climbs the budgets, because a lineage's cost is
dominated by its largest budget (each budget doubles the one below) while the optimum moves little from one
budget to the next:

* round 1 trains the start indices (`spacing` steps apart) through the smallest budget only;
* the smallest budget is searched coarsely: a side of its argmin k0 with no point is extended by one
  `spacing` step (an edge argmin), or, below a diverged lr, bisected towards it; when both sides have points
  but a neighbour of k0 is missing, the search jumps to the lattice points around the vertex of the parabola
  (in ln lr) through the argmin and its nearest points on each side; then the rest of its window;
* once every budget below it is settled (its argmin has both neighbours), the next budget starts at its
  predicted optimum (the argmins below extrapolated along log T: the gamma law is a straight line there)
  with `side_points - 1` lattice points on each side, and asks for what its window lacks until its own
  argmin has them;
* wanted at every budget: the lattice points k0 -+ 1 ... k0 -+ side_points at the target resolution (3 on
  each side: the window of the analysis' bowl fit, its half_width), so a budget's lr_opt comes out as a full
  grid's at that resolution would give it. A diverged lr (diverged ones count as worse than any finite loss)
  closes the range above it, at its budget and every larger one.

An lr asked for by budget T is trained through every budget up to T and no further (more budgets cost only
their decay branches), and an lr trained to a smaller budget before is extended, resuming its lineage. The
search of a group ends when no budget asks for anything (every budget's lr_opt is bracketed), when the next
round would exceed the lineage budget (`max_lineages` full lineages' tokens), or after `max_rounds` rounds.

The state is derived from the stored results only (`replay`): round 1 is fixed, and round r + 1 is computed
from the results of rounds 1..r alone, so a driver killed in the middle of a round recomputes the same round
and a resumed search ends with the same runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Policy",
    "Bracket",
    "SearchState",
    "brackets",
    "first_round",
    "lr_value",
    "next_round",
    "predicted",
    "replay",
    "wanted",
]

TREND_BUDGETS = 3  # budgets below it whose argmins predict where a budget's optimum lies


@dataclass(frozen=True)
class Policy:
    """How one group's lrs are searched (see the module docstring)."""

    anchor: float  # lr at lattice index 0 (the lowest start lr)
    resolution: float  # target ratio between neighbouring lrs around every optimum, e.g. sqrt(2)
    spacing_steps: int  # lattice steps between start lrs, and of an extension beyond an edge argmin
    start: tuple[int, ...]  # lattice indices of the first round
    max_lineages: float  # budget: tokens of this many lineages through every token budget
    max_rounds: int = 30  # rounds at most, the first included
    # lattice points wanted on each side of every budget's argmin: the analysis' half_width
    side_points: int = 3

    def __post_init__(self):
        assert self.anchor > 0 and self.resolution > 1 and self.spacing_steps >= 1 and self.start
        assert self.side_points >= 1

    @property
    def predicted_points(self) -> int:
        """Lattice points on each side of a budget's predicted argmin that it starts with: one fewer than its
        window, so a prediction one step off wastes little; the outer ones follow once the argmin settles."""
        return max(self.side_points - 1, 1)


def lr_value(policy: Policy, k: int) -> float:
    """The lr at lattice index k, to 3 significant digits
    (so sqrt(2) steps from 1e-3 give 0.000707, 0.00141)."""
    return float(f"{policy.anchor * policy.resolution**k:.3g}")


# (lattice index, token budget) -> held-out loss in nats/token; math.inf for a diverged run
Observed = Mapping[tuple[int, float], float]
Round = dict[int, float]  # lattice index -> the largest token budget to train that lr through


def _at(observed: Observed, budget: float) -> dict[int, float]:
    return {k: loss for (k, t), loss in observed.items() if t == budget}


def _argmin(points: dict[int, float]) -> tuple[int | None, int | None]:
    """(argmin among finite losses below the smallest diverged index, that smallest diverged index)."""
    diverged = min((k for k, loss in points.items() if not math.isfinite(loss)), default=None)
    finite = [
        (loss, k) for k, loss in points.items() if math.isfinite(loss) and (diverged is None or k < diverged)
    ]
    return (min(finite)[1] if finite else None), diverged


def wanted(points: dict[int, float], policy: Policy, *, coarse: bool = True) -> dict[int, int]:
    """Lattice indices that one budget's results (index -> loss) ask for next, each with its rank (1: a point
    next to the optimum or an extension, 2: a second point on a side); {} when the budget is bracketed.

    `coarse` (the smallest budget, where the optimum's place is not known yet): an open side is extended by
    one `spacing` step, a gap around the argmin is jumped into at the parabola's vertex. Otherwise the budget
    was started at its predicted optimum, and asks for what its window lacks at the resolution."""
    if not points:
        return {}
    best, diverged = _argmin(points)
    if best is None:  # every lr diverged at this budget: go lower
        low = min(points)
        return {low - policy.spacing_steps: 1} if coarse else {low - 1: 1, low - 2: 1}
    ceiling = diverged if diverged is not None else math.inf  # nothing at or above it is asked for
    if not coarse:
        side = policy.side_points
        asks = {best + d: 1 if abs(d) == 1 else 2 for d in range(-side, side + 1) if d}
        return {k: r for k, r in asks.items() if k not in points and k < ceiling}
    finite = {k for k, loss in points.items() if math.isfinite(loss) and (diverged is None or k < diverged)}
    lower, upper = sorted(k for k in finite if k < best), sorted(k for k in finite if k > best)
    asks = _outer_asks(best, lower, upper, ceiling, policy)
    if asks:  # an open side first: the other side is refined once the optimum is known to lie between
        return asks
    inner_missing = best - 1 not in points or (best + 1 not in points and best + 1 < ceiling)
    if upper and inner_missing:  # jump to the lattice points around the parabola's vertex
        centre = _vertex(points, lower[-1], best, upper[0])
        asks.update(
            {
                k: 1
                for k in (centre - 1, centre, centre + 1)
                if lower[-1] < k < upper[0] and k not in points and k < ceiling
            }
        )
    elif best - 1 not in points:  # the lr above diverged: bisect towards the nearest point below
        asks[best - max((best - lower[-1]) // 2, 1)] = 1
    for j in range(2, policy.side_points + 1):  # the bowl's window: the points next to those, at resolution
        if best - j + 1 in finite:
            asks.setdefault(best - j, 2)
        if best + j - 1 in finite and best + j < ceiling:
            asks.setdefault(best + j, 2)
    return {k: r for k, r in asks.items() if k not in points}


def _outer_asks(
    best: int, lower: list[int], upper: list[int], ceiling: float, policy: Policy
) -> dict[int, int]:
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


def predicted(
    history: Sequence[tuple[float, int]], budget: float, ceiling: float, *, points: int = 2
) -> dict[int, int]:
    """The first lrs of a budget no lr has reached yet: the lattice points around the optimum extrapolated
    from the budgets below it, `history` their (tokens, argmin index), all bracketed. lr_opt moves as a
    power of T (the gamma law), so the argmin is a straight line in log T: fitted to the last
    `TREND_BUDGETS` budgets (a law that bends, flat at small T, is followed), flat from a single one; `points`
    lattice points on each side of it."""
    recent = history[-TREND_BUDGETS:]
    x = [math.log2(t) for t, _ in recent]
    y = [k for _, k in recent]
    x_mean, y_mean = sum(x) / len(x), sum(y) / len(y)
    spread = sum((xi - x_mean) ** 2 for xi in x)
    slope = sum((xi - x_mean) * (yi - y_mean) for xi, yi in zip(x, y)) / spread if spread else 0.0
    centre = min(round(y[-1] + slope * (math.log2(budget) - x[-1])), int(min(ceiling, 2**62)) - 1)
    asks = {centre + d: 1 if abs(d) <= 1 else 2 for d in range(-points, points + 1)}
    return {k: r for k, r in asks.items() if k < ceiling}


def _asks(observed: Observed, policy: Policy, budgets: Sequence[float]) -> dict[float, dict[int, int]]:
    """Per budget, what it asks for (index -> rank), budgets ascending: every budget that has results asks
    for what its window lacks; the first budget without any is started at its predicted optimum once every
    budget below it is settled (its argmin has its neighbours: what is missing is the window's outer points,
    asked for in the same round). A diverged lr closes the range above it at every larger budget too."""
    out, history, ceiling = {}, [], math.inf
    for i, budget in enumerate(sorted(budgets)):
        points = _at(observed, budget)
        if not points:
            if history and len(history) == i:
                out[budget] = predicted(history, budget, ceiling, points=policy.predicted_points)
            break
        out[budget] = wanted(points, policy, coarse=i == 0)
        best, diverged = _argmin(points)
        ceiling = min(ceiling, diverged if diverged is not None else math.inf)
        if best is not None and all(rank > 1 for rank in out[budget].values()):
            history.append((budget, best))  # settled: only its window's outer points are missing
    return out


def next_round(
    observed: Observed,
    requested: Round,
    policy: Policy,
    budgets: Sequence[float],
    lineage_tokens: Mapping[float, float],
) -> tuple[Round, str]:
    """The next round (index -> budget to train through) and why it is what it is.

    `observed` holds the results of the rounds so far, `requested` what they asked for; `lineage_tokens[T]`
    is the tokens of one lineage trained through every budget up to T (the budget is counted in these).
    """
    budgets = sorted(budgets)
    if not requested:
        return first_round(policy, budgets), "first round"
    want: Round = {}
    rank: dict[int, tuple[int, int]] = {}  # (best rank, -budgets asking)
    for budget, asks in _asks(observed, policy, budgets).items():
        for k, r in asks.items():
            if requested.get(k, 0) < budget:
                want[k] = max(want.get(k, 0), budget)
                best, count = rank.get(k, (r, 0))
                rank[k] = (min(best, r), count - 1)
    if not want:
        return {}, "bracketed"
    return _within_budget(want, rank, requested, policy, lineage_tokens)


def first_round(policy: Policy, budgets: Sequence[float]) -> Round:
    """The start lrs, through the smallest budget only: it costs little, and the larger budgets start at
    the optimum it points to."""
    return {k: min(budgets) for k in policy.start}


def _within_budget(
    want: Round,
    rank: dict[int, tuple[int, int]],
    requested: Round,
    policy: Policy,
    lineage_tokens: Mapping[float, float],
) -> tuple[Round, str]:
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


def replay(
    stored: Callable[[int, float], float | None],
    policy: Policy,
    budgets: Sequence[float],
    lineage_tokens: Mapping[float, float],
) -> SearchState:
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
    asks = _asks(state.observed, policy, budgets)
    return [
        _bracket(_at(state.observed, budget), budget, policy, bool(asks.get(budget)))
        for budget in sorted(budgets)
    ]


def _bracket(points: dict[int, float], budget: float, policy: Policy, asking: bool) -> Bracket:
    best, _ = _argmin(points)
    below = max((k for k in points if best is not None and k < best), default=None)
    above = min((k for k in points if best is not None and k > best), default=None)
    values = [None if k is None else lr_value(policy, k) for k in (below, best, above)]
    return Bracket(
        budget,
        *values,
        above_diverged=above is not None and not math.isfinite(points[above]),
        bracketed=bool(points) and not asking,
    )
