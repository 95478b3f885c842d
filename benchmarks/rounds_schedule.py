"""How long an adaptive sweep's rounds keep slots idle: chains of rounds against one round for every group.

A deterministic simulation of the rounds' searcher (`sweeps.execute.rounds_searcher`, driven as Tune drives
it) over `--slots` concurrent trials: each group's search (`sweeps.rounds`) is run on a synthetic loss surface
(a bowl in ln lr whose optimum falls as T^-0.5, lrs 3x above it diverging), and a lineage takes as long as
its estimated cost (`sweeps.execute.job_cost`'s FLOP-equivalents: 6 N D plus a fixed cost per step), counting
only what it adds: an extended lineage resumes from its checkpoint. Compared: every group in one chain (one
round of all groups at a time: a round waits for its last lineage) and a chain per model and batch size (what
`run_rounds` does). Printed per slot count: the makespan of each, its ratio, and the share of slot time idle.
Both train the same lineages (the searches' results do not depend on the order).

    python benchmarks/rounds_schedule.py sweeps/specs/paper-wsd.yaml --adaptive --slots 2 8 32
    python benchmarks/rounds_schedule.py benchmarks/adaptive_chains.yaml --slots 2 4
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from powersweep.proxy_models.budgets import planned_tokens  # noqa: E402
from powersweep.sweeps.adaptive import lr_value  # noqa: E402
from powersweep.sweeps.execute import STEP_OVERHEAD_FLOPS, rounds_searcher  # noqa: E402
from powersweep.sweeps.plan import plan  # noqa: E402
from powersweep.sweeps.rounds import round_jobs, search_state  # noqa: E402
from powersweep.sweeps.spec import load_spec, spec_from_dict  # noqa: E402


def loss(lr: float, tokens: float, lr_opt_first: float, first_tokens: float) -> float:
    """The synthetic surface: an asymmetric bowl in ln lr around lr_opt(T) = lr_opt_first (T / T0)^-0.5."""
    x = math.log(lr / (lr_opt_first * (tokens / first_tokens) ** -0.5))
    return math.inf if x > math.log(3) else 3 + (0.1 if x > 0 else 0.05) * x * x


def simulate(searches, chains: dict, slots: int, device: str, lr_opt_first: float) -> dict:
    """Run the searches' rounds on `slots` slots; `chains`: chain -> its searches. Returns the makespan, the
    slot time busy and the lineages trained."""
    budgets_done: dict[str, list[float]] = {}  # lineage_id -> budgets trained
    results: dict[str, float] = {}
    first_tokens = min(searches[0].budgets)

    def round_of(chain) -> list[tuple]:
        stored = set(results)
        jobs = [j for s in chains[chain] for j in round_jobs(s, search_state(s, results), stored)]
        return [(job,) for job in jobs]

    def cost(trial: tuple) -> float:
        (job,) = trial
        done = budgets_done.get(job.lineage_id, [])
        tokens = planned_tokens(job.config, sorted({*done, *job.budgets}))
        added = tokens - (planned_tokens(job.config, done) if done else 0)
        return (
            6 * job.config.proxy.num_params() * added
            + added / job.config.tokens_per_step * (STEP_OVERHEAD_FLOPS[device])
        )

    first = {chain: trials for chain in chains if (trials := round_of(chain))}
    searcher = rounds_searcher(first, lambda chain, _: round_of(chain), cost=cost)
    clock, busy, running, lineages, ids = 0.0, 0.0, [], 0, iter(range(10**9))
    while True:
        while len(running) < slots:
            trial_id = f"t{next(ids)}"
            suggestion = searcher.suggest(trial_id)
            if not isinstance(suggestion, dict):
                break
            (job,) = suggestion["jobs"]
            seconds = cost(suggestion["jobs"])
            busy += seconds
            lineages += 1
            heapq.heappush(running, (clock + seconds, trial_id, job))
        if not running:
            return {"makespan": clock, "busy": busy, "lineages": lineages}
        clock, trial_id, job = heapq.heappop(running)
        for tokens, run_id in zip(job.budgets, job.run_ids):
            results[run_id] = loss(job.config.schedule.lr, tokens, lr_opt_first, first_tokens)
        budgets_done[job.lineage_id] = sorted({*budgets_done.get(job.lineage_id, []), *job.budgets})
        searcher.on_trial_complete(trial_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("spec")
    parser.add_argument(
        "--adaptive", action="store_true", help="a grid spec searched adaptively over its lrs"
    )
    parser.add_argument("--slots", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--lr-opt", type=float, default=None, help="lr_opt at the smallest budget")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    if args.adaptive:
        values = spec.to_dict()
        lrs = values["search"].pop("lr")
        values["search"] |= {"mode": "adaptive", "adaptive": {"lr_range": [min(lrs), max(lrs)], "spacing": 2}}
        spec = spec_from_dict(values)
    searches = plan(spec).mode.searches
    policy = searches[0].policy
    start = [lr_value(policy, k) for k in policy.start]
    lr_opt_first = args.lr_opt or math.sqrt(min(start) * max(start))  # mid-range at the smallest budget
    device = "gpu" if spec.run.uses_gpu else "cpu"
    per_chain: dict = {}
    for search in searches:
        per_chain.setdefault((search.template.model, search.template.batch_size), []).append(search)
    print(f"{spec.name}: {len(searches)} groups in {len(per_chain)} chains, costs as on a {device}")
    print("slots  one chain (makespan, idle)  chains (makespan, idle)  ratio  lineages")
    for slots in args.slots:
        one = simulate(searches, {"all": searches}, slots, device, lr_opt_first)
        many = simulate(searches, per_chain, slots, device, lr_opt_first)
        idle = {name: 1 - r["busy"] / (r["makespan"] * slots) for name, r in (("one", one), ("many", many))}
        print(
            f"{slots:>5}  {one['makespan']:.4g} {idle['one']:>6.1%}"
            f"{many['makespan']:>18.4g} {idle['many']:>6.1%}  {many['makespan'] / one['makespan']:>11.3f}"
            f"  {one['lineages']}/{many['lineages']}"
        )


if __name__ == "__main__":
    main()
