"""One run on one device: tokens/s, peak memory, micro-batch, MFU and first-step time per paper preset.

Rows: paper-12m, paper-36m and paper-121m at 16 x 4096 and at the largest batch of the paper's Table 2
grid (sweeps/specs/paper-wsd.yaml), each as the Trainer runs it by default (bf16 autocast, the fused head,
`micro_batch_size` auto on CUDA); then one MoE shape under each MoE backend (torch, scattermoe).
`mfu` counts 6N FLOPs per token, `mfu_attention` adds attention (proxy_models/perf.py), both over the peak
of the precision the run uses. Peak memory is torch's allocator high-water on CUDA; on CPU the process's
RSS high-water up to that row (it never falls, so later rows read at least the earlier ones). Each row starts
without the compiled graphs, CUDA graphs and cached memory of the rows before it (`fresh_start`), as a trial
process of its own would.

A head table: paper-12m at 16 x 1024 and 16 x 4096 with each output head path (proxy_models/head.py) and chunk
size: liger-kernel's fused kernel with its own chunking, with 256 MiB and with 1 GiB chunks of logits; the
pure-torch chunked path with 64 MiB (the CPU default) and 1 GiB chunks: tokens/s and peak memory of the step.

Two more tables (issue "GPU, many runs"):
- packed: K = 1, 2, 4, 8 variants of paper-12m (16 x 1024 and 16 x 4096) in one PackedTrainer, tokens x
  variants / s against one solo Trainer of the same shape (`vs solo`; both compiled on CUDA, as trials run
  there), and peak memory; measured in rounds
  (solo, then each K) and reported as medians, so a busy machine slows every column alike;
- sweep: 16 lineages of paper-12m (--sweep-seeds S: 16 / S lrs x S seeds, by default 4 x 4; batch 16 x 1024,
  budgets --sweep-budgets) submitted through a local Ray on this machine's GPU with `pack: auto` and
  `gpus_per_trial: auto` (lineages of every lr and seed pack as the estimate fits): rows stored of planned,
  trials failed, rows whose step ran out of memory (halved or split), the tokens trained over the sweep's wall
  time against one solo run's tokens/s, and the share of wall time outside training (as `submit` prints it).

And a compile table: one shape (paper-12m at 16 x 4096; --quick a tiny one on the CPU) trained in fresh
processes (benchmarks/first_step.py): compiled with an empty compile cache (cold), then --repeats rounds of
eager and of compiled in a new process with the cache the first left (warm, what a sweep's later trials on
a node pay): first-step seconds and, of them, dynamo's tracing and backend seconds (compiling, or loading
from the cache), steady tokens/s (medians), inductor's cache hits and misses.

Run on a GPU:  python benchmarks/gpu.py --out DIR [--compile auto|true|false] \
               [--only one head packed sweep compile]
               (one H100, 2026-11-27: the one-run table 152 s, the packed table 57 s, compile 81 s, the head
               table about 100 s; the sweep with budgets 3M 6M 12M, 207M tokens, 299 s with its solo run; by
               default its budgets are 1M 2M 4M, 69M tokens)
Run on a CPU:  python benchmarks/gpu.py --quick --out DIR      (tiny shapes, a few minutes; checks it works)
CPU compile:   python benchmarks/gpu.py --only compile --device cpu --compile-preset cpu-s \
               --compile-shape 16x256 --steps 10 --repeats 3 --out DIR
CPU packing:   python benchmarks/gpu.py --only packed --device cpu --packed-preset cpu-s \
               --packed-shapes 16x256 --repeats 3 --out DIR
The tables are printed and written to DIR/gpu.md, the rows to DIR/gpu.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

import torch

from powersweep.proxy_models import memory
from powersweep.proxy_models.data import DataConfig, load_corpus
from powersweep.proxy_models.head import liger_loss
from powersweep.proxy_models.memory import GIB
from powersweep.proxy_models.moe import scattermoe_ops
from powersweep.proxy_models.packed import PackedTrainer
from powersweep.proxy_models.perf import (
    attention_flops_per_token,
    compute_dtype,
    device_name,
    peak_flops,
    resolve_device,
    utilisation,
)
from powersweep.proxy_models.perf import mfu as model_flops_utilisation
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.train_config import COMPILE_MODES, COMPILE_SCOPES
from powersweep.proxy_models.trainer import TrainConfig, Trainer

PAPER_BATCHES = (16, 512)  # the smallest and largest batch_size of sweeps/specs/paper-wsd.yaml
QUICK = {"n_layers": 1, "seq_len": 32, "vocab_size": 1024}  # --quick: every preset shrunk to CPU size
MIN_TIMED_S = 2.0  # on a GPU, timed steps last at least this long
MOE_SHAPE = {"n_layers": 4}  # paper-1b-moe's width, experts and top-k, at 4 layers: the backends' comparison


@dataclass(frozen=True)
class Case:
    """One row: a preset at a batch size, with overrides and an MoE backend."""

    preset: str
    batch_size: int
    overrides: dict = field(default_factory=dict)
    moe_backend: str = "auto"
    label: str = ""
    head: str = "auto"


def cases(quick: bool) -> list[Case]:
    shrink = QUICK if quick else {}
    batches = (2, 4) if quick else PAPER_BATCHES
    rows = [Case(p, b, shrink) for p in ("paper-12m", "paper-36m", "paper-121m") for b in batches]
    moe, moe_batch = ("cpu-moe", 2) if quick else ("paper-1b-moe", 4)
    moe_overrides = {"n_layers": 1, "seq_len": 32} if quick else MOE_SHAPE
    rows += [
        Case(moe, moe_batch, moe_overrides, backend, f"moe {backend}") for backend in ("torch", "scattermoe")
    ]
    return rows


def measure(
    case: Case, *, corpus, device: str, steps: int, compile: str | bool, compiling: dict | None = None
) -> dict:
    """The first step timed alone (it holds any compile), then `timed_steps`."""
    seq_len = case.overrides.get("seq_len", 4096)
    config = TrainConfig(
        model=case.preset,
        model_overrides=case.overrides,
        batch_size=case.batch_size,
        tokens=case.batch_size * seq_len,
        device=device,
        compile=compile,
        **(compiling or {}),
        moe_backend=case.moe_backend,
        head=case.head,
        schedule=ScheduleConfig(name="constant", lr=1e-3),
        log_every_steps=10**6,
    )
    fresh_start(resolve_device(device))
    trainer = Trainer(config, corpus=corpus)
    start = time.perf_counter()
    trainer.train_to(1, total_tokens=None)  # train_to reads the losses at its end: the device is idle then
    first_step_s = time.perf_counter() - start
    tokens_per_s = timed_steps(trainer, steps) * config.tokens_per_step
    proxy, n_params = config.proxy, config.proxy.num_params(active=True)
    peak = peak_flops(trainer.device, compute_dtype(trainer.device, config.dtype))
    attention = attention_flops_per_token(proxy.n_layers, proxy.n_heads, proxy.d_head, proxy.seq_len)
    return {
        "preset": case.label or case.preset,
        "batch_size": case.batch_size,
        "seq_len": proxy.seq_len,
        "tokens_per_s": tokens_per_s,
        "peak_gib": peak_bytes(trainer.device) / GIB,
        "micro_batch_size": trainer.micro_batch_size,
        "compiled": trainer.compiled,
        "compile_mode": trainer.compile_mode,
        "checkpointing": trainer.model.activation_checkpointing,
        "mfu": model_flops_utilisation(n_params, tokens_per_s, peak),
        "mfu_attention": utilisation(6 * n_params + attention, tokens_per_s, peak),
        "first_step_s": first_step_s,
        "peak_tflops": peak / 1e12,
    }


def timed_steps(trainer, steps: int) -> float:
    """Steps per second after one untimed warm-up step (a compiled model may compile again at its second
    call): at least `steps` steps and, on a GPU, at least MIN_TIMED_S seconds, so short steps are not timed by
    the host's noise. Every loss is read before the clock stops."""
    trainer.train_to(trainer.step + 1, total_tokens=None)
    start, first = time.perf_counter(), trainer.step
    trainer.train_to(first + steps, total_tokens=None)
    seconds = time.perf_counter() - start
    if trainer.device.type == "cuda" and seconds < MIN_TIMED_S:
        more = math.ceil((MIN_TIMED_S - seconds) / (seconds / steps))
        trainer.train_to(trainer.step + more, total_tokens=None)
        seconds = time.perf_counter() - start
    return (trainer.step - first) / seconds


