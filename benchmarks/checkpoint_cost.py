"""What trunk checkpoints cost a lineage: wall time outside its training and evaluation, and of it the time
training waited for checkpoints (copies to host memory, earlier writes), as a sweep's trials pay it.

A packed lineage saves its trunk (weights and both Adam moments of every variant) at every fork and every
`--every` steps: 3 x K x N float32 values, 2.4 GB for 16 variants of paper-12m. The saves are written in the
background (proxy_models/checkpoint.py); `--synchronous` waits for each write, as the saves did before.

    python benchmarks/checkpoint_cost.py --preset paper-12m --pack 16 --shape 1x64 --budgets 12 24 36
    python benchmarks/checkpoint_cost.py ... --synchronous
    python benchmarks/checkpoint_cost.py --device cuda --preset paper-12m --pack 16 --shape 16x1024 \
        --budgets 10 20 30

Budgets are in steps; the lineage's checkpoints go to a temporary directory under --dir (default: the system's
temporary directory, where a sweep's checkpoint_root would be on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from powersweep.proxy_models import checkpoint  # noqa: E402
from powersweep.proxy_models.data import DataConfig, load_corpus  # noqa: E402
from powersweep.proxy_models.lineage import Attempt, train_packed_lineage  # noqa: E402
from powersweep.proxy_models.schedules import ScheduleConfig  # noqa: E402
from powersweep.proxy_models.shapes import get_preset  # noqa: E402
from powersweep.proxy_models.trainer import TrainConfig  # noqa: E402


def measure(
    preset: str,
    pack: int,
    shape: str,
    budgets_steps: list[int],
    *,
    every: int,
    directory: str | None,
    synchronous: bool,
    device: str = "cpu",
) -> dict:
    batch, seq = (int(v) for v in shape.split("x"))
    tokens_per_step = batch * seq
    budgets = [b * tokens_per_step for b in budgets_steps]
    config = TrainConfig(
        model=preset,
        model_overrides={"seq_len": seq},
        batch_size=batch,
        tokens=max(budgets),
        device=device,
        data=DataConfig(eval_tokens=seq * 4),
        schedule=ScheduleConfig(name="wsd", lr=1e-3, warmup_tokens=tokens_per_step, decay_fraction=0.2),
    )
    schedules = [
        ScheduleConfig(name="wsd", lr=1e-3 * 2 ** (i / 4), warmup_tokens=tokens_per_step, decay_fraction=0.2)
        for i in range(pack)
    ]
    if synchronous:  # every save waits for its write
        background = checkpoint.save
        checkpoint.save = lambda state, path: (background(state, path), checkpoint.wait(path))
    corpus, attempt = load_corpus(config.data), Attempt()
    with tempfile.TemporaryDirectory(prefix="powersweep-checkpoint-bench-", dir=directory) as root:
        start = time.perf_counter()
        train_packed_lineage(
            config,
            schedules,
            budgets,
            corpus=corpus,
            checkpoint_dir=root,
            checkpoint_every_steps=every,
            attempt=attempt,
            curve_grid=None,
        )
        wall_s = time.perf_counter() - start
        state_bytes = os.path.getsize(os.path.join(root, "trunk.pt"))
    outside = wall_s - attempt.train_s - attempt.eval_s
    return {
        "preset": preset,
        "pack": pack,
        "shape": shape,
        "device": device,
        "budgets_steps": budgets_steps,
        "every": every,
        "synchronous": synchronous,
        "checkpoint_gb": state_bytes / 1e9,
        "wall_s": wall_s,
        "train_s": attempt.train_s,
        "eval_s": attempt.eval_s,
        "outside_s": outside,
        "checkpoint_s": attempt.checkpoint_s,
        "steps": attempt.steps_trained,
        "n_params": get_preset(preset, seq_len=seq).num_params(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="cpu-xs")
    parser.add_argument("--pack", type=int, default=4, help="variants in the lineage")
    parser.add_argument("--shape", default="4x64", help="batch x seq")
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 30], help="budgets, in steps")
    parser.add_argument("--every", type=int, default=0, help="checkpoint_every_steps (0: at forks only)")
    parser.add_argument("--dir", help="where the checkpoints are written (default: the temporary directory)")
    parser.add_argument(
        "--synchronous", action="store_true", help="wait for every write, as saves did before"
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (where the lineage trains)")
    args = parser.parse_args(argv)
    row = measure(
        args.preset,
        args.pack,
        args.shape,
        args.budgets,
        every=args.every,
        directory=args.dir,
        synchronous=args.synchronous,
        device=args.device,
    )
    print(json.dumps(row))
    print(
        f"{row['preset']} x {row['pack']} on {row['device']} ({row['checkpoint_gb']:.2f} GB a checkpoint), "
        f"{row['steps']} steps: "
        f"wall {row['wall_s']:.1f} s, training {row['train_s']:.1f} s, eval {row['eval_s']:.1f} s, outside "
        f"{row['outside_s']:.1f} s, of it waiting for checkpoints {row['checkpoint_s']:.1f} s"
        + (" (synchronous)" if row["synchronous"] else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
