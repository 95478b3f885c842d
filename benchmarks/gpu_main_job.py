"""The GPU main job, measured: `powersweep demo --gpu` end to end, and one solo run of its shape.

1. One solo run of the job's shape (its preset, batch x seq and vocabulary, the solo default: `compile:
   auto`, CUDA graphs where they pay) timed in this process (benchmarks/gpu.py's `measure`), then the GPU's
   memory handed back.
2. `powersweep demo --gpu` as a user runs it, in a process of its own, timed whole (Ray's start to the
   written report): its store (results, curves, spec) under OUT/store, its report under OUT/report, its
   checkpoints and Ray's files outside OUT, so OUT comes back small.
3. The start-up with a warm compile cache: the same job's shape again, every lineage cut to its first
   `WARM_STEPS` steps, through `powersweep submit` into a throwaway store, on the cache the job just filled
   (a GPU node's second sweep of a shape): its breakdown to the first training step.
4. OUT/main.md and OUT/main.json: the device, the whole command's wall, the sweep's breakdown as `submit`
   prints it, the tokens trained over the sweep's wall against the solo run's tokens/s, the law (a, b with
   their 95% CIs, b's CI width) from the report's coefficients.json, and the warm start-up. The solo run's
   row is written to OUT/solo.json as soon as it is measured, and the store fills as the job runs. With
   `--job-limit-s`, a job still running then is stopped (SIGTERM, as a person would) and main.md and
   main.json say how many of its rows it stored and the law `analyze` fits to them.

Run on a GPU:  python benchmarks/gpu_main_job.py --out $OUT
Run on a CPU:  python benchmarks/gpu_main_job.py --quick --out DIR   (`demo --gpu --quick`: the same job
               shrunk to the CPU, a minute; checks the script, not the GPU's numbers)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu import Case, fresh_start, measure  # noqa: E402 - the benchmark next to this one

from powersweep.cli.sweep_commands import SPECS_DIR, quick_gpu_job  # noqa: E402
from powersweep.proxy_models.data import DataConfig, load_corpus  # noqa: E402
from powersweep.proxy_models.perf import device_name, resolve_device  # noqa: E402
from powersweep.sweeps.data_check import check_data  # noqa: E402
from powersweep.sweeps.progress import ExecutionReport  # noqa: E402
from powersweep.sweeps.spec import load_spec  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# timed steps of the solo run: on a GPU at least gpu.MIN_TIMED_S seconds; on a CPU enough that the first
# steps' one-off costs do not set the rate
SOLO_STEPS = {"cuda": 20, "cpu": 200}


STOP_GRACE_S = 120  # for a job stopped at its limit to end its trials and exit
WARM_STEPS = 64  # steps of each lineage in the warm start-up's sweep: its first step is what it measures


def job_spec(quick: bool):
    """The job's spec as `demo --gpu [--quick]` runs it, its vocab_size set from the corpus."""
    spec = load_spec(os.path.join(SPECS_DIR, "gpu-quick.yaml"))
    return check_data(quick_gpu_job(spec) if quick else spec).spec


def solo(spec, *, device: str) -> dict:
    """One solo run of the job's shape, as a trial of one variant trains it by default. A run that fails
    gives its error instead of a rate (tokens_per_s None): the job, whose law matters more, runs all the
    same."""
    train = spec.train
    overrides = {**train.model_overrides, "seq_len": train.seq_len}
    case = Case(spec.search.models[0], spec.search.batch_size[0], overrides)
    try:
        corpus = load_corpus(DataConfig())
        row = measure(case, corpus=corpus, device=device, steps=SOLO_STEPS[device], compile="auto")
    except Exception as error:  # any failure: it is reported, and the job still runs
        row = {"tokens_per_s": None, "error": f"{type(error).__name__}: {error}"[:1000]}
    fresh_start(resolve_device(device))  # the trials get the GPU
    return row


