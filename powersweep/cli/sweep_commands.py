"""The sweep commands: presets, train-one, demo, plan, submit, resume, status, compact. Each handler takes the
parsed arguments, calls the sweeps (or proxy_models) library, prints, and returns the exit code.

Torch, Ray and pandas are imported inside the handlers that use them, so `--help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys

from powersweep import sweeps
from powersweep.cli.cluster_commands import (
    ADDRESS_HELP,
    job_status_command,
    resume_job_command,
    submit_job_command,
)
from powersweep.cli.options import (
    add_json_option,
    address_help,
    cluster_address,
    print_json,
    token_count,
)
from powersweep.cluster.jobs import is_jobs_address
from powersweep.proxy_models.schedules import DECAY_SHAPES, SCHEDULES
from powersweep.proxy_models.shapes import PAPER_PARAMS, PRESETS
from powersweep.proxy_models.train_config import TrainConfig

SPECS_DIR = os.path.join(os.path.dirname(os.path.abspath(sweeps.__file__)), "specs")  # the shipped specs


def add_parsers(sub) -> None:
    """Register the sweep commands: presets, train-one, demo, plan, submit, resume, status, compact."""
    add_presets_parser(sub)
    add_train_one_parser(sub)
    add_demo_parser(sub)
    add_plan_parser(sub)
    add_submit_parser(sub)
    add_resume_parser(sub)
    add_status_parser(sub)
    add_compact_parser(sub)


def add_presets_parser(sub) -> None:
    p = sub.add_parser("presets", help="list model presets with parameter counts (and the paper's)")
    add_json_option(p, "each preset's shape and parameter counts")
    p.set_defaults(func=presets_command)


def presets_command(args) -> int:
    if args.json:
        print_json([preset_summary(name, cfg) for name, cfg in PRESETS.items()])
        return 0
    print(
        f"{'preset':<16}{'d_model':>8}{'layers':>7}{'params':>12}{'active*':>12}{'paper':>12}{'m_width':>8}"
    )
    for name, cfg in PRESETS.items():
        paper = PAPER_PARAMS.get(name, {})
        paper_text = "/".join(f"{v / 1e6:.0f}M" for v in paper.values()) or "-"
        active = cfg.num_params(active=True, embedding=False) if cfg.is_moe else cfg.num_params()
        print(
            f"{name:<16}{cfg.d_model:>8}{cfg.n_layers:>7}{cfg.num_params() / 1e6:>11.2f}M"
            f"{active / 1e6:>11.2f}M{paper_text:>12}{cfg.m_width:>8g}"
        )
    print("* active parameters of MoE presets exclude the embedding, as the paper's Table 4 counts them")
    return 0


def preset_summary(name: str, cfg) -> dict:
    """One preset as `presets --json` prints it: the table's columns, parameter counts in parameters."""
    return {
        "preset": name,
        "d_model": cfg.d_model,
        "n_layers": cfg.n_layers,
        "params": cfg.num_params(),
        # as the table's active* column: MoE presets without the embedding (the paper's Table 4)
        "active_params": cfg.num_params(active=True, embedding=False) if cfg.is_moe else cfg.num_params(),
        "paper_params": PAPER_PARAMS.get(name, {}),
        "m_width": cfg.m_width,
    }


