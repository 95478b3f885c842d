"""Adaptive lr search vs the full grid at the final resolution, on simulated loss surfaces.

Each surface is a sweep over the paper's Table 2 budgets (2B to 256B tokens, WSD with 10% decay) at one batch
size, whose optimum follows the gamma law lr_opt(T) = B * a * T**b (b drawn in [-0.6, -0.3]): the loss is an
asymmetric bowl in ln lr (steeper above the optimum), plus independent noise per (lr, T), and an lr at or
above `edge * lr_opt(T)` diverges (edge drawn in [1.5, 6]; lr_opt falls with T, so a lineage that diverged
at one budget diverges at every larger one, as a real trunk does). Both methods see the same surface and the
same noise at every (lr, T):

* grid: every lr of the lattice from the lowest to the highest start lr at the final resolution, each a
  lineage through every budget;
* adaptive: `sweeps.adaptive.replay` from the same start lrs (4x apart) to the same resolution;
* coarse grid: every second lattice lr (at 2^(1/4): a sqrt(2) grid over the same range, 15 lrs), which a
  search at the finer resolution should beat if a finer lattice gave a finer estimate.

`--resolution` sets the lattice of all three (2^(1/4) by default; sqrt(2): 15 grid lrs, the coarse grid is
the paper's 8 lrs at 2x); the surfaces are the same at every resolution.

Both tables go through `analysis.analyze` (lr_opt per cell by its quadratic, the pooled gamma fit); the
table reports the error of every budget's lr_opt and of b against the planted truth, the cells the analysis
could not use, and the lineage tokens each method trained (a lineage through budgets up to T costs
0.9 T + 0.1 * sum of those budgets).

    python benchmarks/adaptive.py --surfaces 50 --seed 0 [--resolution 1.41421356]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from powersweep.analysis import analyze  # noqa: E402
from powersweep.sweeps.adaptive import Policy, lr_value, replay  # noqa: E402

BUDGETS = tuple(2e9 * 2**i for i in range(8))  # the paper's Table 2: 2B to 256B tokens
DECAY = 0.1  # the paper's WSD: 10% of the tokens in the decay phase
BATCH = 64  # sequences
RESOLUTION = 2**0.25


def lattice(resolution: float) -> tuple[Policy, int]:
    """The search policy at `resolution` (a whole root of 2) and its start range in lattice steps: 128x from
    2e-4 (the paper's 8 lrs at 2x), start lrs 4x apart, a budget of 14 full lineages' tokens, 40 rounds."""
    per_doubling = round(math.log(2) / math.log(resolution))
    if per_doubling < 1 or abs(2 ** (1 / per_doubling) - resolution) > 1e-6:
        raise SystemExit(f"--resolution {resolution}: use a whole root of 2, e.g. 1.41421356 or 1.18920712")
    policy = Policy(
        anchor=2e-4,
        resolution=2 ** (1 / per_doubling),
        spacing_steps=2 * per_doubling,
        start=tuple(2 * per_doubling * i for i in range(4)),
        max_lineages=14,
        max_rounds=40,
    )
    return policy, 7 * per_doubling


POLICY, SPAN = lattice(RESOLUTION)  # the surfaces are placed on this lattice, whatever the search's


def lineage_tokens() -> dict[float, float]:
    """Tokens of one WSD lineage through every budget up to T: the trunk to its decay, then each branch."""
    return {t: (1 - DECAY) * t + DECAY * sum(b for b in BUDGETS if b <= t) for t in BUDGETS}


@dataclass(frozen=True)
class Surface:
    """A planted loss surface over (lr, T)."""

    a: float  # gamma = lr_opt / batch_size = a * T**b
    b: float
    k_low: float  # nats per (ln lr)**2 below the optimum
    k_high: float  # above it (steeper: the bowl is asymmetric)
    edge: float  # lr >= edge * lr_opt(T) diverges
    noise_sd: float  # nats, independent per (lr, T)
    seed: int

    def lr_opt(self, tokens: float) -> float:
        return BATCH * self.a * tokens**self.b

    def loss(self, lr: float, tokens: float) -> float:
        if lr >= self.edge * self.lr_opt(tokens):
            return math.inf
        x = math.log(lr / self.lr_opt(tokens))
        noise = np.random.default_rng([self.seed, round(lr * 1e9), round(tokens / 1e6)]).normal(
            0, self.noise_sd
        )
        return 2.5 + 5 * tokens**-0.1 + (self.k_high if x > 0 else self.k_low) * x * x + noise


def random_surface(rng: np.random.Generator, seed: int) -> Surface:
    """b in [-0.6, -0.3]; every budget's lr_opt inside the start range, at least 2 steps from either end."""
    b = rng.uniform(-0.6, -0.3)
    span = -b * math.log(BUDGETS[-1] / BUDGETS[0])  # ln lr_opt(2B) - ln lr_opt(256B)
    room = SPAN * math.log(RESOLUTION) - span - 4 * math.log(RESOLUTION)
    ln_top = math.log(POLICY.anchor) + 2 * math.log(RESOLUTION) + span + rng.uniform(0, max(room, 0))
    a = math.exp(ln_top) / (BATCH * BUDGETS[0] ** b)
    k_low = rng.uniform(0.02, 0.06)
    return Surface(
        a=a,
        b=b,
        k_low=k_low,
        k_high=k_low * rng.uniform(1.0, 3.0),
        edge=rng.uniform(1.5, 6.0),
        noise_sd=rng.uniform(0.0005, 0.002),
        seed=seed,
    )


def rows(surface: Surface, cells: list[tuple[int, float]], policy: Policy) -> pd.DataFrame:
    """A results table of `cells` (lattice index, budget) on `surface`."""
    out = []
    for k, tokens in cells:
        lr = lr_value(policy, k)
        loss = surface.loss(lr, tokens)
        out.append(
            {
                "model": "m",
                "n_params": 10**8,
                "tokens": tokens,
                "batch_size": BATCH,
                "lr": lr,
                "loss_eval": loss if math.isfinite(loss) else np.nan,
                "schedule": "wsd",
                "status": "ok" if math.isfinite(loss) else "diverged",
            }
        )
    return pd.DataFrame(out)


def grid_cells(policy: Policy, span: int, step: int = 1) -> tuple[list[tuple[int, float]], float]:
    """Every `step`-th lattice lr of the start range through every budget, and its lineage tokens."""
    ks = range(policy.start[0], policy.start[0] + span + 1, step)
    return [(k, t) for k in ks for t in BUDGETS], len(ks) * lineage_tokens()[BUDGETS[-1]]


def adaptive_cells(surface: Surface, policy: Policy) -> tuple[list[tuple[int, float]], float, str, int, dict]:
    """The cells the adaptive search trains on `surface`, its lineage tokens, why it stopped, its rounds, and
    where its tokens went (`spent`)."""
    tokens = lineage_tokens()
    state = replay(lambda k, t: surface.loss(lr_value(policy, k), t), policy, BUDGETS, tokens)
    cells = [(k, t) for k, top in state.requested.items() for t in BUDGETS if t <= top]
    return (
        cells,
        sum(tokens[t] for t in state.requested.values()),
        state.reason,
        len(state.rounds),
        spent(state, policy.side_points),
    )


def spent(state, side_points: int) -> dict:
    """Where the search's lineage tokens went, in full lineages: per round (the first, the budgets' climb) and
    per use: tokens of an lr up to the largest budget whose final window (argmin and side_points lattice
    points on each side) holds it inform the estimate; the rest of its lineage, and lrs in no window, do not;
    and the sum over rounds of each round's longest lineage: the wall time with a slot for every lineage."""
    tokens, full = lineage_tokens(), lineage_tokens()[BUDGETS[-1]]
    per_round, longest, trained = [], [], {}
    for r in state.rounds:
        added = [tokens[t] - tokens.get(trained.get(k), 0) for k, t in r.items() if t > trained.get(k, 0)]
        per_round.append(sum(added) / full)
        longest.append(max(added, default=0.0) / full)
        for k, t in r.items():
            trained[k] = max(trained.get(k, 0), t)
    informs: dict[int, float] = {}
    for t in BUDGETS:
        points = {k: loss for (k, bt), loss in state.observed.items() if bt == t and math.isfinite(loss)}
        if points:
            best = min(points, key=points.get)
            for k in range(best - side_points, best + side_points + 1):
                if k in points:
                    informs[k] = max(informs.get(k, 0), t)
    useful = sum(tokens[informs[k]] for k in trained if k in informs) / full
    return {
        "round_1": per_round[0],
        "later_rounds": sum(per_round[1:]),
        "informing": useful,
        "not_informing": sum(per_round) - useful,
        "longest_per_round": sum(longest),
    }


def evaluate(surface: Surface, table: pd.DataFrame) -> dict:
    """Errors against the truth: ln lr_opt per budget (cells the analysis can use), and the fitted b."""
    result = analyze(table, n_boot=0, seed=0)
    cells = result.cells.set_index("tokens")
    errors = [
        abs(math.log(cells.loc[t, "lr_opt"] / surface.lr_opt(t))) for t in BUDGETS if cells.loc[t, "ok"]
    ]
    fitted = result.gamma.pooled.b if result.gamma is not None and result.gamma.pooled.ok else math.nan
    return {
        "lr_errors": errors,
        "unusable": len(BUDGETS) - len(errors),
        "b_error": abs(fitted - surface.b),
        "lr_opt": tuple(cells.loc[t, "lr_opt"] for t in BUDGETS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--surfaces", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--resolution", type=float, default=RESOLUTION, help="lattice ratio (default 2^(1/4))"
    )
    args = parser.parse_args()
    policy, span = lattice(args.resolution)
    rng, grid, grid_tokens = np.random.default_rng(args.seed), *grid_cells(policy, span)
    coarse, coarse_tokens = grid_cells(policy, span, step=2)
    records, start = [], time.perf_counter()
    for i in range(args.surfaces):
        surface = random_surface(rng, args.seed * 1000 + i)
        cells, tokens, reason, rounds, where = adaptive_cells(surface, policy)
        for method, chosen, used in (
            ("grid", grid, grid_tokens),
            ("adaptive", cells, tokens),
            ("coarse grid", coarse, coarse_tokens),
        ):
            records.append(
                {
                    "surface": i,
                    "method": method,
                    "tokens": used / grid_tokens,
                    "reason": reason,
                    "rounds": rounds,
                    **where,
                    **evaluate(surface, rows(surface, chosen, policy)),
                }
            )
    print(summary(pd.DataFrame(records), args.surfaces, policy.resolution, span))
    print(f"({time.perf_counter() - start:.0f} s)")


def summary(frame: pd.DataFrame, n: int, resolution: float, span: int) -> str:
    lines = [
        f"{n} surfaces, {len(BUDGETS)} budgets each; lattice {resolution:.4g} over 128x "
        f"({span + 1} grid lrs; coarse grid {resolution**2:.4g}, {span // 2 + 1} lrs)",
        "| method | lineage tokens / grid's (mean, max) | median abs ln lr_opt error | 90th pct | cells not "
        "usable | median abs b error | 90th pct | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method in ("grid", "adaptive", "coarse grid"):
        part = frame[frame["method"] == method]
        errors = np.concatenate(part["lr_errors"].to_numpy())
        b = part["b_error"].to_numpy()
        lines.append(
            f"| {method} | {part['tokens'].mean():.3f}, {part['tokens'].max():.3f} | "
            f"{np.median(errors):.4f} | {np.quantile(errors, 0.9):.4f} | {part['unusable'].sum()} | "
            f"{np.nanmedian(b):.4f} | {np.nanquantile(b, 0.9):.4f} | {np.nanmax(b):.4f} |"
        )
    adaptive = frame[frame["method"] == "adaptive"]
    pairs = frame.pivot(index="surface", columns="method", values="b_error")
    optima = frame.pivot(index="surface", columns="method", values="lr_opt")
    same = sum(
        np.allclose(g, a, rtol=1e-9, equal_nan=True) for g, a in zip(optima["grid"], optima["adaptive"])
    )
    lines.append(
        f"adaptive: stopped {adaptive['reason'].value_counts().to_dict()}; rounds median "
        f"{adaptive['rounds'].median():.0f}, max {adaptive['rounds'].max()}; every budget's lr_opt equal to "
        f"the grid's on {same} of {n} surfaces; b error lower than the grid's on "
        f"{(pairs['adaptive'] < pairs['grid'] - 1e-12).sum()}, higher on "
        f"{(pairs['adaptive'] > pairs['grid'] + 1e-12).sum()}"
    )
    where = {
        c: adaptive[c].mean()
        for c in ("round_1", "later_rounds", "informing", "not_informing", "longest_per_round")
    }
    lines.append(
        "adaptive tokens, mean per surface in full lineages: "
        + ", ".join(f"{k} {v:.2f}" for k, v in where.items())
        + f"; lineage tokens / grid's: median {adaptive['tokens'].median():.3f}, "
        f"10th-90th pct {adaptive['tokens'].quantile(0.1):.3f}-{adaptive['tokens'].quantile(0.9):.3f}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
