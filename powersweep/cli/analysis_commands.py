"""The analysis commands: `analyze` and `predict`, over the analysis library (its summary lines in
`analysis.summary`).

Only argparse at import time: pandas, scipy and matplotlib load inside the handlers, so `--help` is fast.

>>> sub = parser.add_subparsers(dest="command")
>>> add_analyze_parser(sub); add_predict_parser(sub)
>>> args = parser.parse_args(["predict", "--coefficients", "out/coefficients.json", "--batch-size", "1024",
...                           "--tokens", "1e12"])
>>> args.func(args)   # prints lr_opt with its CI; user errors raise AnalysisError
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from powersweep.analysis.errors import AnalysisError
from powersweep.cli.options import add_json_option, parameter_count, print_json, token_count

BATCH_UNITS = ("sequences", "tokens")  # as analysis.table.BATCH_UNITS, which imports pandas
DIVERGE_FACTOR = 1.5  # as analysis.table.DIVERGE_FACTOR
TOKENS_TOLERANCE = 0.01  # as analysis.merge.DEFAULT_TOLERANCE
BAND = 0.0025  # as analysis.pipeline.Settings.band_eps
PROBE_PREFIX = ".powersweep-write-probe-"  # hidden: a table directory's reader skips it (analysis.table)
WATCH_INTERVAL_S = 5.0  # a sweep's results land every few seconds at most; polling is a directory listing


def add_analyze_parser(subparsers) -> argparse.ArgumentParser:
    """Register `analyze TABLE [--map FIELD=COLUMN ...] [--out DIR] ...`;
    its handler is ``analyze_command``."""
    p = subparsers.add_parser("analyze", help="fit the learning-rate law of a sweep and write a report")
    p.add_argument(
        "table", help="results table: CSV or Parquet file, or a (hive-partitioned) directory of them"
    )
    p.add_argument(
        "--map",
        nargs="+",
        action="extend",
        default=[],
        metavar="FIELD=COLUMN",
        help="read FIELD from the table's COLUMN, e.g. lr=config.lr loss=eval/loss",
    )
    p.add_argument(
        "--batch-unit", choices=BATCH_UNITS, default="sequences", help="unit of the batch_size column"
    )
    p.add_argument("--seq-len", type=int, help="tokens per sequence, to convert a batch size given in tokens")
    p.add_argument("--out", default="out/analysis", help="report directory (default: out/analysis)")
    p.add_argument(
        "--top-k", type=int, default=3, help="batch sizes kept per (model, T) (default 3, as the paper)"
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0: analytic)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument(
        "--schedule",
        help="schedule whose runs locate lr_opt, when the table mixes several; "
        "also the schedule of rows whose table has none (else shown as unknown)",
    )
    p.add_argument(
        "--parametrisation",
        choices=("mup", "sp"),
        help="parametrisation of rows whose table does not say (else shown as unknown)",
    )
    p.add_argument("--include-flagged", action="store_true", help="let edge cells into the point fits")
    p.add_argument(
        "--diverge-factor",
        type=float,
        default=DIVERGE_FACTOR,
        help=f"a run whose loss is above this times the best loss of its cell counts as diverged, "
        f"whatever its status (default {DIVERGE_FACTOR})",
    )
    p.add_argument(
        "--tokens-tolerance",
        type=float,
        default=TOKENS_TOLERANCE,
        help="a model's token budgets (and batch sizes converted from tokens) within this relative "
        f"difference are one cell at their median (default {TOKENS_TOLERANCE}; 0 keeps them apart)",
    )
    p.add_argument(
        "--band",
        type=float,
        default=BAND,
        help=f"relative loss band of the Step-Law-style fit (default {BAND}, i.e. {BAND * 100:g} percent)",
    )
    p.add_argument("--no-figures", action="store_true", help="write the numbers only (faster)")
    p.add_argument(
        "--exclude-spikes",
        action="store_true",
        help="leave out runs whose training loss jumped and "
        "recovered (a near-divergence, from the store's curves); by default they are kept and marked",
    )
    p.add_argument(
        "--curves-cell",
        metavar="MODEL:BATCH",
        help="the cell whose loss curves the report draws "
        "(default: the one with the most lrs at its largest T)",
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="re-render the report whenever the table's files change, e.g. while a sweep runs; the page "
        "reloads itself; Ctrl-C ends it",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=WATCH_INTERVAL_S,
        help=f"seconds between checks of the table's files with --watch (default {WATCH_INTERVAL_S:g})",
    )
    add_json_option(p, "the paths written and the fitted laws (a, b and their CIs)")
    p.set_defaults(func=analyze_command)
    return p


def parse_mapping(items: list[str]) -> dict[str, str]:
    """``["lr=config.lr", ...]`` -> ``{"lr": "config.lr"}``; the column may itself contain '='."""
    mapping = {}
    for item in items:
        field, sep, column = item.partition("=")
        if not sep or not field or not column:
            raise AnalysisError(f"--map {item!r}: write FIELD=COLUMN, e.g. --map lr=learning_rate")
        mapping[field.strip()] = column
    return mapping


def analyze_command(args: argparse.Namespace) -> int:
    """Load, analyse, write the report; print where everything went and the fitted a, b with CIs."""
    from powersweep.analysis.merge import check_tolerance

    check_tolerance(args.tokens_tolerance)  # an option's mistake is one line before the table is read
    _check_out_dir(args.out)
    if args.watch:
        if args.json:
            raise AnalysisError("--json prints one document: leave it out with --watch, which re-renders")
        return watch_command(args)
    return _analyze_once(args)


def _analyze_once(args: argparse.Namespace, *, refresh_s: float | None = None) -> int:
    from powersweep.analysis.summary import check_coefficients, report_lines

    result, paths = run_analysis(args, refresh_s=refresh_s)
    if args.json:
        print_json(analysis_summary(result, paths))
    else:
        print("\n".join(report_lines(result, paths)))
    check_coefficients(result, paths)
    return 0


def run_analysis(args: argparse.Namespace, *, refresh_s: float | None = None):
    """Load the table, analyse it and write the report as `args` (analyze's) say; (Analysis, ReportPaths).
    The analysis's notes go to stderr."""
    from powersweep.analysis.pipeline import analyze
    from powersweep.analysis.report import write_report
    from powersweep.analysis.run_curves import attach_curves
    from powersweep.analysis.table import load_table

    table = load_table(
        args.table,
        mapping=parse_mapping(args.map),
        batch_unit=args.batch_unit,
        seq_len=args.seq_len,
        schedule=args.schedule,
        parametrisation=args.parametrisation,
        tokens_tolerance=args.tokens_tolerance,
    )
    table, curves = attach_curves(table, args.table, exclude_spikes=args.exclude_spikes)
    result = analyze(
        table,
        top_k=args.top_k,
        n_boot=args.bootstrap,
        seed=args.seed,
        schedule=args.schedule,
        include_flagged=args.include_flagged,
        diverge_factor=args.diverge_factor,
        band_eps=args.band,
        tokens_tolerance=args.tokens_tolerance,
    )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    paths = write_report(
        table,
        args.out,
        result=result,
        figures=not args.no_figures,
        refresh_s=refresh_s,
        curves=curves,
        curves_cell=args.curves_cell,
    )
    return result, paths


def analysis_summary(result, paths) -> dict:
    """What `analyze` prints, as `--json` prints it: the paths written (coefficients None when none were),
    the headline law's fits with a, b and their 95% CIs (per model alpha and beta where gamma is not
    batch-invariant), the Power (a, b) search's best, and the analysis's notes."""
    return {
        "report": paths.index_html,
        "cells": paths.cells_csv,
        "coefficients": paths.coefficients,
        "figures": {stem: dataclasses.asdict(files) for stem, files in paths.figures.items()},
        "figures_skipped": paths.skipped,
        "headline": result.headline,
        "fits": _headline_fits(result) if paths.coefficients is not None else [],
        "power": _power(result.power.overall) if result.power is not None else None,
        "notes": list(result.notes),
    }


def _headline_fits(result) -> list[dict]:
    """The fits behind the headline law, as the text's headline lines show them."""
    if result.headline == "per_model_batch_law":
        return [
            {
                "model": name,
                "alpha": law.alpha,
                "alpha_ci": [law.alpha_ci.low, law.alpha_ci.high],
                "beta": law.coef["beta"],
                "beta_ci": [law.ci["beta"].low, law.ci["beta"].high],
                "n_cells": law.n_cells,
            }
            for name, law in result.batch.items()
            if law.ok
        ]
    if result.gamma is None:
        return []
    gamma = result.gamma
    fits = gamma.per_model.items() if result.headline == "per_model_gamma" else [("pooled", gamma.pooled)]
    return [{"model": name, **_ab(fit), "n_points": fit.n_points} for name, fit in fits if fit.ok]


def _power(best) -> dict:
    return {**_ab(best), "method": best.method, "n_runs": best.n_runs}


def _ab(fit) -> dict:
    return {
        "a": fit.a,
        "a_ci": [fit.a_ci.low, fit.a_ci.high],
        "b": fit.b,
        "b_ci": [fit.b_ci.low, fit.b_ci.high],
    }


def watch_command(args: argparse.Namespace) -> int:
    """Re-render the report each time the table's files change, until Ctrl-C; a table that cannot be
    analysed yet (too few runs) gives a waiting page that says why."""
    from powersweep.analysis.report import write_waiting_page
    from powersweep.analysis.watch import WatchState, watch

    if not args.interval > 0:
        raise AnalysisError(f"--interval {args.interval:g}: must be a positive number of seconds, e.g. 5")
    refresh = max(args.interval, 1.0)

    index = Path(args.out) / "index.html"

    def render() -> None:
        before = index.stat().st_mtime_ns if index.exists() else None
        try:
            _analyze_once(args, refresh_s=refresh)
        except AnalysisError as error:
            if not index.exists() or index.stat().st_mtime_ns == before:  # a failed fit still writes its page
                write_waiting_page(args.out, str(error), refresh_s=refresh)
            raise

    state = WatchState(args.table, render)
    print(f"watching {args.table} every {args.interval:g} s; report: {index}; Ctrl-C ends", file=sys.stderr)
    try:
        watch(
            state,
            interval_s=args.interval,
            errors=(AnalysisError,),
            on_error=lambda error: print(f"waiting: {error}", file=sys.stderr),
        )
    except KeyboardInterrupt:
        print(f"stopped after {state.renders} render(s)", file=sys.stderr)
    return 0


def _check_out_dir(out: str) -> None:
    """Refuse an --out the report cannot be written to now, not after minutes of bootstrap: create and remove
    a hidden file in it, or, while it does not exist, in its nearest existing parent (where it will be
    created; creating it now would leave an empty directory behind a table that then fails to load)."""
    path = Path(out)
    try:  # exists() too may fail, e.g. on a parent this user may not list
        if path.exists() and not path.is_dir():
            raise AnalysisError(f"--out {out}: is a file, not a directory; pass a directory for the report")
        existing = next(p for p in (path, *path.parents) if p.exists())  # '.' or '/' ends the walk
        with tempfile.NamedTemporaryFile(dir=existing, prefix=PROBE_PREFIX):
            pass
    except OSError as err:
        raise AnalysisError(
            f"--out {out}: cannot write the report there ({err.strerror or err}); give a writable "
            "directory with --out DIR"
        ) from None


def add_predict_parser(subparsers) -> argparse.ArgumentParser:
    """Register `predict --coefficients FILE --batch-size B --tokens T`;
    its handler is ``predict_command``."""
    p = subparsers.add_parser("predict", help="predict the optimal peak lr from coefficients.json")
    p.add_argument("--coefficients", required=True, help="coefficients.json written by `analyze`")
    p.add_argument("--model", help="the model whose law answers (see the report's per-model laws)")
    p.add_argument(
        "--n-params",
        type=parameter_count,
        help="parameters of the target model, e.g. 5e7 or 50M: lr_opt interpolated in ln N between the "
        "fitted models",
    )
    p.add_argument(
        "--law",
        choices=("headline", "joint"),
        default="headline",
        help="headline: the law the report names (default); joint: lr_opt(N, T) and B_opt(T) from the "
        "band fit (needs --n-params when the law has an N term; --batch-size not needed)",
    )
    p.add_argument(
        "--batch-size", type=float, help="batch size in sequences (needed except with --law joint)"
    )
    p.add_argument("--tokens", type=token_count, required=True, help="training tokens, e.g. 1e12 or 1T")
    p.add_argument(
        "--seq-len", type=int, help="also print an lm-engine power-scheduler snippet for this seq_len"
    )
    p.add_argument("--lr-max", type=float, help="lr_max for the snippet (default: the file's)")
    add_json_option(p, "lr_opt, its CI, the law and the notes (and the snippet)")
    p.set_defaults(func=predict_command)
    return p


def predict_command(args: argparse.Namespace) -> int:
    """Print lr_opt with its 95% CI (and an lm-engine snippet when --seq-len is given)."""
    from powersweep.analysis.export import (
        lm_engine_snippet,
        predict_lr,
        read_coefficients,
        scheduler_coefficients,
    )
    from powersweep.analysis.summary import prediction_lines

    coefficients = read_coefficients(args.coefficients)
    if args.law == "joint":
        return _predict_joint(coefficients, args)
    if args.batch_size is None:
        raise AnalysisError("--batch-size is needed (sequences per step), except with --law joint")
    pred = predict_lr(
        coefficients, batch_size=args.batch_size, tokens=args.tokens, model=args.model, n_params=args.n_params
    )
    lines = prediction_lines(pred, coefficients, batch_size=args.batch_size, tokens=args.tokens)
    if not args.json:
        print("\n".join(lines))
    snippet = None
    if args.seq_len is not None:
        if not float(args.batch_size).is_integer():
            raise AnalysisError(
                f"--batch-size {args.batch_size:g}: the lm-engine snippet needs a whole number"
            )
        law = scheduler_coefficients(coefficients, model=args.model, batch_size=args.batch_size)
        snippet = lm_engine_snippet(
            law, batch_size=int(args.batch_size), seq_len=args.seq_len, lr_max=args.lr_max
        )
    if args.json:
        document = {**dataclasses.asdict(pred), "batch_size": args.batch_size, "tokens": args.tokens}
        print_json({**document, "notes": _notes(lines), "lm_engine": snippet})
        return 0
    if snippet is not None:
        print(json.dumps(snippet, indent=2))
    return 0


def _notes(lines: list[str]) -> list[str]:
    """The notes of a prediction's lines: the law's own and those the lines add (extrapolation, lr_max)."""
    return [line.removeprefix("note: ") for line in lines if line.startswith("note: ")]


def _predict_joint(coefficients: dict, args: argparse.Namespace) -> int:
    from powersweep.analysis.export import predict_joint
    from powersweep.analysis.summary import joint_prediction_lines

    pred = predict_joint(coefficients, tokens=args.tokens, n_params=args.n_params)
    if args.json:  # batch_opt is null without a batch law, as the text leaves it out
        print_json({**dataclasses.asdict(pred), "tokens": args.tokens, "n_params": args.n_params})
        return 0
    print("\n".join(joint_prediction_lines(pred, tokens=args.tokens, n_params=args.n_params)))
    return 0