def fresh_start(device: torch.device) -> None:
    """Start a row as a process of its own would: no compiled graphs or CUDA graphs of the rows before it
    (their memory pools freed, their recompiles not counted against the limit), nothing left in torch's cache,
    and `peak_bytes` afresh (CUDA; a process's peak memory on CPU cannot be reset)."""
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        from torch._inductor.cudagraph_trees import reset_cudagraph_trees

        reset_cudagraph_trees()
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int:
    """The most memory tensors held since `fresh_start` on CUDA; on CPU the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def run_case(case: Case, **kwargs) -> dict:
    """`measure`, or a row saying why the case did not run (a missing backend, out of memory)."""
    skipped = {"preset": case.label or case.preset, "batch_size": case.batch_size}
    if case.moe_backend == "scattermoe" and (kwargs["device"] != "cuda" or scattermoe_ops() is None):
        return {**skipped, "skipped": "scattermoe needs CUDA and its package (docs/how-to/gpu.md)"}
    try:
        return measure(case, **kwargs)
    except Exception as error:  # a row of the table, not the end of the benchmark
        return {**skipped, "skipped": why_not(error)}


def why_not(error: Exception) -> str:
    """A table cell for a row that did not run;
    the traceback goes to stderr for the failures that are bugs."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return f"out of memory: {str(error).splitlines()[0]}"
    traceback.print_exception(error, file=sys.stderr)
    return f"failed: {type(error).__name__}: {(str(error).splitlines() or [''])[0][:160]}"