def add_train_one_parser(sub) -> None:
    p = sub.add_parser("train-one", help="train one proxy run and print its result row as JSON")
    p.add_argument("--model", default="cpu-s", help="preset name (see `powersweep presets`)")
    p.add_argument("--seq-len", type=int, help="override the preset's context length, in tokens")
    p.add_argument("--schedule", default="wsd", choices=SCHEDULES)
    p.add_argument("--lr", type=float, default=1e-2, help="peak lr (constant, cosine, wsd)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    p.add_argument("--tokens", type=token_count, default=2e6, help="training tokens, e.g. 2e6 or 2M")
    p.add_argument("--warmup-tokens", type=token_count, default=0.0, help="warmup tokens, e.g. 2e5 or 200K")
    p.add_argument("--decay-fraction", type=float, default=0.1)
    p.add_argument("--decay-shape", default="linear", choices=DECAY_SHAPES)
    p.add_argument("--power-a", type=float, default=4.0)
    p.add_argument("--power-b", type=float, default=-0.51)
    p.add_argument("--lr-max", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="embedded", help="'embedded', text file/dir/glob, or a .bin token file")
    p.add_argument("--tokenizer", help="tokenizer.json (default: bytes)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--checkpoint", help="checkpoint file: resumed from if present, written periodically")
    p.add_argument("--checkpoint-every-steps", type=int, default=0)
    p.set_defaults(func=train_one_command)


def train_one_command(args) -> int:
    from powersweep.proxy_models.data import DataConfig
    from powersweep.proxy_models.schedules import ScheduleConfig
    from powersweep.proxy_models.trainer import TrainConfig, Trainer

    schedule = ScheduleConfig(
        name=args.schedule,
        lr=args.lr,
        warmup_tokens=args.warmup_tokens,
        decay_fraction=args.decay_fraction,
        decay_shape=args.decay_shape,
        power_a=args.power_a,
        power_b=args.power_b,
        lr_max=args.lr_max,
    )
    config = TrainConfig(
        model=args.model,
        model_overrides={"seq_len": args.seq_len} if args.seq_len else {},
        schedule=schedule,
        batch_size=args.batch_size,
        tokens=args.tokens,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        data=DataConfig(source=args.data, tokenizer=args.tokenizer),
    )
    trainer = Trainer(
        config, log=lambda status: print(_progress(status, config), file=sys.stderr, flush=True)
    )
    result = trainer.run(checkpoint_path=args.checkpoint, checkpoint_every_steps=args.checkpoint_every_steps)
    print(json.dumps(result.to_row(), allow_nan=True))
    return 0


def add_plan_parser(sub) -> None:
    p = sub.add_parser("plan", help="expand a sweep spec into lineages and report runs and tokens")
    p.add_argument("spec", help="sweep YAML, e.g. sweeps/specs/paper-wsd.yaml")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--gpu-memory",
        help="also show each cell's micro-batch and estimated peak memory on a GPU of this size, e.g. 80GiB",
    )
    p.add_argument(
        "--gpu",
        help="estimate the wall time on this GPU (H100, H200, ...) from the rates measured on it; "
        "default for a GPU spec: this machine's GPU",
    )
    p.set_defaults(func=plan_command)


def checked_spec(path: str):
    """The validated spec at `path`; a grid above GRID_WARNING runs gets a line on stderr with the count."""
    from powersweep.sweeps.spec import GRID_WARNING, load_spec

    spec = load_spec(path)
    if spec.planned_runs > GRID_WARNING:
        print(
            f"powersweep: warning: {path} expands to {spec.planned_runs:,} runs "
            f"(more than {GRID_WARNING:,}); check the grid before submitting it",
            file=sys.stderr,
        )
    return spec


