"""Where a training step's time goes: torch.profiler over a few steps of one preset at one shape.

Prints the wall time per step and tokens x variants / s of `--steps` steps (on a GPU at least 2 s of them)
without the profiler (its tracing slows a step that waits on the host), and the peak memory of the steps up to
then (GPU: tensors, CUDA graphs' pools included; CPU: the process); then, for as many profiled steps, the
wall time per step, the device's busy time per step (the sum of its kernels' time; on CPU the ops' own time),
on a GPU the kernel and CUDA-graph launches per step, and the 20 ops with the most device time and the 20
with the most host time. A step whose device time is far below its wall time waits on the host (kernel
launches, Python, synchronisations): the host table says where.

    python benchmarks/step_profile.py --preset paper-12m --shape 16x1024 [--pack 8] [--out DIR]
    python benchmarks/step_profile.py --shape 16x512 --pack 8 --vocab-size 256   (the GPU main job's step)
    python benchmarks/step_profile.py --preset cpu-xxs --shape 4x64 --device cpu     (checks it works here)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from gpu import (
    fresh_start,
    peak_bytes,
    timed_steps,
)  # benchmarks/gpu.py: this script's directory is on the path
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from powersweep.proxy_models.data import DataConfig, load_corpus
from powersweep.proxy_models.memory import GIB
from powersweep.proxy_models.packed import PackedTrainer
from powersweep.proxy_models.perf import device_name, resolve_device
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.trainer import TrainConfig, Trainer

ROWS = 20


def trainer_for(
    preset: str,
    shape: str,
    *,
    pack: int,
    device: str,
    compile: str | bool,
    head: str,
    compiling: dict | None = None,
    vocab_size: int | None = None,
):
    batch, seq = (int(v) for v in shape.split("x"))
    config = TrainConfig(
        model=preset,
        model_overrides={"seq_len": seq, **({"vocab_size": vocab_size} if vocab_size else {})},
        batch_size=batch,
        tokens=batch * seq,
        device=device,
        compile=compile,
        head=head,
        log_every_steps=10**6,
        **(compiling or {}),
        schedule=ScheduleConfig(name="constant", lr=1e-3),
    )
    corpus = load_corpus(DataConfig())
    if pack:
        return PackedTrainer(
            config, [ScheduleConfig(name="constant", lr=1e-3 * (i + 1)) for i in range(pack)], corpus=corpus
        )
    return Trainer(config, corpus=corpus)


def device_seconds(event) -> float:
    """An op's own device time in seconds (the attribute's name changed across torch versions)."""
    micros = getattr(event, "self_device_time_total", None)
    return (micros if micros is not None else event.self_cuda_time_total) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="paper-12m")
    parser.add_argument("--shape", default="16x1024", help="batch x seq")
    parser.add_argument("--pack", type=int, default=0, help="K packed variants (0: one solo Trainer)")
    parser.add_argument(
        "--vocab-size",
        type=int,
        help="the output head's vocabulary (default: the preset's; the embedded corpus's bytes need 256)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=5,
        help="timed steps (on a GPU at least 2 s), then as many profiled, after 2 warm-up steps",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", default="auto", choices=("auto", "true", "false"))
    parser.add_argument("--head", default="auto", help="auto | full | chunked | fused")
    parser.add_argument(
        "--compile-mode", default="auto", help="torch.compile's mode (TrainConfig.compile_mode)"
    )
    parser.add_argument(
        "--compile-scope", default="auto", help="blocks | trunk | auto (TrainConfig.compile_scope)"
    )
    parser.add_argument(
        "--out",
        help="also write the report to "
        "DIR/step-profile-<preset>-<shape>-k<pack>-<compile mode>-<compile scope>[-head-<head>].txt",
    )
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    compile = {"true": True, "false": False}.get(args.compile, args.compile)
    fresh_start(device)
    trainer = trainer_for(
        args.preset,
        args.shape,
        pack=args.pack,
        device=device.type,
        compile=compile,
        head=args.head,
        compiling={"compile_mode": args.compile_mode, "compile_scope": args.compile_scope},
        vocab_size=args.vocab_size,
    )
    trainer.train_to(1, total_tokens=None)  # compiles (timed_steps takes one more step before its clock)
    on_device = device.type == "cuda"
    # the profiler's tracing slows a step waiting on the host
    unprofiled = 1 / timed_steps(trainer, args.steps)
    peak_gib = peak_bytes(device) / GIB
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_device else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        trainer.train_to(trainer.step + args.steps, total_tokens=None)
        wall = (time.perf_counter() - start) / args.steps
    events = prof.key_averages()
    # its kernels' and copies' own time, as the device table's total counts it (an op's device time
    if on_device:
        # is that of the kernels it launched: summing both would count each kernel twice)
        busy = sum(
            device_seconds(e)
            for e in events
            if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
        )
    else:
        busy = sum(e.self_cpu_time_total for e in events) / 1e6
    busy /= args.steps
    tokens_per_s = trainer.cfg.tokens_per_step * trainer.k / unprofiled
    # what the host asks of a GPU a step: kernel launches (cudaLaunchKernel, cuLaunchKernel...) and graph
    # replays
    launches = sum(e.count for e in events if "LaunchKernel" in e.key or "GraphLaunch" in e.key) / args.steps
    head = (
        f"{args.preset} {args.shape} pack {args.pack or 'solo'} vocab {trainer.proxy.vocab_size} on "
        f"{device_name(device)} (compiled: {trainer.compiled}, mode {trainer.compile_mode}, "
        f"scope {args.compile_scope}, "
        f"micro-batch {trainer.micro_batch_size}, head {args.head}): {unprofiled * 1e3:.1f} ms/step, "
        f"{tokens_per_s:,.0f} tokens x variants/s unprofiled, peak {peak_gib:.2f} GiB; "
        f"profiled wall {wall * 1e3:.1f} ms/step, "
        f"{'device' if on_device else 'host ops'} busy {busy * 1e3:.1f} ms/step "
        f"({busy / unprofiled:.0%} of the unprofiled step)"
        + (f", {launches:,.0f} kernel or graph launches/step" if on_device else "")
    )
    sort_device = (
        "self_device_time_total"
        if on_device and hasattr(events[0], "self_device_time_total")
        else ("self_cuda_time_total")
    )
    tables = [events.table(sort_by=sort_device, row_limit=ROWS)] if on_device else []
    tables.append(events.table(sort_by="self_cpu_time_total", row_limit=ROWS))
    report = "\n\n".join([head, *tables])
    print(report)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        head = "" if args.head == "auto" else f"-head-{args.head}"
        name = (
            f"step-profile-{args.preset}-{args.shape}-k{args.pack}-{trainer.compile_mode}-"
            f"{args.compile_scope}{head}.txt"
        )
        with open(os.path.join(args.out, name), "w") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