def format_table(rows: list[dict], *, device: str, compile: str | bool, title: str = "one run") -> str:
    """The one-run table; `compiled` says how each row ran: eager, or torch.compile's mode."""
    lines = [
        f"{title}, device: {device}; compile: {compile}",
        "| preset | batch x seq | tokens/s | peak GiB | micro-batch | mfu | mfu_attention | first step s "
        "| compiled |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['preset']} | {r['batch_size']} | skipped: {r['skipped']} | | | | | | |")
            continue
        micro = f"{r['micro_batch_size']}{' + ckpt' if r['checkpointing'] else ''}"
        lines.append(
            f"| {r['preset']} | {r['batch_size']} x {r['seq_len']} | {r['tokens_per_s']:,.0f} | "
            f"{r['peak_gib']:.2f} | {micro} | {r['mfu']:.3f} | {r['mfu_attention']:.3f} | "
            f"{r['first_step_s']:.1f} | {r['compile_mode'] if r['compiled'] else 'eager'} |"
        )
    return "\n".join(lines)


# (head path, chunk bytes) of the head table; fused at 1 byte is liger-kernel's own chunking
# (chunk_mem_const 1)
HEAD_ROWS = (("fused", 2**30), ("fused", 1), ("chunked", 2**30), ("fused", 2**28), ("chunked", 64 * 2**20))


@contextlib.contextmanager
def chunk_bytes(head: str, n_bytes: int):
    """The head path's chunk size (proxy_models/memory.py) set to `n_bytes` for the rows inside."""
    name = "FUSED_CHUNK_BYTES" if head == "fused" else "CHUNK_BYTES"
    before = getattr(memory, name)
    setattr(memory, name, n_bytes)
    try:
        yield
    finally:
        setattr(memory, name, before)


def head_table(preset: str, shapes: list[str], *, quick: bool, **kwargs) -> list[dict]:
    """One row per head path and chunk size at each shape: tokens/s and peak memory of the whole step."""
    rows = []
    for shape in shapes:
        batch, seq = (int(v) for v in shape.split("x"))
        for head, n_bytes in HEAD_ROWS:
            label = f"{head}, {'liger default' if n_bytes == 1 else f'{n_bytes / 2**20:,.0f} MiB'}"
            case = Case(preset, batch, {**(QUICK if quick else {}), "seq_len": seq}, label=label, head=head)
            if head == "fused" and (kwargs["device"] != "cuda" or liger_loss() is None):
                rows.append(
                    {"preset": label, "batch_size": batch, "skipped": "fused needs CUDA and liger-kernel"}
                )
            else:
                with chunk_bytes(head, n_bytes):
                    rows.append(run_case(case, **kwargs))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def packed_cases(
    preset: str, shapes: list[str], packs: list[int], quick: bool
) -> list[tuple[str, int, dict, int]]:
    """(preset, batch, overrides, K) of the packed table; K 0 stands for the solo Trainer."""
    rows = []
    for shape in shapes:
        batch, seq = (int(v) for v in shape.split("x"))
        overrides = {**(QUICK if quick else {}), "seq_len": seq}
        rows += [(preset, batch, overrides, k) for k in (0, *packs)]
    return rows


