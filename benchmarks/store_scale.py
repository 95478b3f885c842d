"""The results store at campaign scale: `status`, `resume` up to its first trial and `analyze --no-figures` on
stores of 1k, 10k and 100k rows, as a running sweep leaves them (a file per lineage) and after `powersweep
compact`, on local disk and against an S3-compatible server on loopback (moto's, with its request counts).

The rows are synthetic but go through the store's own write path, as a sweep's trials write them: each row
into the lineage's file (`ResultStore.lineage_rows`), then the lineage's curve. The sweep is cpu-quick's grid
(cpu-xxs, 8 lrs, 6 budgets, 6 trunk rows per lineage) at batch sizes 4-32, with as many seeds as the size
needs (384 rows a seed), all but the last lineage stored: the sweep stopped one lineage short, and `resume`
has that one to train.
Each measurement runs in a fresh process (`--measure`), so its wall time is what a person waits, imports
included, and its peak memory is its own.

    python benchmarks/store_scale.py --rows 1000 10000 100000 --s3 --out benchmarks/store_scale.json
    python benchmarks/store_scale.py --quick        # 1k rows, local and S3: a minute
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ROWS_PER_SEED = 384  # 4 batch sizes x 8 lrs = 32 lineages of 6 budgets and 6 trunk rows
CURVE_POINTS = 48  # a lineage's points, about what the default curve grid keeps at cpu-quick's lengths


def spec(rows: int) -> dict:
    """cpu-quick's grid with enough seeds for about `rows` rows."""
    from powersweep.sweeps.safe_yaml import load_yaml

    values = load_yaml(ROOT / "sweeps" / "specs" / "cpu-quick.yaml")
    values["name"] = "scale"
    values["search"]["batch_size"] = [4, 8, 16, 32]
    values["search"]["seeds"] = list(range(max(1, math.ceil(rows / ROWS_PER_SEED))))
    return values


def loss(lr: float, tokens: float, batch_size: int, rng: np.random.Generator) -> float:
    """A bowl in log lr whose optimum falls with tokens, as the paper's sweeps find."""
    lr_opt = 1.1e-3 * (tokens / 125e3) ** -0.3 * math.sqrt(batch_size / 4)
    return 2.6 + 1.4 * (tokens / 125e3) ** -0.25 + 0.08 * math.log(lr / lr_opt) ** 2 + rng.normal(0, 0.003)


