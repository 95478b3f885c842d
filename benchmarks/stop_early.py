"""Would stopping a lineage at its trunk lose a later budget's optimum?
Measured on a sweep's stored rows, or on simulated surfaces.

A lineage writes a trunk row (phase 'trunk', stable-phase loss) at each fork. Stopping a lineage at the fork
of budget T_i when its trunk loss is worse than the group's best trunk loss there by more than a margin
drops every larger budget of that lr. For each fork and each lr this prints the trunk gap (nats above the
best trunk loss there) and whether the lr is, at some larger budget, the argmin of the final losses or inside
its window (the argmin and `--window` lrs on each side: the analysis' half_width, what its bowl fit uses).
The smallest safe margin is the largest gap of an lr that a later budget still needs; the tokens that margin
would save are those of every lineage past the first fork where its gap exceeds it.

    python benchmarks/stop_early.py runs/cpu-quick --sweep cpu-quick
    python benchmarks/stop_early.py --surfaces 50 --seed 0

The simulated surfaces are benchmarks/adaptive.py's (final losses at the paper's Table 2 budgets, a full
2**0.25 grid over 128x). They have no stable phase of their own: the trunk loss at the fork of T is taken as
the final loss at T plus the decay's gain, `gain * (lr / lr_opt(T))**power`; the main job's rows give a gain
of 0.10-0.20 nats at lr_opt growing about as lr**0.4 (`--gain`, `--power`; 0 leaves the bowl alone).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from powersweep.sweeps.store import ResultStore  # noqa: E402


def needed_later(
    final: pd.DataFrame, fork_tokens: float, decay: float, window: int
) -> tuple[set[float], set[float]]:
    """lrs that are the argmin, or in the argmin's window,
    at some budget whose fork lies after `fork_tokens`."""
    best, needed = set(), set()
    for tokens, cell in final.groupby("tokens"):
        if (1 - decay) * tokens <= fork_tokens:
            continue
        cell = cell.sort_values("lr")
        lrs, losses = cell["lr"].tolist(), cell["loss"].to_numpy(float)
        i = int(np.argmin(losses))
        best.add(lrs[i])
        needed.update(lrs[max(i - window, 0) : i + window + 1])
    return best, needed


def gaps(table: pd.DataFrame, window: int) -> pd.DataFrame:
    """One row per (fork, lr): trunk gap in nats, and whether a later budget needs the lr."""
    table = table.assign(loss=table["loss_eval"].where(table["status"].eq("ok"), np.inf).astype(float))
    trunk, final = table[table["phase"].eq("trunk")], table[~table["phase"].eq("trunk")]
    decay = float(final["decay_fraction"].iloc[0])
    out = []
    for fork, points in trunk.groupby("tokens"):
        best, needed = needed_later(final, fork, decay, window)
        floor = points["loss"].min()
        for lr, loss in zip(points["lr"], points["loss"]):
            out.append(
                {
                    "fork_tokens": fork,
                    "lr": lr,
                    "gap": loss - floor,
                    "best_later": lr in best,
                    "window_later": lr in needed,
                }
            )
    return pd.DataFrame(out)


def lineage_tokens(budgets: list[float], decay: float) -> dict[float, float]:
    """Tokens of one WSD lineage through every budget up to T (a fork at (1 - decay) * T)."""
    return {t: (1 - decay) * t + decay * sum(b for b in budgets if b <= t) for t in budgets}


def safe_margin(frame: pd.DataFrame) -> float:
    """The largest trunk gap of an lr that a later budget needs: a margin above it stops none of them."""
    needed = frame[frame["window_later"] & np.isfinite(frame["gap"])]
    return float(needed["gap"].max()) if len(needed) else 0.0


def saved_share(frame: pd.DataFrame, margin: float, budgets: list[float], decay: float) -> tuple[float, int]:
    """(share of the grid's lineage tokens a stop at `margin` saves, lrs it stops that a later budget needs).

    A lineage that diverges ends there by itself: it counts, in the grid's tokens and in what a stop saves, up
    to its last fork with a finite trunk loss only."""
    tokens, forks = lineage_tokens(budgets, decay), {(1 - decay) * t: t for t in budgets}
    grid = saved = 0.0
    lost = 0
    for _, rows in frame.sort_values("fork_tokens").groupby("lr"):
        finite = rows[np.isfinite(rows["gap"])]
        if not len(finite):
            continue
        last = tokens[_nearest(forks, finite["fork_tokens"].max())]
        grid += last
        over = finite[finite["gap"] > margin]
        if len(over):
            stop = over["fork_tokens"].iloc[0]
            saved += last - tokens[_nearest(forks, stop)]
            lost += int(rows[rows["fork_tokens"] >= stop]["window_later"].any())
    return saved / grid, lost


def _nearest(forks: dict[float, float], fork_tokens: float) -> float:
    """The budget whose fork is at `fork_tokens` (stored forks are rounded to whole sequences)."""
    return forks[min(forks, key=lambda f: abs(f - fork_tokens))]


def store_report(storage: str, sweep: str, window: int) -> None:
    table = ResultStore(storage).read(sweep_id=sweep).table
    frame = gaps(table, window)
    pd.set_option("display.width", 200)
    print(frame.pivot(index="lr", columns="fork_tokens", values="gap").round(4).to_string())
    for column in ("best_later", "window_later"):
        needed = frame[frame[column]]
        print(
            f"largest trunk gap of an lr that is {column.replace('_', ' ')}: {needed['gap'].max():.4f} nats"
        )
    spare = frame[~frame["window_later"] & frame["fork_tokens"].lt(frame["fork_tokens"].max())]
    if len(spare):
        print(
            f"(fork, lr) pairs that no later budget needs: {len(spare)}, trunk gaps {spare['gap'].min():.4f} "
            f"to {spare['gap'].max():.4f} nats"
        )
    final = table[~table["phase"].eq("trunk")]
    budgets, decay = sorted(final["tokens"].unique().tolist()), float(final["decay_fraction"].iloc[0])
    share, lost = saved_share(frame, safe_margin(frame), budgets, decay)
    print(
        f"a stop at the safe margin {safe_margin(frame):.4f} nats saves {share:.3f} of the grid's lineage "
        "tokens"
    )


def synthetic_table(surface, gain: float, power: float) -> pd.DataFrame:
    """A full grid's final and trunk rows on one simulated surface (see the module docstring)."""
    from adaptive import BUDGETS, DECAY, POLICY, SPAN  # benchmarks/adaptive.py, next to this file

    from powersweep.sweeps.adaptive import lr_value

    rows = []
    for k in range(POLICY.start[0], POLICY.start[0] + SPAN + 1):
        lr = lr_value(POLICY, k)
        for t in BUDGETS:
            loss = surface.loss(lr, t)
            trunk = loss + gain * (lr / surface.lr_opt(t)) ** power
            for phase, tokens, value in (("final", t, loss), ("trunk", (1 - DECAY) * t, trunk)):
                rows.append(
                    {
                        "phase": phase,
                        "tokens": tokens,
                        "lr": lr,
                        "decay_fraction": DECAY,
                        "loss_eval": value if math.isfinite(value) else np.nan,
                        "status": "ok" if math.isfinite(value) else "diverged",
                    }
                )
    return pd.DataFrame(rows)


def synthetic_report(n: int, seed: int, window: int, gain: float, power: float) -> None:
    from adaptive import BUDGETS, DECAY, random_surface

    rng, frames = np.random.default_rng(seed), []
    for i in range(n):
        frames.append(gaps(synthetic_table(random_surface(rng, seed * 1000 + i), gain, power), window))
    margins = np.array([safe_margin(f) for f in frames])
    own = [saved_share(f, m, list(BUDGETS), DECAY)[0] for f, m in zip(frames, margins)]
    top = [saved_share(f, margins.max(), list(BUDGETS), DECAY) for f in frames]
    mid = [saved_share(f, float(np.median(margins)), list(BUDGETS), DECAY) for f in frames]
    print(
        f"{n} surfaces, trunk = final + {gain:g} * (lr / lr_opt)**{power:g}: safe margin median "
        f"{np.median(margins):.4f}, max {margins.max():.4f} nats; grid tokens saved (mean over surfaces): at "
        f"each surface's own margin (an oracle) {np.mean(own):.3f}; at the largest margin "
        f"{np.mean([s for s, _ in top]):.3f}; at the median margin {np.mean([s for s, _ in mid]):.3f}, "
        f"stopping an lr a later budget needs on {sum(lost > 0 for _, lost in mid)} of {n} surfaces"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storage", nargs="?", help="a sweep's store (leave out for simulated surfaces)")
    parser.add_argument("--sweep", help="the sweep's name in the store")
    parser.add_argument(
        "--window", type=int, default=3, help="lrs each side of the argmin that the analysis fits"
    )
    parser.add_argument("--surfaces", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gain", type=float, default=0.15, help="the decay's gain at lr_opt, nats")
    parser.add_argument("--power", type=float, default=0.4, help="the gain grows as lr**power")
    args = parser.parse_args()
    if args.storage:
        store_report(args.storage, args.sweep, args.window)
    else:
        synthetic_report(args.surfaces, args.seed, args.window, args.gain, args.power)


if __name__ == "__main__":
    main()