def run_job(out: str, *, quick: bool, limit_s: float | None = None) -> dict:
    """`powersweep demo --gpu [--quick] --json` in its own process: its wall, exit code and JSON summary.
    Past `limit_s` it is stopped as a person would stop it (SIGTERM: the rows stored so far stay stored)."""
    with tempfile.TemporaryDirectory(prefix="gpu-main-job-") as checkpoints:  # the rows come home, not these
        command = [sys.executable, "-m", "powersweep.cli", "demo", "--gpu", *(["--quick"] if quick else [])]
        command += ["--storage", os.path.join(out, "store"), "--out", os.path.join(out, "report")]
        command += ["--checkpoints", checkpoints, "--json"]
        start = time.perf_counter()
        job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stdout, stderr = job.communicate(timeout=limit_s)
            stopped = False
        except subprocess.TimeoutExpired:
            job.send_signal(signal.SIGTERM)
            try:
                stdout, stderr = job.communicate(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:  # it did not end as asked: the rows stored so far stay
                job.kill()
                stdout, stderr = job.communicate()
            stopped = True
    wall_s = time.perf_counter() - start
    with open(os.path.join(out, "main.log"), "w") as log:
        log.write(stderr + stdout)
    return {
        "command": " ".join(command[2:]).replace(checkpoints, '"$(mktemp -d)"'),  # a folder of its own
        "returncode": job.returncode,
        "wall_s": wall_s,
        "stopped_at_limit_s": limit_s if stopped else None,
        "result": json.loads(stdout) if job.returncode == 0 and not stopped else None,
    }


def stopped_summary(job: dict, out: str, spec, solo_row: dict) -> dict:
    """A job stopped at its limit: the rows it stored of those planned, and the law `analyze` fits to them."""
    from powersweep.sweeps.plan import plan
    from powersweep.sweeps.store import ResultStore

    stored = ResultStore(os.path.join(out, "store")).read(sweep_id=spec.name).table
    command = [sys.executable, "-m", "powersweep.cli", "analyze", os.path.join(out, "store", "results")]
    command += ["--out", os.path.join(out, "report"), "--json"]
    analyzed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    fits = json.loads(analyzed.stdout)["fits"] if analyzed.returncode == 0 else []
    return {
        "device": solo_row["device"],
        "command": job["command"],
        "stopped_at_limit_s": job["stopped_at_limit_s"],
        "rows_stored": len(stored),
        "rows_planned": len(plan(spec).row_ids),
        "law": _law(fits),
        "analyze": "exit 0" if analyzed.returncode == 0 else analyzed.stderr.strip()[-300:],
        "solo_tokens_per_s": solo_row["tokens_per_s"],
        "solo": solo_row,
    }


def _law(fits: list[dict]) -> dict:
    """a, b with their 95% CIs and b's CI width, from the analysis's first headline fit ({} without one)."""
    [fit] = fits[:1] or [{}]
    law = {k: fit[k] for k in ("a", "a_ci", "b", "b_ci", "n_points") if k in fit}
    if "b_ci" in law:
        law["b_ci_width"] = law["b_ci"][1] - law["b_ci"][0]
    return law


def warm_startup(spec) -> dict:
    """`powersweep submit` of the job's shape with every lineage cut to WARM_STEPS steps, into a throwaway
    store, after the job filled the compile cache: its start-up parts (seconds) and breakdown."""
    raw = spec.to_dict()
    step_tokens = spec.search.batch_size[0] * spec.train.seq_len
    raw["name"] = f"{spec.name}-warm"
    raw["search"]["tokens"] = [max(WARM_STEPS * step_tokens, 2 * spec.train.warmup_tokens)]
    with tempfile.TemporaryDirectory(prefix="gpu-main-job-warm-") as tmp:
        path = os.path.join(tmp, "spec.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(raw, f)
        command = [sys.executable, "-m", "powersweep.cli", "submit", path, "--json", "--storage", tmp]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        return {"returncode": done.returncode, "error": done.stderr[-2000:]}
    execution = _execution(json.loads(done.stdout)["execution"])
    return {
        "returncode": 0,
        "tokens": raw["search"]["tokens"][0],
        "startup_s": sum(seconds for _, seconds in execution.startup_parts),
        "startup_parts_s": dict(execution.startup_parts),
        "breakdown": execution.format(),
    }


def _execution(raw: dict) -> ExecutionReport:
    """An ExecutionReport from its JSON (`submit --json`'s "execution")."""
    raw = dict(raw)
    raw["startup_parts"] = tuple(tuple(part) for part in raw["startup_parts"])
    return ExecutionReport(**raw)


def summary(job: dict, solo_row: dict, warm: dict | None = None) -> dict:
    """The job's numbers: its walls, breakdown, tokens/s against the solo run's, and its law."""
    sweep, analysis = job["result"]["sweep"], job["result"]["analysis"]
    execution = _execution(sweep["execution"])
    tokens = sweep["plan"]["tokens_planned"]
    tokens_per_s = tokens / execution.wall_s
    law = _law(analysis["fits"])
    return {
        "device": solo_row["device"],
        "command": job["command"],
        "returncode": job["returncode"],
        "command_wall_s": job["wall_s"],
        "sweep_wall_s": execution.wall_s,
        "breakdown": execution.format(),
        "shares": execution.summary(),
        "tokens_planned": tokens,
        "tokens_per_s": tokens_per_s,
        "solo_tokens_per_s": solo_row["tokens_per_s"],
        "vs_solo": tokens_per_s / solo_row["tokens_per_s"] if solo_row["tokens_per_s"] else None,
        "solo": solo_row,
        "law": law,
        "figures": sorted(stem for stem in analysis["figures"]),
        "warm_startup": warm,
    }


def _format_law(law: dict) -> str:
    if not law:
        return "no coefficients written (see main.log)"
    return (
        f"a = {law['a']:.4g} [{law['a_ci'][0]:.4g}, {law['a_ci'][1]:.4g}], b = {law['b']:.4f} "
        f"[{law['b_ci'][0]:.4f}, {law['b_ci'][1]:.4f}] (CI width {law['b_ci_width']:.3f}), "
        f"{law['n_points']} cells"
    )


def format_stopped(s: dict) -> str:
    return "\n".join(
        [
            f"# The GPU main job on {s['device']}: stopped at its limit",
            "",
            f"`{s['command']}` was stopped after {s['stopped_at_limit_s']:.0f} s (SIGTERM), with "
            f"{s['rows_stored']} of {s['rows_planned']} rows stored (the store and main.log are here).",
            "",
            f"- one solo run of the shape (compile: auto): {_format_solo(s['solo'])}",
            f"- the law from the rows stored (`analyze`, {s['analyze']}): {_format_law(s['law'])}",
        ]
    )


def format_summary(s: dict) -> str:
    fit = _format_law(s["law"])
    return "\n".join(
        [
            f"# The GPU main job on {s['device']}",
            "",
            f"`{s['command']}`: exit {s['returncode']}, {s['command_wall_s']:.0f} s whole "
            "(Ray's start to the report)",
            "",
            "| what | value |",
            "| --- | ---: |",
            f"| sweep wall (Ray's start to the last row) | {s['sweep_wall_s']:.0f} s |",
            f"| outside training | {s['shares']['outside_training']:.1%} |",
            f"| tokens planned | {s['tokens_planned']:,} |",
            f"| tokens / s over the sweep's wall | {s['tokens_per_s']:,.0f} |",
            f"| one solo run of the shape (compile: auto) | {_format_solo(s['solo'])} |",
            f"| sweep vs solo | {_format_ratio(s['vs_solo'])} |",
            f"| law | {fit} |",
            "",
            "breakdown:",
            "",
            *(f"    {line}" for line in s["breakdown"].splitlines()),
            "",
            f"figures: {', '.join(s['figures'])}",
            "",
            *_format_warm(s.get("warm_startup")),
        ]
    )


def _format_ratio(ratio: float | None) -> str:
    return "no solo rate" if ratio is None else f"{ratio:.2f}x"


def _format_solo(row: dict) -> str:
    if row["tokens_per_s"] is None:
        return f"failed: {row['error'][:300]}"
    return f"{row['tokens_per_s']:,.0f} tokens/s"


def _format_warm(warm: dict | None) -> list[str]:
    if warm is None:
        return ["warm start-up: not measured"]
    if warm["returncode"] != 0:
        error = warm["error"][-300:].strip()
        return [f"warm start-up: its sweep failed (exit {warm['returncode']}): {error}"]
    return [
        f"warm start-up (the same shape, {warm['tokens']:,} tokens a lineage, on the compile cache the job "
        "filled):",
        "",
        *(f"    {line}" for line in warm["breakdown"].splitlines()[1:]),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="directory for main.md, main.json, the store and report")
    parser.add_argument("--quick", action="store_true", help="the job shrunk to this CPU (checks the script)")
    parser.add_argument(
        "--job-limit-s",
        type=float,
        help="stop the job after this many seconds and fit the rows it stored (the call's own limit kills "
        "everything: this one leaves a summary)",
    )
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    device = "cpu" if args.quick else "cuda"
    spec = job_spec(args.quick)
    solo_row = {**solo(spec, device=device), "device": device_name(resolve_device(device))}
    print(f"solo: {_format_solo(solo_row)}", file=sys.stderr, flush=True)
    with open(os.path.join(args.out, "solo.json"), "w") as f:
        json.dump(solo_row, f, indent=2, default=str)
    job = run_job(args.out, quick=args.quick, limit_s=args.job_limit_s)
    if job["stopped_at_limit_s"] is not None:
        result = stopped_summary(job, args.out, spec, solo_row)
        return write_summary(args.out, result, format_stopped(result), returncode=0)
    if job["result"] is None:
        print(f"the job failed (exit {job['returncode']}): see {args.out}/main.log", file=sys.stderr)
        return job["returncode"]
    print(f"job: exit 0 in {job['wall_s']:.0f} s; the warm start-up next", file=sys.stderr, flush=True)
    result = summary(job, solo_row, warm_startup(spec))
    return write_summary(args.out, result, format_summary(result), returncode=job["returncode"])


def write_summary(out: str, result: dict, text: str, *, returncode: int) -> int:
    print(text, flush=True)
    with open(os.path.join(out, "main.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out, "main.json"), "w") as f:
        json.dump(result, f, indent=2, default=str)
    return returncode


if __name__ == "__main__":
    sys.exit(main())