def plan_command(args) -> int:
    import dataclasses

    from powersweep.proxy_models.memory import parse_bytes
    from powersweep.sweeps.data_check import check_data
    from powersweep.sweeps.plan import format_memory_table, format_plan, memory_table, plan
    from powersweep.sweeps.spec import SpecError
    from powersweep.sweeps.trackers import check_loggers
    from powersweep.sweeps.wall_estimate import GPU_BYTES, device_name, estimate_wall, no_estimate

    spec = checked_spec(args.spec)
    check_loggers(spec.run.loggers)  # as submit would: a logger's package missing here is one line now
    spec, _, data_notes = check_data(spec)  # likewise the corpus (a bad shard is refused here, not in trials)
    try:  # the GPU named, else the one here: its measured rates give the wall estimate of a GPU spec
        device = device_name(args.gpu) if args.gpu or spec.run.uses_gpu else None
    except ValueError as error:
        raise SpecError(str(error)) from None
    gpu_bytes = parse_bytes(args.gpu_memory) if args.gpu_memory else None
    if gpu_bytes is None and device is not None and not spec.run.gpu_memory:
        gpu_bytes = GPU_BYTES[device]
    p = plan(spec, gpu_bytes=gpu_bytes)
    p = dataclasses.replace(p, notes=p.notes + data_notes)
    summary, lines = p.summary(), [format_plan(p)]
    if device is not None:
        estimate = estimate_wall(p, device)
        summary["estimated_wall_s"] = estimate.seconds if estimate else None
        lines.append(estimate.format() if estimate else no_estimate(p, device))
    elif spec.run.uses_gpu:
        lines.append("estimated wall: no GPU here; name one with --gpu (e.g. --gpu H100)")
    if gpu_bytes is not None and args.gpu_memory:
        rows = memory_table(
            p,
            gpu_bytes=gpu_bytes,
            gpus_per_trial=0.0 if spec.run.gpus_per_trial == "auto" else spec.run.gpus_per_trial,
        )
        summary["memory"] = rows
        lines.append(format_memory_table(rows, gpu_bytes=gpu_bytes))
    print(json.dumps(summary, indent=2) if args.json else "\n".join(lines))
    return 0


def add_submit_parser(sub) -> None:
    p = sub.add_parser(
        "submit", help="run a sweep spec (only what its store lacks) on local Ray or a cluster"
    )
    p.add_argument("spec", help="sweep YAML")
    p.add_argument("--storage", help="results store URI (default: the spec's run.storage, else runs/<name>)")
    p.add_argument(
        "--address",
        help="Ray cluster: http://HEAD:8265 submits a Ray job and prints its id; "
        "ray://HEAD:10001 or HEAD:6379 runs the driver here (default: $RAY_ADDRESS when set, "
        "else start Ray in this process)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="the stored sweep of this name has other settings: move "
        "its rows, curves and spec aside (kept, named by status) and run the spec afresh",
    )
    add_json_option(p, "what ran and where the results are (or the job id)")
    p.set_defaults(func=submit_command)


def submit_command(args) -> int:
    args.address = cluster_address(args.address)
    if is_jobs_address(args.address):
        return submit_job_command(args)
    from powersweep.cluster.nodes import check_nodes
    from powersweep.sweeps.outcome import print_report
    from powersweep.sweeps.sweep import submit

    spec = checked_spec(args.spec)
    with interruptible_sweep(args, storage=args.storage or spec.storage, sweep_id=spec.name):
        result = submit(
            spec,
            storage=args.storage,
            address=args.address,
            check_nodes=check_nodes,
            replace_sweep=args.replace,
        )
    return print_report(result, as_json=args.json)


def add_resume_parser(sub) -> None:
    p = sub.add_parser("resume", help="finish a stored sweep: runs only what the store lacks")
    p.add_argument("dir", help="the sweep's storage directory")
    p.add_argument("--sweep", help="sweep name, when the storage holds several")
    p.add_argument(
        "--address",
        help=address_help("Ray cluster, as for submit (http://HEAD:8265 submits a Ray job)"),
    )
    add_json_option(p, "what ran and where the results are (or the job id)")
    p.set_defaults(func=resume_command)


def resume_command(args) -> int:
    args.address = cluster_address(args.address)
    if is_jobs_address(args.address):
        return resume_job_command(args)
    from powersweep.cluster.nodes import check_nodes
    from powersweep.sweeps.outcome import print_report
    from powersweep.sweeps.sweep import resume

    with interruptible_sweep(args, storage=args.dir, sweep_id=args.sweep):
        result = resume(args.dir, sweep_id=args.sweep, address=args.address, check_nodes=check_nodes)
    return print_report(result, as_json=args.json)


def interruptible_sweep(args, *, storage: str, sweep_id: str | None):
    """Around a sweep the command runs here: SIGINT and SIGTERM end it with one line naming the resume command
    (exit code 130, 143; `sweeps.interrupt`)."""
    from powersweep.sweeps.interrupt import interruptible, resume_hint

    hint = resume_hint(storage, sweep_id=sweep_id, address=getattr(args, "address", None))
    return interruptible(program=f"powersweep {args.command}", resume=hint)


