"""What `run.loggers` costs a trial of the main job:
one lineage with each logger on against none, interleaved.

Each measurement is a fresh process that trains one lineage of sweeps/specs/cpu-quick.yaml (cpu-xxs, batch 4 x
64, WSD, lr 5e-4) through `execute.run_job`, the trial's own path (rows written to a Parquet store in a
temporary directory), with `--budgets` of its budgets (default 125K to 1M: about 4,600 steps) and one torch
thread. The time covers run_job whole: the logger's import, its run's start and finish, every curve point (the
curve grid's: loss_train, loss_train_mean and lr per train point, loss_eval per eval point) and every stored
row; the driver's `prepare` (MLflow's database made once per sweep) runs before the clock starts. On a busy
shared host the A/B difference can drown in noise, so each run also sums the wall time spent inside the
trackers' own calls (start, import included; log; finish), a direct measure of what they add on this thread
(W&B's service process and TensorBoard's writer thread work beside it). Each round runs every condition once,
in an order rotated per round; medians over rounds and their ratios to 'off' are printed. A full main-job
lineage (to 4M) trains about 4x the steps with the same fixed start cost, so its relative cost is at most this
one's.

Run: .venv/bin/python benchmarks/trackers_cost.py [--rounds 3 --budgets 4 --loggers tensorboard mlflow wandb]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

CHILD = """
import json, os, sys, tempfile, time, torch, yaml
from powersweep.proxy_models.budgets import planned_tokens
from powersweep.sweeps.execute import ExecutionSettings, run_job
from powersweep.sweeps.plan import plan
from powersweep.sweeps.spec import RunSpec, spec_from_dict
from powersweep.sweeps import trackers
torch.set_num_threads(1)
inside = {"__init__": 0.0, "log": 0.0, "finish": 0.0}  # seconds in the trackers' own calls \
(start: import too)
sent = [0]  # metric points handed to the trackers' log


def timed(method, name):
    def call(*args, **kwargs):
        sent[0] += len(args[1]) if name == "log" else 0
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            inside[name] += time.perf_counter() - start
    return call


for backend in trackers.BACKENDS.values():
    for name in inside:
        setattr(backend, name, timed(getattr(backend, name), name))
loggers, budgets = tuple(sys.argv[1:-1]), int(sys.argv[-1])
with open(os.path.join("sweeps", "specs", "cpu-quick.yaml")) as f:
    values = yaml.safe_load(f)
values["search"]["lr"] = [0.0005]
values["search"]["tokens"] = values["search"]["tokens"][:budgets]
[job] = plan(spec_from_dict(values)).jobs
with tempfile.TemporaryDirectory() as tmp:
    settings = ExecutionSettings(store_uri=os.path.join(tmp, "store"), sweep_id="cost", checkpoint_root=tmp,
                                 run=RunSpec(loggers=list(loggers)),
                                 tracking_root=os.path.join(tmp, "tracking"))
    trackers.prepare(loggers, settings.tracking_root, "cost")
    start, cpu_start = time.perf_counter(), time.process_time()
    run_job(job, settings)
    print(json.dumps({"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu_start,
                      "tracker_s": sum(inside.values()), "start_s": inside["__init__"], \
"log_s": inside["log"],
                      "finish_s": inside["finish"], "points": sent[0],
                      "steps": planned_tokens(job.config, job.budgets) // job.config.tokens_per_step}))
"""


def measure(loggers: list[str], budgets: int) -> dict:
    """One fresh process: run_job of the lineage with `loggers` on; its wall and CPU seconds."""
    env = {**os.environ, "WANDB_SILENT": "true"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *loggers, str(budgets)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budgets", type=int, default=4, help="the first N budgets of cpu-quick (6 = to 4M)")
    parser.add_argument("--loggers", nargs="+", default=["tensorboard", "mlflow", "wandb"])
    args = parser.parse_args(argv)
    conditions = ["off", *args.loggers]
    times: dict[str, list[dict]] = {name: [] for name in conditions}
    for i in range(args.rounds):
        order = conditions[i % len(conditions) :] + conditions[: i % len(conditions)]
        for name in order:
            times[name].append(measure([] if name == "off" else [name], args.budgets))
        print(
            f"round {i + 1}: "
            + ", ".join(
                f"{n} {times[n][-1]['wall_s']:.2f} s ({times[n][-1]['cpu_s']:.2f} CPU s, "
                f"{times[n][-1]['tracker_s']:.3f} s in trackers)"
                for n in conditions
            ),
            flush=True,
        )
    print(
        f"steps trained per run: {times['off'][-1]['steps']}; metric points sent per logger: "
        + ", ".join(f"{name} {times[name][-1]['points']}" for name in args.loggers)
    )
    for name in args.loggers:
        inside = {
            key: statistics.median(t[key] for t in times[name]) for key in ("start_s", "log_s", "finish_s")
        }
        total = statistics.median(t["tracker_s"] for t in times[name])
        wall = statistics.median(t["wall_s"] for t in times[name])
        print(
            f"{name}: median {total:.3f} s inside the tracker's calls ({total / wall:.2%} of its median "
            "wall time): " + ", ".join(f"{key} {value:.3f}" for key, value in inside.items())
        )
    for key in ("wall_s", "cpu_s"):
        medians = {name: statistics.median(t[key] for t in ts) for name, ts in times.items()}
        print(
            f"{key}: "
            + ", ".join(f"{name} median {m:.2f} (x{m / medians['off']:.3f})" for name, m in medians.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