def fill(storage: str, values: dict, *, seed: int = 0, left_out: int = 1) -> dict:
    """Write every planned row of the spec `values`, but for its last `left_out` lineages', into the store at
    `storage` as a sweep's trials do; returns what it wrote and how long it took."""
    from powersweep.sweeps.plan import plan
    from powersweep.sweeps.spec import spec_from_dict
    from powersweep.sweeps.store import ResultStore
    from powersweep.sweeps.sweep import spec_path

    store, sweep_spec, rng = ResultStore(storage), spec_from_dict(values), np.random.default_rng(seed)
    p = plan(sweep_spec)
    store.write_json(spec_path(sweep_spec.name), sweep_spec.to_dict())
    start, rows = time.perf_counter(), 0
    for done, job in enumerate(p.jobs[: len(p.jobs) - left_out]):
        c = job.config
        common = {
            "lineage_id": job.lineage_id,
            "schedule": "wsd",
            "model": c.model,
            "lr": c.schedule.lr,
            "batch_size": c.batch_size,
            "seq_len": 64,
            "seed": c.seed,
            "warmup_tokens": 12_500,
            "decay_fraction": 0.2,
            "parametrisation": "mup",
            "settings_id": "synthetic",
            "status": "ok",
        }
        evaluations = [("final", t, r) for t, r in zip(job.budgets, job.run_ids)]
        evaluations += [("trunk", t, r) for t, r in zip(job.trunk_tokens, job.trunk_run_ids)]
        lineage_rows = store.lineage_rows(sweep_id=sweep_spec.name, lineage_id=job.lineage_id)
        for phase, tokens, run_id in evaluations:
            value = loss(c.schedule.lr, tokens, c.batch_size, rng)
            row = {**common, "run_id": run_id, "phase": phase, "tokens": int(tokens), "loss_eval": value}
            lineage_rows.write([row], name=run_id)
        store.write_curve(curve(job, rng), sweep_id=sweep_spec.name, name=job.lineage_id)
        rows += len(evaluations)
        if done % max(1, len(p.jobs) // 10) == 0:
            print(f"  filled {done + 1}/{len(p.jobs)} lineages", file=sys.stderr, flush=True)
    return {"rows": rows, "lineages": len(p.jobs) - left_out, "fill_s": time.perf_counter() - start}


def curve(job, rng: np.random.Generator) -> list[dict]:
    """The lineage's trunk training points, and a few of each budget's decay branch."""
    tps, lr = job.config.tokens_per_step, job.config.schedule.lr

    def point(step: int, **where) -> dict:
        mean = 5.0 / math.log(step + 2)
        return {
            "lineage_id": job.lineage_id,
            "kind": "train",
            "step": int(step),
            "tokens": int(step * tps),
            "lr": lr,
            "loss_train": mean + rng.normal(0, 0.01),
            "loss_train_mean": mean,
            "mean_steps": 1,
            **where,
        }

    trunk_steps = np.unique(np.geomspace(1, job.config.steps, CURVE_POINTS).astype(int))
    points = [point(s, segment="trunk") for s in trunk_steps]
    for tokens, run_id, fork in zip(job.budgets, job.run_ids, [0, *job.trunk_tokens]):
        end = int(tokens // tps)
        for s in np.linspace(max(1, int(fork // tps)), end, 3).astype(int):
            points.append(
                point(s, segment="decay", budget=float(tokens), fork_tokens=float(fork), run_id=run_id)
            )
    return points


# -- one measurement, in its own process ---------------------------------------------------------------------


def measure(what: str, storage: str, out_dir: str) -> dict:
    """Run `what` on the store: its seconds (imports excluded: `wall_s`, from outside, includes them)."""
    from powersweep.cli import main
    from powersweep.sweeps.compaction import compact
    from powersweep.sweeps.sweep import status

    if what == "resume-plan":
        import powersweep.sweeps.execute  # noqa: F401 - resume imports it to run trials, not to plan
        import powersweep.sweeps.sweep  # noqa: F401

    start = time.perf_counter()
    if what == "status":
        s = status(storage)
        result = {"done": int(sum(v for k, v in s["counts"].items() if k != "missing"))}
    elif what == "resume-plan":
        result = {"trials": resume_until_training(storage)}
    elif what == "analyze":
        with open(os.devnull, "w") as quiet:
            stdout, sys.stdout = sys.stdout, quiet
            try:
                code = main(["analyze", os.path.join(storage, "results"), "--no-figures", "--out", out_dir])
            finally:
                sys.stdout = stdout
        result = {"exit": code}
    elif what == "compact":
        done = compact(storage, sweep_id="scale")
        result = {"result_files": list(done.result_files), "curve_files": list(done.curve_files)}
    else:
        raise SystemExit(f"--measure {what!r}: choose status, resume-plan, analyze or compact")
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**result, "seconds": seconds, "peak_mb": peak_mb}


def resume_until_training(storage: str) -> int:
    """`resume` of the store's sweep up to its first trial, Ray's start left out: what it reads and decides
    before it trains (its checks before its lock, then, under it, unreadable files set aside and the missing
    trials planned). The number of trials it would run."""
    import powersweep.sweeps.execute as execution
    import powersweep.sweeps.sweep as sweep

    class Trains(Exception):
        pass

    def execute(jobs, settings, **kwargs):
        raise Trains(len(jobs))

    sweep._start_ray, execution.execute = (lambda *args, **kwargs: None), execute
    try:
        sweep.resume(storage)
    except Trains as trains:
        return trains.args[0]
    return 0  # the store held every row: nothing to train


def timed(what: str, storage: str, server=None) -> dict:
    """`measure` in a fresh process: its wall time from outside, and the S3 requests it made."""
    with tempfile.TemporaryDirectory() as out_dir:
        command = [sys.executable, __file__, "--measure", what, storage, "--out", out_dir]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        if server is None:
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            counted = None
        else:
            with server.requests() as counted:
                done = subprocess.run(command, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"--measure {what} {storage}: exit {done.returncode}\n{done.stderr[-3000:]}")
    row = {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": wall}
    if counted is not None:
        row["requests"] = counted.total
    return row


def upload(local: str, uri: str) -> None:
    """Copy a local store's files to the store at `uri` as they are."""
    import pyarrow.fs as pafs

    from powersweep.sweeps.storage import Storage

    target = Storage(uri)
    pafs.copy_files(
        local, target.root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=target.fs
    )


def run(sizes: list[int], *, s3: bool, s3_max_rows: int) -> list[dict]:
    results = []
    server = None
    if s3:
        sys.path.insert(0, str(ROOT / "tests"))
        from s3_server import S3Server

        server = S3Server().start()
    try:
        for size in sizes:
            with tempfile.TemporaryDirectory() as parent:
                storage = os.path.join(parent, "store")
                print(f"store of ~{size:,} rows: filling", file=sys.stderr, flush=True)
                filled = fill(storage, spec(size))
                remote = {}
                if server is not None and filled["rows"] <= s3_max_rows:
                    remote["written"] = server.bucket()
                    upload(storage, remote["written"])
                for state in ("written", "compacted"):
                    if state == "compacted":
                        compacted = timed("compact", storage)
                        print(f"  compact: {compacted}", file=sys.stderr, flush=True)
                        if server is not None:
                            remote["compacted"] = server.bucket()
                            upload(storage, remote["compacted"])
                    for what in ("status", "resume-plan", "analyze"):
                        row = {"rows": filled["rows"], "lineages": filled["lineages"], "state": state}
                        row.update(where="local", what=what, **timed(what, storage))
                        results.append(row)
                        print(f"  {json.dumps(row)}", file=sys.stderr, flush=True)
                        if state in remote and what != "analyze":  # analysis reads a local directory
                            row = {**row, "where": "s3", **timed(what, remote[state], server)}
                            results.append(row)
                            print(f"  {json.dumps(row)}", file=sys.stderr, flush=True)
                    if state == "compacted":
                        results.append(
                            {
                                "rows": filled["rows"],
                                "state": "compacted",
                                "where": "local",
                                "what": "compact",
                            }
                            | compacted
                        )
                results.append({"rows": filled["rows"], "what": "fill", "where": "local"} | filled)
    finally:
        if server is not None:
            server.stop()
    return results


def table(results: list[dict]) -> str:
    """The Markdown table for RESULTS.md."""
    lines = [
        "| rows | files | where | what | wall s | of which work s | peak MB | requests |",
        "|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if r["what"] in ("fill",):
            continue
        state = r.get("state", "")
        requests = r.get("requests", "")
        lines.append(
            f"| {r['rows']:,} | {state} | {r['where']} | {r['what']} | {r.get('wall_s', r['seconds']):.2f} | "
            f"{r['seconds']:.2f} | {r['peak_mb']:.0f} | {requests} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--s3", action="store_true", help="also against moto's S3 server on loopback")
    parser.add_argument("--s3-max-rows", type=int, default=20000, help="largest store read uncompacted on S3")
    parser.add_argument("--quick", action="store_true", help="1k rows, local and S3")
    parser.add_argument("--out", help="write the results as JSON here (with --measure: analyze's folder)")
    parser.add_argument("--measure", nargs=2, metavar=("WHAT", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1], args.out or tempfile.mkdtemp())))
        return
    sizes, s3 = ([1000], True) if args.quick else (args.rows, args.s3)
    results = run(sizes, s3=s3, s3_max_rows=args.s3_max_rows)
    print(table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