def measure_packed(
    preset: str,
    batch_size: int,
    overrides: dict,
    k: int,
    *,
    corpus,
    device: str,
    steps: int,
    compiling: dict | None = None,
) -> dict:
    """tokens x variants / s of K packed variants (lrs 1e-3 .. K e-3), or of one solo Trainer (k 0)."""
    seq_len = overrides["seq_len"]
    config = TrainConfig(
        model=preset,
        model_overrides=overrides,
        batch_size=batch_size,
        device=device,
        tokens=batch_size * seq_len,
        **(compiling or {}),
        schedule=ScheduleConfig(name="constant", lr=1e-3),
        log_every_steps=10**6,
    )
    fresh_start(resolve_device(device))
    if k == 0:
        trainer = Trainer(config, corpus=corpus)
    else:
        trainer = PackedTrainer(
            config, [ScheduleConfig(name="constant", lr=1e-3 * (i + 1)) for i in range(k)], corpus=corpus
        )
    trainer.train_to(1, total_tokens=None)
    steps_per_s = timed_steps(trainer, steps)
    return {
        "preset": preset,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "pack": k or "solo",
        "tokens_variants_per_s": max(k, 1) * steps_per_s * config.tokens_per_step,
        "peak_gib": peak_bytes(trainer.device) / GIB,
        "micro_batch_size": trainer.micro_batch_size,
    }


def packed_table(cases: list, *, repeats: int, **kwargs) -> list[dict]:
    """Every case once per round, `repeats` rounds; per case the median, and its ratio to the solo row."""
    rounds: dict[int, list[dict]] = {}
    for _ in range(repeats):
        for i, case in enumerate(cases):
            try:
                rounds.setdefault(i, []).append(measure_packed(*case, **kwargs))
            except Exception as error:
                rounds.setdefault(i, []).append(
                    {
                        "preset": case[0],
                        "batch_size": case[1],
                        "pack": case[3],
                        "seq_len": case[2]["seq_len"],
                        "skipped": why_not(error),
                    }
                )
            print(json.dumps(rounds[i][-1]), file=sys.stderr, flush=True)
    rows, solo = [], None
    for _i, measured in rounds.items():
        ok = [r for r in measured if "skipped" not in r]
        if not ok:
            rows.append(measured[0])
            continue
        row = {
            **ok[0],
            "tokens_variants_per_s": statistics.median(r["tokens_variants_per_s"] for r in ok),
            # CUDA resets the peak per measurement; CPU's RSS high-water never falls: its first round counts
            "peak_gib": min(r["peak_gib"] for r in ok),
            "repeats": len(ok),
        }
        solo = row["tokens_variants_per_s"] if row["pack"] == "solo" else solo
        rows.append({**row, "vs_solo": row["tokens_variants_per_s"] / solo if solo else math.nan})
    return rows


