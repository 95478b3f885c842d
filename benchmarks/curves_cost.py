"""What training curves cost the main job: the recorder in the training loop, and the trial's curve writes.

1. A/B of a lineage of the main job's model (cpu-xxs, batch 4 x 64, WSD as in sweeps/specs/cpu-quick.yaml)
   with curves on (the default grid, every point handed on) and off (no grid), interleaved in one process,
   one thread, alternating which goes first; wall and CPU seconds per lineage, medians over rounds, the
   ratio of the medians and the median of each round's ratio.
2. The recorder's own cost per step: `CurveRecorder.watch` called as the trainer calls it, in ns, against
   the step time measured in (1).
3. The trial's curve writes: the points the "on" lineage handed on, written as the trial writes them (one
   merge-and-replace of the lineage's Parquet file per evaluation) into a local store; seconds per lineage.

On a shared host only interleaved ratios mean anything; the CPU time leaves out waits for a core.

Run: .venv/bin/python benchmarks/curves_cost.py [--rounds 5 --budgets 125K,250K,500K]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch

from powersweep.proxy_models.budgets import planned_tokens, trunk_tokens
from powersweep.proxy_models.curve_recorder import DEFAULT_GRID, CurveRecorder
from powersweep.proxy_models.data import DataConfig, load_corpus
from powersweep.proxy_models.lineage import train_lineage
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.trainer import TrainConfig
from powersweep.sweeps.curve_store import curve_saver
from powersweep.sweeps.lineages import LineageJob
from powersweep.sweeps.store import ResultStore

SUFFIX = {"K": 1e3, "M": 1e6}


def main_job_config(budget: float) -> TrainConfig:
    """cpu-quick's model, batch and schedule at lr 1e-3 (near its optimum)."""
    schedule = ScheduleConfig(name="wsd", lr=1e-3, warmup_tokens=12_500, decay_fraction=0.2)
    return TrainConfig(
        model="cpu-xxs",
        model_overrides={"seq_len": 64},
        batch_size=4,
        tokens=budget,
        schedule=schedule,
        device="cpu",
        data=DataConfig(eval_tokens=16384),
        log_every_steps=10**6,
    )


def one_lineage(config: TrainConfig, budgets: list[float], corpus, *, curves: bool) -> dict:
    """Wall and CPU seconds of one lineage, and the point batches it handed on."""
    handed: list[list[dict]] = []
    start, cpu = time.perf_counter(), time.process_time()
    train_lineage(
        config,
        budgets,
        corpus=corpus,
        on_curve=handed.append if curves else None,
        curve_grid=DEFAULT_GRID if curves else None,
    )
    return {"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu, "handed": handed}


def watch_ns(config: TrainConfig, calls: int = 200_000) -> float:
    """ns per `CurveRecorder.watch` call over a run of `calls` steps (grid points included)."""
    recorder = CurveRecorder.for_run(config)
    tps = config.tokens_per_step
    start = time.perf_counter()
    for step in range(1, calls + 1):
        recorder.watch(3.0, tokens=step * tps)
    return (time.perf_counter() - start) / calls * 1e9


def write_seconds(config: TrainConfig, budgets: list[float], handed: list[list[dict]]) -> tuple[float, int]:
    """Seconds to write the handed-on batches as a trial does (merge into the lineage's file per evaluation),
    and the points stored."""
    trunk = tuple(trunk_tokens(config, budgets))
    job = LineageJob(
        "bench",
        config,
        tuple(budgets),
        tuple(f"r{t:g}" for t in budgets),
        trunk,
        tuple(f"t{t}" for t in trunk),
    )
    with tempfile.TemporaryDirectory() as root:
        store = ResultStore(root)
        save = curve_saver(job, lambda rows: store.write_curve(rows, sweep_id="bench", name=job.lineage_id))
        start = time.perf_counter()
        for points in handed:
            save(points)
        seconds = time.perf_counter() - start
        return seconds, len(store.read_curves(sweep_id="bench").table)


def parse_tokens(text: str) -> float:
    return float(text[:-1]) * SUFFIX[text[-1]] if text[-1] in SUFFIX else float(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budgets", default="125K,250K,500K", help="the lineage's budgets (tokens)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    budgets = sorted(parse_tokens(t) for t in args.budgets.split(","))
    config, corpus = main_job_config(max(budgets)), load_corpus(DataConfig(eval_tokens=16384))
    one_lineage(main_job_config(budgets[0]), budgets[:1], corpus, curves=True)  # warm-up
    runs: dict[str, list[dict]] = {"on": [], "off": []}
    for i in range(args.rounds):
        for arm in ("on", "off") if i % 2 == 0 else ("off", "on"):
            runs[arm].append(one_lineage(config, budgets, corpus, curves=arm == "on"))
        print(
            f"round {i + 1}: "
            + ", ".join(
                f"curves {a} {runs[a][-1]['wall_s']:.2f} s wall, {runs[a][-1]['cpu_s']:.2f} s CPU"
                for a in runs
            ),
            flush=True,
        )
    for key in ("wall_s", "cpu_s"):
        med = {arm: statistics.median(r[key] for r in rs) for arm, rs in runs.items()}
        paired = statistics.median(a[key] / b[key] for a, b in zip(runs["on"], runs["off"]))
        print(
            f"lineage {key}: curves on median {med['on']:.3f}, off {med['off']:.3f}; "
            f"ratio on/off {med['on'] / med['off']:.4f}; median of the rounds' ratios {paired:.4f}"
        )
    handed = runs["on"][-1]["handed"]
    ns = watch_ns(config)
    step_s = statistics.median(r["cpu_s"] for r in runs["off"]) / (
        planned_tokens(config, budgets) // config.tokens_per_step
    )
    print(
        f"recorder: {ns:.0f} ns per watched step = {ns * 1e-9 / step_s * 100:.3f}% of a step "
        f"({step_s * 1e3:.2f} ms CPU per step with curves off)"
    )
    seconds, points = write_seconds(config, budgets, handed)
    wall = statistics.median(r["wall_s"] for r in runs["on"])
    print(
        f"curve writes: {len(handed)} writes, {points} points stored, {seconds:.3f} s per lineage "
        f"= {seconds / wall * 100:.2f}% of its median wall time with curves on"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
