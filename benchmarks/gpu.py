"""One run on one device: tokens/s, peak memory, micro-batch, MFU and first-step time per paper preset.

Rows: paper-12m, paper-36m and paper-121m at 16 x 4096 and at the largest batch of the paper's Table 2
grid (sweeps/specs/paper-wsd.yaml), each as the Trainer runs it by default (bf16 autocast, the fused head,
`micro_batch_size` auto on CUDA); then one MoE shape under each MoE backend (torch, scattermoe).
`mfu` counts 6N FLOPs per token, `mfu_attention` adds attention (proxy_models/perf.py), both over the peak
of the precision the run uses. Peak memory is torch's allocator high-water on CUDA; on CPU the process's
RSS high-water up to that row (it never falls, so later rows read at least the earlier ones).

Run on a GPU:  python benchmarks/gpu.py --out DIR [--compile]   (about 5 minutes on one H100)
Run on a CPU:  python benchmarks/gpu.py --quick --out DIR      (tiny shapes, under a minute; checks it works)
The table is printed and written to DIR/gpu.md, the rows to DIR/gpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field

import torch

from proxy_models.data import DataConfig, load_corpus
from proxy_models.memory import GIB
from proxy_models.moe import scattermoe_ops
from proxy_models.perf import attention_flops_per_token, compute_dtype, device_name, peak_flops, resolve_device
from proxy_models.perf import mfu as model_flops_utilisation
from proxy_models.perf import utilisation
from proxy_models.schedules import ScheduleConfig
from proxy_models.trainer import TrainConfig, Trainer

PAPER_BATCHES = (16, 512)  # the smallest and largest batch_size of sweeps/specs/paper-wsd.yaml
QUICK = {"n_layers": 1, "seq_len": 32, "vocab_size": 1024}  # --quick: every preset shrunk to CPU size
MOE_SHAPE = {"n_layers": 4}  # paper-1b-moe's width, experts and top-k, at 4 layers: the backends' comparison


@dataclass(frozen=True)
class Case:
    """One row: a preset at a batch size, with overrides and an MoE backend."""

    preset: str
    batch_size: int
    overrides: dict = field(default_factory=dict)
    moe_backend: str = "auto"
    label: str = ""


def cases(quick: bool) -> list[Case]:
    shrink = QUICK if quick else {}
    batches = (2, 4) if quick else PAPER_BATCHES
    rows = [Case(p, b, shrink) for p in ("paper-12m", "paper-36m", "paper-121m") for b in batches]
    moe, moe_batch = ("cpu-moe", 2) if quick else ("paper-1b-moe", 4)
    moe_overrides = {"n_layers": 1, "seq_len": 32} if quick else MOE_SHAPE
    rows += [Case(moe, moe_batch, moe_overrides, backend, f"moe {backend}") for backend in ("torch", "scattermoe")]
    return rows


def measure(case: Case, *, corpus, device: str, steps: int, compile: bool) -> dict:
    """Train one step (timed alone: it holds any compile), then `steps` more, timed together."""
    seq_len = case.overrides.get("seq_len", 4096)
    config = TrainConfig(model=case.preset, model_overrides=case.overrides, batch_size=case.batch_size,
                         tokens=case.batch_size * seq_len * (steps + 1), device=device, compile=compile,
                         moe_backend=case.moe_backend, schedule=ScheduleConfig(name="constant", lr=1e-3),
                         log_every_steps=10**6)
    trainer = Trainer(config, corpus=corpus)
    _reset_peak(trainer.device)
    start = time.perf_counter()
    trainer.train_to(1, total_tokens=None)  # train_to reads the losses at its end: the device is idle then
    first_step_s = time.perf_counter() - start
    start = time.perf_counter()
    trainer.train_to(1 + steps, total_tokens=None)
    tokens_per_s = steps * config.tokens_per_step / (time.perf_counter() - start)
    proxy, n_params = config.proxy, config.proxy.num_params(active=True)
    peak = peak_flops(trainer.device, compute_dtype(trainer.device, config.dtype))
    attention = attention_flops_per_token(proxy.n_layers, proxy.n_heads, proxy.d_head, proxy.seq_len)
    return {"preset": case.label or case.preset, "batch_size": case.batch_size, "seq_len": proxy.seq_len,
            "tokens_per_s": tokens_per_s, "peak_gib": _peak_bytes(trainer.device) / GIB,
            "micro_batch_size": trainer.micro_batch_size,
            "checkpointing": trainer.model.activation_checkpointing,
            "mfu": model_flops_utilisation(n_params, tokens_per_s, peak),
            "mfu_attention": utilisation(6 * n_params + attention, tokens_per_s, peak),
            "first_step_s": first_step_s, "peak_tflops": peak / 1e12}


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def run_case(case: Case, **kwargs) -> dict:
    """`measure`, or a row saying why the case did not run (a missing backend, out of memory)."""
    skipped = {"preset": case.label or case.preset, "batch_size": case.batch_size}
    if case.moe_backend == "scattermoe" and (kwargs["device"] != "cuda" or scattermoe_ops() is None):
        return {**skipped, "skipped": "scattermoe needs CUDA and its package (README, GPU)"}
    try:
        return measure(case, **kwargs)
    except torch.cuda.OutOfMemoryError as error:  # a row of the table, not the end of the benchmark
        return {**skipped, "skipped": f"out of memory: {str(error).splitlines()[0]}"}


def format_table(rows: list[dict], *, device: str, compile: bool) -> str:
    lines = [f"device: {device}; compile: {compile}",
             "| preset | batch x seq | tokens/s | peak GiB | micro-batch | mfu | mfu_attention | first step s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['preset']} | {r['batch_size']} | skipped: {r['skipped']} | | | | | |")
            continue
        micro = f"{r['micro_batch_size']}{' + ckpt' if r['checkpointing'] else ''}"
        lines.append(f"| {r['preset']} | {r['batch_size']} x {r['seq_len']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['peak_gib']:.2f} | {micro} | {r['mfu']:.3f} | {r['mfu_attention']:.3f} | "
                     f"{r['first_step_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for gpu.md and gpu.json (e.g. $OUT)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes on CPU: checks the benchmark runs")
    parser.add_argument("--steps", type=int, help="timed steps per row (default 3, --quick 1)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the blocks (TrainConfig.compile)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (--quick: cpu)")
    args = parser.parse_args(argv)
    device = "cpu" if args.quick else resolve_device(args.device).type
    corpus = load_corpus(DataConfig())
    rows = []
    for case in cases(args.quick):
        rows.append(run_case(case, corpus=corpus, device=device, steps=args.steps or (1 if args.quick else 3),
                             compile=args.compile))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    table = format_table(rows, device=device_name(torch.device(device)), compile=args.compile)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out, "gpu.json"), "w") as f:
        json.dump({"device": device_name(torch.device(device)), "rows": rows}, f, indent=2)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
