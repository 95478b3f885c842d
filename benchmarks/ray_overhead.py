"""Ray Tune's cost per trial: trivial trials through execute()'s Tuner (build_tuner) vs Tune's defaults.

Each mode runs in a fresh process (Tune reads its settings from the environment when fit() starts):

    python benchmarks/ray_overhead.py --trials 1000                 # every mode, one after another
    python benchmarks/ray_overhead.py --trials 300 --mode ours      # one mode

Prints per mode: seconds per lineage, driver RSS growth and the time Tune spent saving its experiment state.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

MODES = {
    "default": "tune.Tuner with default settings, 1 CPU per trial",
    "ours-tune-env-off": "build_tuner with Tune's own logger and experiment-checkpoint defaults",
    "ours": "build_tuner as execute() runs it, one lineage per trial",
    "ours-grouped": "build_tuner, 4 lineages per trial (trial_groups)",
}


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    return kib / 1024


def trivial_trial(params: dict) -> None:
    """A trial body like execute()'s: one report per lineage of the trial, no training."""
    from ray import tune

    for item in params["jobs"]:
        tune.report(
            {"run_id": str(item), "worker_pid": os.getpid(), "trial_s": 0.0, "train_s": 0.0, "eval_s": 0.0}
        )


def timed_state_saves() -> dict:
    """Wrap Tune's experiment-state save to count its calls and seconds."""
    from ray.tune.execution.tune_controller import TuneController

    totals, save = {"saves": 0, "save_s": 0.0}, TuneController.save_to_dir

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return save(self, *args, **kwargs)
        finally:
            totals["saves"] += 1
            totals["save_s"] += time.perf_counter() - start

    TuneController.save_to_dir = timed
    return totals


def build(mode: str, lineages: int, root: str):
    """The mode's Tuner and its number of trials."""
    from ray import tune

    from powersweep.sweeps.execute import ExecutionSettings, build_tuner, trial_groups

    if mode == "default":
        trainable = tune.with_resources(trivial_trial, {"cpu": 1})
        tuner = tune.Tuner(
            trainable,
            param_space={"jobs": tune.grid_search([(i,) for i in range(lineages)])},
            run_config=tune.RunConfig(storage_path=root, name="default", verbose=0),
        )
        return tuner, lineages
    if mode == "ours-tune-env-off":
        os.environ.update(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="0", TUNE_GLOBAL_CHECKPOINT_S="auto")
    settings = ExecutionSettings(store_uri=root, sweep_id=mode, checkpoint_root=root)
    groups = trial_groups(list(range(lineages)), 4 if mode == "ours-grouped" else 1)
    tuner = build_tuner(
        trivial_trial, settings, param_space={"jobs": tune.grid_search(groups), "settings": settings}
    )
    return tuner, len(groups)


def run_mode(mode: str, lineages: int) -> dict:
    import ray

    from powersweep.sweeps.execute import run_trials

    ray.init(
        address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False
    )
    saves = timed_state_saves()
    with tempfile.TemporaryDirectory() as root:
        tuner, trials = build(mode, lineages, root)
        rss0, start = rss_mib(), time.perf_counter()
        # Tune's defaults run as Tune runs them, the other modes as a sweep runs its Tuner
        failed = sum(r.error is not None for r in tuner.fit()) if mode == "default" else run_trials(tuner)
        wall = time.perf_counter() - start
    ray.shutdown()
    return {
        "mode": mode,
        "lineages": lineages,
        "trials": trials,
        "failed_trials": failed,
        "wall_s": round(wall, 1),
        "s_per_lineage": round(wall / lineages, 3),
        "rss_growth_mib": round(rss_mib() - rss0, 1),
        "state_saves": saves["saves"],
        "state_save_s": round(saves["save_s"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=1000, help="lineages per mode")
    parser.add_argument("--default-trials", type=int, help="lineages for mode 'default' (it is slow)")
    parser.add_argument("--mode", choices=MODES, help="run one mode in this process")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.trials)), flush=True)
        return
    for mode, what in MODES.items():
        n = args.default_trials if mode == "default" and args.default_trials else args.trials
        done = subprocess.run(
            [sys.executable, __file__, "--mode", mode, "--trials", str(n)], capture_output=True, text=True
        )
        last = (done.stdout.strip().splitlines() or [""])[-1] if done.returncode == 0 else done.stderr[-2000:]
        print(f"{what}: {last}", flush=True)


if __name__ == "__main__":
    main()
