"""An adaptive spec's search replayed on a grid sweep's stored rows: the rounds, tokens and fit it would give.

Grid and adaptive lineages share their ids, so when every lr the search asks for is one of the grid's (the
adaptive lattice holds the grid's values), the replay is exactly what an adaptive sweep would train.

    python benchmarks/adaptive_replay.py /tmp/h16/grid1 --sweep cpu-quick sweeps/specs/cpu-quick-adaptive.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import analyze  # noqa: E402
from sweeps.adaptive import lr_value  # noqa: E402
from sweeps.plan import plan  # noqa: E402
from sweeps.rounds import search_state, stored_results  # noqa: E402
from sweeps.spec import load_spec  # noqa: E402
from sweeps.store import ResultStore  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storage", help="the grid sweep's store")
    parser.add_argument("--sweep", required=True, help="the grid sweep's name")
    parser.add_argument("spec", help="the adaptive spec")
    args = parser.parse_args()
    table = ResultStore(args.storage).read(sweep_id=args.sweep).table.drop(columns=["created_at"])
    for search in plan(load_spec(args.spec)).searches:
        state = search_state(search, stored_results(table))
        print(f"{state.reason}: {len(state.rounds)} rounds; waiting on the grid for "
              f"{ {lr_value(search.policy, k): t for k, t in state.pending.items()} }")
        for r in state.rounds:
            print("  round", {lr_value(search.policy, k): t for k, t in sorted(r.items())})
        tokens = dict(search.lineage_tokens)
        used, full = sum(tokens[t] for t in state.requested.values()), tokens[search.budgets[-1]]
        ids = {r for k, top in state.requested.items() for job in search.jobs(k, top) for r in job.run_ids}
        print(f"lineage tokens {used:,} = {used / full:.2f} full lineages; {len(ids)} budget rows")
        for name, rows in (("grid", table[table["phase"].ne("trunk")]), ("adaptive", table[table["run_id"].isin(ids)])):
            fit = analyze(rows, n_boot=1000, seed=0).gamma.pooled
            print(f"{name}: b = {fit.b:.4f} [{fit.b_ci.low:.4f}, {fit.b_ci.high:.4f}]")


if __name__ == "__main__":
    main()
