"""An adaptive spec's search replayed on a grid sweep's stored rows: the rounds, tokens and fit it would give.

Grid and adaptive lineages share their ids, so when every lr the search asks for is one of the grid's (the
adaptive lattice holds the grid's values), the replay is exactly what an adaptive sweep would train; when it
asks for an lr the grid lacks, the replay stops there and says which (run the adaptive sweep on a copy of the
grid's store to train only those). Per round it prints the lineage tokens and the slot tokens: the round's
lineages (each the tokens it adds) spread over `--slots` concurrent trials, longest first, and the busiest
slot's tokens, a deterministic stand-in for the round's wall time (a round waits for its last lineage).

    python benchmarks/adaptive_replay.py /tmp/h16/grid1 --sweep cpu-quick sweeps/specs/cpu-quick-adaptive.yaml
"""

from __future__ import annotations

import argparse
import heapq
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from powersweep.analysis import analyze  # noqa: E402
from powersweep.sweeps.adaptive import lr_value  # noqa: E402
from powersweep.sweeps.plan import plan  # noqa: E402
from powersweep.sweeps.rounds import search_state, stored_results  # noqa: E402
from powersweep.sweeps.spec import load_spec  # noqa: E402
from powersweep.sweeps.store import ResultStore  # noqa: E402


def busiest_slot(costs: list[float], slots: int) -> float:
    """Tokens of the busiest of `slots` when each lineage goes, longest first, to the least loaded one."""
    loads = [0.0] * slots
    for cost in sorted(costs, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + cost)
    return max(loads)


def round_costs(rounds, tokens: dict[float, float]) -> list[list[float]]:
    """Per round, the tokens each of its lineages adds (an extended lineage: only past its earlier budget)."""
    trained, out = {}, []
    for r in rounds:
        out.append([tokens[t] - tokens.get(trained.get(k), 0) for k, t in r.items() if t > trained.get(k, 0)])
        for k, t in r.items():
            trained[k] = max(trained.get(k, 0), t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storage", help="the grid sweep's store")
    parser.add_argument("--sweep", required=True, help="the grid sweep's name")
    parser.add_argument("--slots", type=int, default=2, help="concurrent trials (the main job: 2 cores)")
    parser.add_argument("spec", help="the adaptive spec")
    args = parser.parse_args()
    table = ResultStore(args.storage).read(sweep_id=args.sweep).table.drop(columns=["created_at"])
    grid = table[table["phase"].ne("trunk")]
    for search in plan(load_spec(args.spec)).mode.searches:
        state = search_state(search, stored_results(table))
        print(
            f"{state.reason}: {len(state.rounds)} rounds; waiting on the grid for "
            f"{ {lr_value(search.policy, k): t for k, t in state.pending.items()} }"
        )
        tokens = dict(search.lineage_tokens)
        full, per_step = tokens[search.budgets[-1]], search.template.tokens_per_step
        costs = round_costs(state.rounds, tokens)
        for r, cost in zip(state.rounds, costs):
            print(
                f"  round {len(cost)} lineages, {sum(cost):,.0f} tokens, busiest of {args.slots} slots "
                f"{busiest_slot(cost, args.slots):,.0f}:",
                {lr_value(search.policy, k): t for k, t in sorted(r.items())},
            )
        used = sum(tokens[t] for t in state.requested.values())
        slot = sum(busiest_slot(c, args.slots) for c in costs)
        n_grid = grid["lr"].nunique()
        print(
            f"adaptive: lineage tokens {used:,} = {used / full:.2f} full lineages, {used // per_step:,} "
            f"steps; slot tokens {slot:,.0f}"
        )
        print(
            f"grid: lineage tokens {n_grid * full:,} ({n_grid} lineages), {n_grid * full // per_step:,} "
            f"steps; slot tokens {busiest_slot([full] * n_grid, args.slots):,.0f}"
        )
        ids = {r for k, top in state.requested.items() for job in search.jobs(k, top) for r in job.run_ids}
        for name, rows in (("grid", grid), ("adaptive", table[table["run_id"].isin(ids)])):
            fit = analyze(rows, n_boot=1000, seed=0).gamma.pooled
            print(
                f"{name}: {len(rows)} budget rows, b = {fit.b:.4f} [{fit.b_ci.low:.4f}, {fit.b_ci.high:.4f}]"
            )


if __name__ == "__main__":
    main()
