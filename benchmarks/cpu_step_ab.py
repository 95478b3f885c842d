"""Steps/s of the main job's model on CPU: this tree against another checkout, interleaved.

The main job trains cpu-xxs at batch 4 x 64 (sweeps/specs/cpu-quick.yaml). Each round runs one fresh
process per tree, alternating which goes first, and each process times `--steps` steps of Trainer.train_to
after a warm-up, in wall time and in the process's CPU time (one thread: on a busy host the CPU time
leaves out the waits for a core that the wall time holds); the medians over rounds and their ratios are
printed. On a shared host only the ratio of interleaved runs means anything.

Run: .venv/bin/python benchmarks/cpu_step_ab.py --baseline /path/to/other/checkout [--rounds 6 --steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, time, torch, proxy_models
from powersweep.proxy_models.data import DataConfig
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.trainer import TrainConfig, Trainer
torch.set_num_threads(1)
config = TrainConfig(model="cpu-xxs", model_overrides={"seq_len": 64}, batch_size=4, tokens=4 * 64 * 10**6,
                     schedule=ScheduleConfig(name="constant", lr=1e-2), device="cpu", log_every_steps=10**6)
trainer = Trainer(config)
trainer.train_to(30, total_tokens=None)
start, cpu_start = time.perf_counter(), time.process_time()
trainer.train_to(30 + STEPS, total_tokens=None)
print(json.dumps({"steps_per_s": STEPS / (time.perf_counter() - start),
                  "steps_per_cpu_s": STEPS / (time.process_time() - cpu_start), \
"source": proxy_models.__file__}))
"""


def steps_per_s(tree: str, steps: int) -> dict:
    """One fresh process importing the package from `tree`: its steps per wall second and per CPU second."""
    env = {**os.environ, "PYTHONPATH": tree}
    done = subprocess.run(
        [sys.executable, "-c", CHILD.replace("STEPS", str(steps))],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # the tree asked for, not the installed one
    assert result["source"].startswith(os.path.abspath(tree)), result
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", required=True, help="another checkout of the project (e.g. main)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    trees = {
        "this tree": os.path.abspath(os.path.join(os.path.dirname(__file__), "..")),
        "baseline": os.path.abspath(args.baseline),
    }
    rates: dict[str, list[dict]] = {name: [] for name in trees}
    for i in range(args.rounds):
        order = list(trees) if i % 2 == 0 else list(reversed(trees))
        for name in order:
            rates[name].append(steps_per_s(trees[name], args.steps))
        print(
            f"round {i + 1}: "
            + ", ".join(
                f"{n} {rates[n][-1]['steps_per_s']:.1f} steps/s "
                f"({rates[n][-1]['steps_per_cpu_s']:.1f} per CPU s)"
                for n in trees
            ),
            flush=True,
        )
    for key in ("steps_per_s", "steps_per_cpu_s"):
        medians = {name: statistics.median(r[key] for r in rs) for name, rs in rates.items()}
        print(
            f"{key}: "
            + ", ".join(f"{name} median {m:.1f}" for name, m in medians.items())
            + f"; ratio this/baseline {medians['this tree'] / medians['baseline']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
