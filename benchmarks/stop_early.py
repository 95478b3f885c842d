"""Would stopping a lineage at its trunk lose a later budget's optimum? Measured on a sweep's stored rows.

A lineage writes a trunk row (phase 'trunk', stable-phase loss) at each fork. Stopping a lineage at the fork
of budget T_i when its trunk loss is worse than the group's best trunk loss there by more than a margin
drops every larger budget of that lr. For each fork and each lr this prints the trunk gap (nats above the
best trunk loss there) and whether the lr is, at some larger budget, the argmin of the final losses or inside
its window (the argmin and two lrs on each side, what the analysis fits). The smallest safe margin is the
largest gap of an lr that a later budget still needs.

    python benchmarks/stop_early.py runs/cpu-quick --sweep cpu-quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeps.store import ResultStore  # noqa: E402

WINDOW = 2  # lrs on each side of the argmin that the analysis' quadratic uses


def needed_later(final: pd.DataFrame, fork_tokens: float, decay: float) -> tuple[set[float], set[float]]:
    """lrs that are the argmin, or in the argmin's window, at some budget whose fork lies after `fork_tokens`."""
    best, window = set(), set()
    for tokens, cell in final.groupby("tokens"):
        if (1 - decay) * tokens <= fork_tokens:
            continue
        lrs = sorted(cell["lr"])
        losses = cell.set_index("lr")["loss"].reindex(lrs).to_numpy()
        i = int(np.nanargmin(losses))
        best.add(lrs[i])
        window.update(lrs[max(i - WINDOW, 0): i + WINDOW + 1])
    return best, window


def gaps(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (fork, lr): trunk gap in nats, and whether a later budget needs the lr."""
    table = table.assign(loss=table["loss_eval"].where(table["status"].eq("ok"), np.inf))
    trunk, final = table[table["phase"].eq("trunk")], table[~table["phase"].eq("trunk")]
    decay = float(final["decay_fraction"].iloc[0])
    out = []
    for fork, points in trunk.groupby("tokens"):
        best, window = needed_later(final, fork, decay)
        floor = points["loss"].min()
        for lr, loss in zip(points["lr"], points["loss"]):
            out.append({"fork_tokens": fork, "lr": lr, "gap": loss - floor, "best_later": lr in best,
                        "window_later": lr in window})
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storage")
    parser.add_argument("--sweep", required=True)
    args = parser.parse_args()
    frame = gaps(ResultStore(args.storage).read(sweep_id=args.sweep).table)
    pd.set_option("display.width", 200)
    print(frame.pivot(index="lr", columns="fork_tokens", values="gap").round(4).to_string())
    for column in ("best_later", "window_later"):
        needed = frame[frame[column]]
        print(f"largest trunk gap of an lr that is {column.replace('_', ' ')}: {needed['gap'].max():.4f} nats")
    spare = frame[~frame["window_later"] & frame["fork_tokens"].lt(frame["fork_tokens"].max())]
    print(f"(fork, lr) pairs that no later budget needs: {len(spare)}, trunk gaps {spare['gap'].min():.4f} to "
          f"{spare['gap'].max():.4f} nats")


if __name__ == "__main__":
    main()