def add_status_parser(sub) -> None:
    p = sub.add_parser(
        "status",
        help="per-state counts and per-cell progress of a stored sweep, or the state "
        "of a sweep submitted as a Ray job (JOB_ID --address, or JOB_ID with RAY_ADDRESS set)",
    )
    p.add_argument(
        "dir",
        metavar="DIR|JOB_ID",
        help="the sweep's storage directory, or a job id with --address (or with a Jobs API address in "
        "$RAY_ADDRESS, when no such directory exists)",
    )
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("--sweep", help="sweep name, when the storage holds several")
    p.add_argument("--json", action="store_true", help="print the status as one JSON document")
    p.set_defaults(func=status_command)


def status_command(args) -> int:
    args.address = status_address(args.dir, args.address)
    if args.address:
        return job_status_command(args)
    from powersweep.sweeps.outcome import status_lines
    from powersweep.sweeps.sweep import status

    s = status(args.dir, sweep_id=args.sweep)
    print(json.dumps(s, indent=2, default=float) if args.json else "\n".join(status_lines(s)))
    return 0


def status_address(target: str, given: str | None) -> str | None:
    """The Jobs API address `status TARGET` asks, or None to read TARGET as a store: `--address` when given;
    else RAY_ADDRESS when it is a Jobs API address and TARGET names no store (no such path, no URI), so that
    `status runs/x` keeps reading the store wherever RAY_ADDRESS points."""
    if given:
        return given
    address = cluster_address(None)
    names_a_store = "://" in target or os.path.exists(target)
    return address if is_jobs_address(address) and not names_a_store else None


def add_compact_parser(sub) -> None:
    p = sub.add_parser(
        "compact",
        help="merge a store's result files (and its finished lineages' curves) into few, so that reading it "
        "stays fast; safe while a sweep runs",
    )
    p.add_argument("dir", metavar="DIR", help="the store: a directory or a URI such as s3://bucket/prefix")
    p.add_argument("--sweep", help="compact this sweep only (default: every sweep in the store)")
    add_json_option(p, "what the compaction of each sweep did, once all are done")
    p.set_defaults(func=compact_command)


def compact_command(args) -> int:
    import dataclasses
    import time

    from powersweep.sweeps.compaction import compact, compaction_line
    from powersweep.sweeps.sweep import stored_sweeps

    names = [args.sweep] if args.sweep else stored_sweeps(args.dir)
    if not names:
        print(
            f"powersweep compact: {args.dir!r} holds no sweep (no sweeps/<name>/spec.json)", file=sys.stderr
        )
        return 2
    compacted = []
    for name in names:
        start = time.perf_counter()
        done = compact(args.dir, sweep_id=name)
        seconds = time.perf_counter() - start
        compacted.append({"sweep": name, **dataclasses.asdict(done), "seconds": seconds})
        if not args.json:
            print(compaction_line(name, done, seconds), flush=True)
    if args.json:
        print_json(compacted)
    return 0


def add_demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job: a sweep -> Parquet -> analysis -> coefficients (cpu-quick; --gpu: gpu-quick)",
    )
    p.add_argument(
        "--gpu",
        action="store_true",
        help="the GPU main job (sweeps/specs/gpu-quick.yaml) on this machine's GPU",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="with --gpu: the same job shrunk to a minute on this CPU (its path, not its law)",
    )
    p.add_argument("--storage", help="results store (default runs/<job>, e.g. runs/cpu-quick)")
    p.add_argument("--out", help="analysis report directory (default out/<job>)")
    p.add_argument(
        "--checkpoints",
        help="lineage checkpoints, Ray's trial files and logs (default <storage>/checkpoints); "
        "elsewhere, the store holds only results, curves and the spec",
    )
    add_json_option(p, "the sweep's summary and the analysis (paths written, a, b and their CIs)")
    p.set_defaults(func=demo_command)


