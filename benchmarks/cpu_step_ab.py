"""Steps/s of the main job's model on CPU: this tree against another checkout, interleaved.

The main job trains cpu-xxs at batch 4 x 64 (sweeps/specs/cpu-quick.yaml). Each round runs one fresh
process per tree, alternating which goes first, and each process times `--steps` steps of Trainer.train_to
after a warm-up; the medians over rounds and their ratio are printed. On a shared host only the ratio of
interleaved runs means anything.

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
from proxy_models.data import DataConfig
from proxy_models.schedules import ScheduleConfig
from proxy_models.trainer import TrainConfig, Trainer
torch.set_num_threads(1)
config = TrainConfig(model="cpu-xxs", model_overrides={"seq_len": 64}, batch_size=4, tokens=4 * 64 * 10**6,
                     schedule=ScheduleConfig(name="constant", lr=1e-2), device="cpu", log_every_steps=10**6)
trainer = Trainer(config)
trainer.train_to(30, total_tokens=None)
start = time.perf_counter()
trainer.train_to(30 + STEPS, total_tokens=None)
print(json.dumps({"steps_per_s": STEPS / (time.perf_counter() - start), "source": proxy_models.__file__}))
"""


def steps_per_s(tree: str, steps: int) -> float:
    """One fresh process importing the package from `tree`."""
    env = {**os.environ, "PYTHONPATH": tree}
    done = subprocess.run([sys.executable, "-c", CHILD.replace("STEPS", str(steps))], env=env, cwd=tree,
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["source"].startswith(os.path.abspath(tree)), result  # the tree asked for, not the installed one
    return result["steps_per_s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="another checkout of the project (e.g. main)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    trees = {"this tree": os.path.abspath(os.path.join(os.path.dirname(__file__), "..")),
             "baseline": os.path.abspath(args.baseline)}
    rates: dict[str, list[float]] = {name: [] for name in trees}
    for i in range(args.rounds):
        order = list(trees) if i % 2 == 0 else list(reversed(trees))
        for name in order:
            rates[name].append(steps_per_s(trees[name], args.steps))
        print(f"round {i + 1}: " + ", ".join(f"{n} {rates[n][-1]:.1f}" for n in trees), flush=True)
    medians = {name: statistics.median(r) for name, r in rates.items()}
    print(", ".join(f"{name}: median {m:.1f} steps/s" for name, m in medians.items()) +
          f"; ratio this/baseline {medians['this tree'] / medians['baseline']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