def format_packed(rows: list[dict], *, device: str) -> str:
    lines = [
        f"packed variants, device: {device} (medians over rounds; vs solo: over one solo run of the shape)",
        "| preset | batch x seq | K | tokens x variants / s | vs solo | peak GiB | micro-batch |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        shape = f"{r['batch_size']} x {r['seq_len']}"
        if "skipped" in r:
            lines.append(f"| {r['preset']} | {shape} | {r['pack']} | skipped: {r['skipped']} | | | |")
            continue
        lines.append(
            f"| {r['preset']} | {shape} | {r['pack']} | {r['tokens_variants_per_s']:,.0f} | "
            f"{r['vs_solo']:.2f}x | {r['peak_gib']:.2f} | {r['micro_batch_size']} |"
        )
    return "\n".join(lines)


def sweep_spec(*, quick: bool, budgets: list[str], seeds: int = 4) -> dict:
    """16 lineages of paper-12m on the GPU (16 / seeds lrs, a factor 2^(1/3) apart from 5e-4, x seeds), packed
    and shared as the estimate allows; --quick: 4 lineages of cpu-xxs on the CPU (2 lrs x 2 seeds), one
    pack."""
    if quick:
        return {
            "name": "gpu-sweep",
            "search": {
                "models": ["cpu-xxs"],
                "lr": [1e-3, 4e-3],
                "batch_size": [4],
                "tokens": ["8K", "16K"],
                "seeds": [0, 1],
            },
            "train": {"seq_len": 64, "data": {"eval_tokens": 2048}},
            "run": {"pack": 4, "cpus_per_trial": 1, "checkpoint_every_steps": 0},
        }
    lrs = [5e-4 * 2 ** (i / 3) for i in range(16 // seeds)]
    return {
        "name": "gpu-sweep",
        "search": {
            "models": ["paper-12m"],
            "lr": lrs,
            "batch_size": [16],
            "tokens": budgets,
            "seeds": list(range(seeds)),
        },
        "train": {"seq_len": 1024, "warmup_tokens": "256K"},
        "run": {"pack": "auto", "gpus_per_trial": "auto", "cpus_per_trial": 1, "checkpoint_every_steps": 0},
    }


def gpu_sweep(raw: dict, *, out: str, solo_tokens_per_s: float, compiling: dict | None = None) -> dict:
    """Submit a `sweep_spec` (its run settings with `compiling`) to a fresh store under `out` through a local
    Ray; what it stored and where the wall time went."""
    from powersweep.sweeps.plan import plan
    from powersweep.sweeps.spec import spec_from_dict
    from powersweep.sweeps.store import ResultStore
    from powersweep.sweeps.sweep import submit

    os.makedirs(out, exist_ok=True)
    # fresh: a store of an earlier run would resume
    storage = tempfile.mkdtemp(prefix="gpu-sweep-store-", dir=out)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the tables before held memory in this process: leave the GPU to the trials
    spec = spec_from_dict({**raw, "run": {**raw["run"], **(compiling or {})}})
    planned = plan(spec).tokens_planned
    print(
        f"sweep: {planned:,} tokens planned: {planned / solo_tokens_per_s / 60:.1f} min at one solo run's "
        f"tokens/s, {planned / solo_tokens_per_s / 180:.1f} min at 3x",
        file=sys.stderr,
        flush=True,
    )
    result = submit(spec, storage=storage)
    table = ResultStore(storage).read(sweep_id="gpu-sweep").table
    records = [json.loads(e) for e in table["execution"].dropna()]
    report = result.execution.summary()
    tokens_per_s = result.plan.tokens_planned / report["wall_s"]
    return {
        "lineages": result.plan.lineages,
        "trials": len(result.plan.trials),
        "rows_stored": len(table),
        "rows_planned": len(result.plan.row_ids),
        "failed_trials": result.failed_trials,
        "rows_out_of_memory": sum(
            1 for r in records if r.get("out_of_memory_shrinks") or r.get("pack_split")
        ),
        "rows_compiled": sum(1 for r in records if r.get("compiled")),
        "compile_errors": sorted({r["compile_error"] for r in records if r.get("compile_error")}),
        "tokens_per_s": tokens_per_s,
        "solo_tokens_per_s": solo_tokens_per_s,
        "vs_solo": tokens_per_s / solo_tokens_per_s,
        "wall_s": report["wall_s"],
        "outside_training": report["outside_training"],
        "breakdown": result.execution.format(),
    }


def format_sweep(r: dict) -> str:
    return "\n".join(
        [
            "sweep through local Ray "
            "(tokens trained / wall time, vs one solo run's tokens/s at the same shape)",
            "| lineages | trials | rows stored / planned | failed trials | rows out of memory "
            "| rows compiled | tokens/s | vs solo | wall s | outside training |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {r['lineages']} | {r['trials']} | {r['rows_stored']} / {r['rows_planned']} | "
            f"{r['failed_trials']} | {r['rows_out_of_memory']} | {r['rows_compiled']} | "
            f"{r['tokens_per_s']:,.0f} | {r['vs_solo']:.2f}x | {r['wall_s']:.0f} | "
            f"{r['outside_training']:.1%} |",
            r["breakdown"],
            *(f"compiling failed, rows trained eager: {e}" for e in r["compile_errors"]),
        ]
    )


COMPILE_RUNS = ("eager", "compiled, cold cache", "compiled, warm cache")  # rows of the compile table


def compile_runs(
    preset: str,
    shape: str,
    *,
    quick: bool,
    device: str,
    steps: int,
    repeats: int,
    compiling: dict | None = None,
) -> list[dict]:
    """The shape in fresh processes: compiled once into an empty cache (cold), then `repeats` rounds of eager
    and compiled with the cache the first left (warm). One row per kind, medians over its processes."""
    batch, seq = (int(v) for v in shape.split("x"))
    config = {
        "model": preset,
        "batch_size": batch,
        "model_overrides": {**(QUICK if quick else {}), "seq_len": seq},
        **(compiling or {}),
    }
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the tables before held memory in this process:
        # leave the GPU to the children
    runs: dict[str, list[dict]] = {label: [] for label in COMPILE_RUNS}
    with tempfile.TemporaryDirectory(prefix="powersweep-compile-bench-") as cache:  # empty: the first is cold
        for label in (COMPILE_RUNS[1], *COMPILE_RUNS[::2] * repeats):
            start = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    os.path.join(os.path.dirname(__file__), "first_step.py"),
                    json.dumps({**config, "compile": label != "eager"}),
                    "--steps",
                    str(steps),
                    "--device",
                    device,
                ],
                env={**env, "POWERSWEEP_COMPILE_CACHE": cache},
                capture_output=True,
                text=True,
            )
            if done.returncode:
                raise RuntimeError(f"{label}: first_step.py failed: {done.stderr[-2000:]}")
            runs[label].append(
                {"process_s": time.perf_counter() - start, **json.loads(done.stdout.splitlines()[-1])}
            )
            print(json.dumps({"run": label, **runs[label][-1]}), file=sys.stderr, flush=True)
    timed = ("first_step_s", "process_s", "process_to_first_step_s", "tokens_per_s", "tracing_s", "backend_s")
    return [
        {
            "run": label,
            "preset": preset,
            "batch_size": batch,
            "seq_len": seq,
            "processes": len(measured),
            **measured[0],
            **{key: statistics.median(r[key] for r in measured) for key in timed},
        }
        for label, measured in runs.items()
    ]


def format_compile(rows: list[dict], *, device: str) -> str:
    eager = rows[0]
    lines = [
        f"compile, device: {device} (fresh processes, medians; the compiled code cached on disk by "
        "inductor's FX graph and AOT autograd caches)",
        "| run | batch x seq | processes | first step s | of it: tracing s, backend s | process s | tokens/s "
        "| vs eager | fx graph hit / miss | autograd hit / miss |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['batch_size']} x {r['seq_len']} | {r['processes']} | "
            f"{r['first_step_s']:.2f} | {r['tracing_s']:.2f}, {r['backend_s']:.2f} | "
            f"{r['process_s']:.1f} | {r['tokens_per_s']:,.0f} | "
            f"{r['tokens_per_s'] / eager['tokens_per_s']:.2f}x | {r['fxgraph_cache_hit']} / "
            f"{r['fxgraph_cache_miss']} | {r['autograd_cache_hit']} / {r['autograd_cache_miss']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="directory for gpu.md and gpu.json (e.g. $OUT)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes on CPU: checks the benchmark runs")
    parser.add_argument("--steps", type=int, help="timed steps per row (default 3, --quick 1)")
    parser.add_argument(
        "--compile",
        default="auto",
        choices=("auto", "true", "false"),
        help="torch.compile the blocks in the one-run table (TrainConfig.compile; auto: on CUDA)",
    )
    parser.add_argument(
        "--compile-mode",
        default="auto",
        choices=COMPILE_MODES,
        help="torch.compile's mode (TrainConfig.compile_mode), every table",
    )
    parser.add_argument(
        "--compile-scope",
        default="auto",
        choices=COMPILE_SCOPES,
        help="each block or the whole trunk as one graph (TrainConfig.compile_scope), every table",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (--quick: cpu)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("one", "head", "packed", "sweep", "compile"),
        default=["one", "head", "packed", "sweep", "compile"],
        help="tables to run (default all)",
    )
    parser.add_argument("--packed-preset", default="paper-12m", help="model of the head and packed tables")
    parser.add_argument(
        "--packed-shapes",
        nargs="+",
        help="batch x seq of the head and packed tables (default 16x1024 16x4096; --quick 4x32)",
    )
    parser.add_argument(
        "--pack", type=int, nargs="+", default=[1, 2, 4, 8], help="K values of the packed table"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds of the packed and compile tables (medians)"
    )
    parser.add_argument(
        "--sweep-budgets",
        nargs="+",
        default=["1M", "2M", "4M"],
        help="token budgets of the sweep's lineages (default: 69M tokens in all, a few minutes on one "
        "H100; budgets to 64M plan 1.1G tokens, over ten minutes at any rate one H100 reaches)",
    )
    parser.add_argument(
        "--sweep-seeds",
        type=int,
        default=4,
        choices=(1, 2, 4),
        help="seeds of the sweep's 16 lineages (16 / seeds lrs each)",
    )
    parser.add_argument("--compile-preset", default="paper-12m", help="model of the compile table")
    parser.add_argument(
        "--compile-shape", help="batch x seq of the compile table (default 16x4096; --quick 4x32)"
    )
    args = parser.parse_args(argv)
    compile = {"true": True, "false": False}.get(args.compile, args.compile)
    compiling = {"compile_mode": args.compile_mode, "compile_scope": args.compile_scope}
    device = "cpu" if args.quick else resolve_device(args.device).type
    corpus, steps = load_corpus(DataConfig()), args.steps or (1 if args.quick else 3)
    name = device_name(torch.device(device))
    tables, rows = [], {"device": name}
    if "one" in args.only:
        rows["rows"] = []
        for case in cases(args.quick):
            rows["rows"].append(
                run_case(
                    case, corpus=corpus, device=device, steps=steps, compile=compile, compiling=compiling
                )
            )
            print(json.dumps(rows["rows"][-1]), file=sys.stderr, flush=True)
        tables.append(format_table(rows["rows"], device=name, compile=compile))
        write(args.out, tables, rows)
    if "head" in args.only:
        shapes = args.packed_shapes or (["4x32"] if args.quick else ["16x4096", "16x1024"])
        rows["head"] = head_table(
            args.packed_preset,
            shapes,
            quick=args.quick,
            corpus=corpus,
            device=device,
            steps=steps,
            compile=compile,
            compiling=compiling,
        )
        tables.append(format_table(rows["head"], device=name, compile=compile, title="output head paths"))
        write(args.out, tables, rows)
    if "packed" in args.only:
        shapes = args.packed_shapes or (["4x32"] if args.quick else ["16x1024", "16x4096"])
        rows["packed"] = packed_table(
            packed_cases(args.packed_preset, shapes, args.pack, args.quick),
            repeats=args.repeats,
            corpus=corpus,
            device=device,
            steps=steps,
            compiling=compiling,
        )
        tables.append(format_packed(rows["packed"], device=name))
        write(args.out, tables, rows)
    if "sweep" in args.only:
        spec = sweep_spec(quick=args.quick, budgets=args.sweep_budgets, seeds=args.sweep_seeds)
        search, train = spec["search"], spec["train"]
        solo = measure_packed(
            search["models"][0],
            search["batch_size"][0],
            {"seq_len": train["seq_len"]},
            0,
            corpus=corpus,
            device=device,
            steps=steps,
            compiling=compiling,
        )  # the sweep's shape, one solo run
        rows["sweep"] = gpu_sweep(
            spec, out=args.out, compiling=compiling, solo_tokens_per_s=solo["tokens_variants_per_s"]
        )
        tables.append(format_sweep(rows["sweep"]))
        write(args.out, tables, rows)
    if "compile" in args.only:
        shape = args.compile_shape or ("4x32" if args.quick else "16x4096")
        rows["compile"] = compile_runs(
            args.compile_preset,
            shape,
            quick=args.quick,
            device=device,
            steps=steps,
            repeats=args.repeats,
            compiling=compiling,
        )
        tables.append(format_compile(rows["compile"], device=name))
        write(args.out, tables, rows)
    print("\n\n".join(tables))
    return 0


def write(out: str, tables: list[str], rows: dict) -> None:
    """gpu.md and gpu.json as they stand:
    called after each table, so a run cut short keeps the tables it made."""
    os.makedirs(out, exist_ok=True)
    for name, text in (("gpu.md", "\n\n".join(tables) + "\n"), ("gpu.json", json.dumps(rows, indent=2))):
        with open(os.path.join(out, name + ".tmp"), "w") as f:
            f.write(text)
        os.replace(os.path.join(out, name + ".tmp"), os.path.join(out, name))


if __name__ == "__main__":
    sys.exit(main())