def demo_command(args) -> int:
    from powersweep.sweeps.spec import SpecError, load_spec
    from powersweep.sweeps.sweep import submit

    if args.quick and not args.gpu:
        raise SpecError("--quick shrinks the GPU main job: give it with --gpu (plain `demo` is the CPU's)")
    spec = load_spec(os.path.join(SPECS_DIR, "gpu-quick.yaml" if args.gpu else "cpu-quick.yaml"))
    if args.gpu and args.quick:
        spec = quick_gpu_job(spec)
    elif args.gpu:
        import torch

        if not torch.cuda.is_available():
            raise SpecError(
                "demo --gpu: no CUDA GPU here (torch.cuda.is_available() is False): run it on a GPU node, "
                "or `powersweep demo --gpu --quick` for the same job shrunk to this CPU"
            )
    storage, out = args.storage or f"runs/{spec.name}", args.out or f"out/{spec.name}"
    with interruptible_sweep(args, storage=storage, sweep_id=spec.name):
        result = submit(spec, storage=storage, checkpoints=args.checkpoints)
    if not args.json:
        from powersweep.sweeps.outcome import counted

        run = counted(result.lineages_run, "lineage")
        print(f"results: {result.storage} ({run} run, {result.failed_trials} failed)")
    if result.lineages_run and not args.json:
        summary = result.plan.summary()
        print(
            f"tokens trained {summary['tokens_planned']:.4g} vs {summary['tokens_independent']:.4g} for "
            f"independent runs ({summary['ratio']:.3f}); {result.execution.format()}"
        )
    from powersweep.cli import build_parser  # the analyze command's own defaults

    argv = ["analyze", os.path.join(storage, "results"), "--out", out]
    analyze_args = build_parser(argv).parse_args(argv)
    if not args.json:
        return analyze_args.func(analyze_args)
    return demo_json(result, analyze_args)


def demo_json(result, analyze_args) -> int:
    """`demo --json`: the sweep's summary (as `submit --json`) and the analysis's (as `analyze --json`) in one
    document; a failed gamma fit is then one line on stderr, as without --json."""
    from powersweep.analysis.summary import check_coefficients
    from powersweep.cli.analysis_commands import analysis_summary, run_analysis
    from powersweep.sweeps.outcome import report_summary

    analysis, paths = run_analysis(analyze_args)
    print_json({"sweep": report_summary(result), "analysis": analysis_summary(analysis, paths)})
    check_coefficients(analysis, paths)
    return 0


def quick_gpu_job(spec):
    """The GPU main job shrunk to this CPU: the same lrs in one pack, the same settings, on cpu-xxs at 4 x 64
    tokens a step (32x fewer) with every token count 256x smaller, so each budget and the warmup take 8x
    fewer steps. It checks the job's path (a packed trial, the store, the breakdown, the analysis), not its
    law: its runs are too short for one."""
    from powersweep.sweeps.spec import spec_from_dict

    raw, shrink = spec.to_dict(), QUICK_TOKENS_DIVISOR
    raw["name"] = f"{spec.name}-cpu"
    tokens = [round(t / shrink) for t in spec.search.tokens]
    raw["search"].update(models=["cpu-xxs"], batch_size=[4], tokens=tokens)
    raw["train"].update(seq_len=64, warmup_tokens=round(spec.train.warmup_tokens / shrink))
    raw["train"]["data"]["eval_tokens"] = 4096
    raw["run"].update(pack=len(spec.search.lr), gpus_per_trial=0, cpus_per_trial=1)
    return spec_from_dict(raw)


QUICK_TOKENS_DIVISOR = 256


def _progress(status: dict, config: TrainConfig) -> str:
    done = status["step"] / config.steps
    return (
        f"step {status['step']}/{config.steps} ({done:.0%})  tokens {status['tokens']:.3g}  "
        f"loss_train {status['loss_train']:.4f}"
    )
