"""Training throughput: tokens/s and MFU per preset, and packed variants vs solo runs.

MFU = 6 * params * tokens/s over the fp32 matmul peak measured in this same process, next to each round of
steps (a shared host's speed drifts: see `measure`). Packing: K variants in one lockstep process vs K solo
runs one after another, as tokens * variants / s and their ratio.
Run: .venv/bin/python benchmarks/train_throughput.py [--presets cpu-xs cpu-s cpu-m] [--pack 1 2 4 8] \
     [--compile]
--compile adds TrainConfig(compile=True), timed in the same rounds as eager, with the seconds of its first
(compiling) step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from powersweep.proxy_models.packed import PackedTrainer
from powersweep.proxy_models.perf import measure_matmul_flops, mfu
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.trainer import TrainConfig, Trainer


def time_steps(trainer: Trainer, steps: int) -> float:
    """Seconds per step over `steps` steps (after the caller's warm-up)."""
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(1e-3)
    return (time.perf_counter() - start) / steps


def measure(
    preset: str, *, batch_size: int, seq_len: int, steps: int, repeats: int, compile: bool = False
) -> list[dict]:
    """One row per variant (eager, and compiled with `compile`), timed in the same rounds.

    Each round measures the matmul peak, then `steps` steps of every variant, so each round's MFU has the
    peak of its own moment: on a shared host the machine's speed drifts between rounds, not within one.
    """
    variants = {"eager": False, **({"compiled": True} if compile else {})}
    trainers, first_step_s = {}, {}
    for name, compiled in variants.items():
        config = TrainConfig(
            model=preset,
            model_overrides={"seq_len": seq_len},
            batch_size=batch_size,
            compile=compiled,
            tokens=batch_size * seq_len * 10**6,
            schedule=ScheduleConfig(name="constant", lr=1e-3),
        )
        trainers[name] = Trainer(config)
        first_step_s[name] = time_steps(trainers[name], 1)  # includes the compile when compiled
        time_steps(trainers[name], 2)  # warm-up: allocator, kernels
    n_params = config.proxy.num_params(active=True)
    tokens = batch_size * seq_len
    rounds = {name: [] for name in variants}
    for _ in range(repeats):
        peak = measure_matmul_flops("cpu", torch.float32, calls=5)
        for name, trainer in trainers.items():
            tokens_per_s = tokens / time_steps(trainer, steps)
            rounds[name].append((tokens_per_s, mfu(n_params, tokens_per_s, peak), peak))
    return [
        {
            "preset": preset,
            "variant": name,
            "params": n_params,
            "tokens_per_s": statistics.median(r[0] for r in rs),
            "mfu": statistics.median(r[1] for r in rs),
            "peak_gflops": statistics.median(r[2] for r in rs) / 1e9,
            "first_step_s": first_step_s[name],
        }
        for name, rs in rounds.items()
    ]


def measure_packing(preset: str, k: int, *, batch_size: int, seq_len: int, steps: int, repeats: int) -> dict:
    """tokens * variants / s of K packed variants, and of one solo run (K solo runs take K times as long)."""
    config = TrainConfig(
        model=preset,
        model_overrides={"seq_len": seq_len},
        batch_size=batch_size,
        tokens=batch_size * seq_len * 10**6,
        schedule=ScheduleConfig(name="constant", lr=1e-3),
    )
    packed = PackedTrainer(config, [config.schedule] * k)
    lrs = torch.full((k,), 1e-3)

    def packed_steps(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            packed.train_step(lrs)
        return (time.perf_counter() - start) / n

    packed_steps(2)
    per_step = statistics.median(packed_steps(steps) for _ in range(repeats))
    solo = Trainer(config)
    time_steps(solo, 2)
    solo_step = statistics.median(time_steps(solo, steps) for _ in range(repeats))
    tokens = batch_size * seq_len
    return {"packed": k * tokens / per_step, "solo": tokens / solo_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="+", default=["cpu-xs", "cpu-s", "cpu-m"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pack", type=int, nargs="*", default=[1, 2, 4, 8], help="K values to compare")
    parser.add_argument("--pack-presets", nargs="*", default=["cpu-xs", "cpu-s"])
    parser.add_argument(
        "--compile", action="store_true", help="also time TrainConfig(compile=True), interleaved with eager"
    )
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"batch {args.batch_size} x seq {args.seq_len}, compile={args.compile}"
    )
    print(
        "| preset | variant | params | tokens/s (median) | MFU (median) | fp32 matmul peak (median) "
        "| first step (s) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for preset in args.presets:
        for r in measure(
            preset,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            steps=args.steps,
            repeats=args.repeats,
            compile=args.compile,
        ):
            print(
                f"| {r['preset']} | {r['variant']} | {r['params'] / 1e6:.2f}M | {r['tokens_per_s']:,.0f} "
                f"| {r['mfu']:.1%} | {r['peak_gflops']:.0f} GFLOP/s | {r['first_step_s']:.1f} |",
                flush=True,
            )
    if args.pack:
        print("\n| preset | K | packed tokens*variants/s | solo tokens/s | packed / solo |")
        print("| --- | ---: | ---: | ---: | ---: |")
    for preset in args.pack_presets if args.pack else []:
        for k in args.pack:
            r = measure_packing(
                preset,
                k,
                batch_size=args.batch_size,
                seq_len=args.seq_len,
                steps=args.steps,
                repeats=args.repeats,
            )
            print(
                f"| {preset} | {k} | {r['packed']:,.0f} | {r['solo']:,.0f} | {r['packed'] / r['solo']:.2f}x |"
            )


if __name__ == "__main__":
    main()
