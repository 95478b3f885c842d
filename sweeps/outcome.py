"""What a sweep did and where it stands, as text for a person, and which errors are the user's to fix.

Shared by the `powersweep` command line and the cluster's job driver, so both print the same report and
turn the same mistakes into one line and exit code 2.

>>> code = print_report(submit(spec))   # plan and wall time on stderr, where the results are on stdout
>>> code = print_report(submit(spec), as_json=True)   # the same, as one JSON document on stdout
>>> print("\\n".join(status_lines(status("runs/cpu-quick"))))
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from powersweep.sweeps.sweep import SubmitResult

# (module, exception class) of every user mistake the sweep libraries raise. Looked up only among modules
# already imported (an error can only come from a module that was), so asking imports nothing.
USER_ERRORS = (
    ("powersweep.proxy_models.shapes", "ConfigError"),
    ("powersweep.proxy_models.data", "DataError"),
    ("powersweep.analysis.errors", "AnalysisError"),
    ("powersweep.sweeps.spec", "SpecError"),
    ("powersweep.sweeps.schema", "StoreError"),
    ("powersweep.sweeps.failures", "SweepFailure"),
)


def counted(n: int, noun: str) -> str:
    """`n` and its noun, plural unless one: "1 trial", "8 trials"."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


MAX_LINE = 300  # characters of an error line shown to a person: longer ones lose their middle, as " ... "
CUT = " ... "


def one_line(message: object, *, limit: int = MAX_LINE, head: int | None = None) -> str:
    """`message` as one line of at most `limit` characters: whitespace runs (newlines too) become one space.
    Every error line the command line and the job driver print goes through it, so that a value however large
    (a 200 MB CSV header, a YAML document) never floods the terminal.

    A longer line keeps its start (`head` characters, by default half of `limit`: the field and its
    value) and its end (the reason and the fix), and loses its middle (most often the end of a long value)."""
    line = " ".join(str(message).split())
    if len(line) <= limit:
        return line
    if limit < 4 * len(CUT):  # no room for both ends
        return line[:limit]
    head = limit // 2 if head is None else min(head, limit - 2 * len(CUT))
    return line[:head].rstrip() + CUT + line[len(line) - (limit - head - len(CUT)) :].lstrip()


def error_line(command: str, error: BaseException) -> str:
    """The line `command` prints for a user's `error`: one line of MAX_LINE characters, plus the length of the
    file the error names as holding its details (`error.log_path`), which is never cut."""
    return one_line(f"{command}: error: {error}", limit=MAX_LINE + len(getattr(error, "log_path", "")))


def is_user_error(error: BaseException) -> bool:
    """Whether `error` is a user mistake (one of USER_ERRORS), without importing anything."""
    for module, name in USER_ERRORS:
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(error, getattr(loaded, name)):
            return True
    return False


def print_report(result: SubmitResult, *, as_json: bool = False) -> int:
    """Print what a submit or resume did (plan, wall-time breakdown, where the results are); its exit code:
    1 when a trial failed or a planned row is still unreadable, else 0. With `as_json`, stdout gets
    `report_summary(result)` as one JSON document instead of the line saying where the results are (stderr
    is the same)."""
    import json

    from powersweep.sweeps.plan import format_plan

    print(format_plan(result.plan), file=sys.stderr)
    if result.replaced_lock:
        print(
            f"took over the sweep's lock from a driver that is gone: {result.replaced_lock}", file=sys.stderr
        )
    if result.replaced:
        print(
            f"--replace: the sweep's earlier rows, curves and spec were moved aside, kept: {result.replaced}",
            file=sys.stderr,
        )
    for moved in result.set_aside:
        kind = "curve file, its lineage" if "/curves/" in moved.split(" -> ")[0] else "result file, its run"
        print(f"moved aside an unreadable {kind} trained again: {moved}", file=sys.stderr)
    if result.lineages_run and result.execution is not None:
        print(result.execution.format(), file=sys.stderr)
    if as_json:
        print(json.dumps(report_summary(result), indent=2, default=str))
    else:
        print(
            f"ran {counted(result.lineages_run, 'lineage')} ({result.failed_trials} failed); "
            f"results in {result.storage}"
        )
    if result.unreadable:
        print(
            f"powersweep: error: {len(result.unreadable)} planned rows are not readable in the store: "
            f"{'; '.join(result.unreadable[:3])}{' ...' if len(result.unreadable) > 3 else ''}: run resume "
            "again once the cause is fixed",
            file=sys.stderr,
        )
    return 1 if result.failed_trials or result.unreadable else 0


def report_summary(result: SubmitResult) -> dict:
    """What a submit or resume did, as `--json` prints it: where the results are, lineages run and failed, the
    plan's summary, the wall-time breakdown in seconds (None when nothing ran or an Optuna search ran) and the
    files set aside, unreadable or replaced."""
    import dataclasses

    execution = result.execution if result.lineages_run else None
    return {
        "storage": result.storage,
        "lineages_run": result.lineages_run,
        "failed_trials": result.failed_trials,
        "plan": result.plan.summary(),
        "execution": dataclasses.asdict(execution) if execution is not None else None,
        "set_aside": list(result.set_aside),
        "unreadable": list(result.unreadable),
        "replaced_lock": result.replaced_lock,
        "replaced": result.replaced,
    }


def status_lines(s: dict) -> list[str]:
    """`sweeps.sweep.status(...)` as lines: the done/planned bar with per-state counts, trunk evaluations,
    unreadable and set-aside files, per-cell progress and, for an adaptive sweep, each group's search."""
    from powersweep.sweeps.progress import bar

    done = s["planned"] - s["counts"].get("missing", 0)
    lines = [
        f"sweep {s['sweep_id']}: {done}/{s['planned']} runs done {bar(done / max(s['planned'], 1))}; "
        + ", ".join(f"{k} {v}" for k, v in sorted(s["counts"].items())),
        f"trunk evaluations: {s['trunk']['done']} of {s['trunk']['planned']} stored",
        curve_line(s["curves"]),
    ]
    lines += [
        f"  unreadable, skipped (resume moves a planned run's file aside and trains it again): {report}"
        for report in s["unreadable_files"]
    ]
    lines += [f"  set aside earlier (kept, never read): {uri}" for uri in s["set_aside_files"]]
    lines += [f"  replaced by --replace (kept, never read): {uri}" for uri in s.get("replaced", [])]
    lines += [
        f"  {cell['model']:<12} batch {cell['batch_size']:>4}  tokens {cell['tokens']:>12,}  "
        f"runs {cell['runs_done']}"
        for cell in s["cells"]
    ]
    for group in s.get("adaptive", []):
        lines += adaptive_lines(group)
    return lines


def curve_line(curves: dict) -> str:
    """How many lineages have a stored curve, or that the sweep stores none
    (its spec says `run.curves: false`)."""
    if not curves.get("on", True):
        return "curves: off (run.curves: false): none stored"
    return f"curves: {curves['stored']} of {curves['lineages']} lineages stored"


def adaptive_lines(group: dict) -> list[str]:
    """An adaptive group's rounds and, per budget, the trained lrs around its argmin."""
    pending = f", next round {len(group['pending_lrs'])} lrs" if group["pending_lrs"] else ""
    lines = [
        f"adaptive {group['model']} batch {group['batch_size']} seed {group['seed']}: "
        f"{group['rounds_done']} rounds done, {group['lrs']} lrs{pending} ({group['state']})"
    ]
    for b in group["brackets"] if group["rounds_done"] else []:  # brackets of completed rounds only
        above = "diverged" if b["above_diverged"] else _lr(b["lr_above"])
        lines.append(
            f"  tokens {b['tokens']:>12,.0f}  best lr {_lr(b['lr_best'])} in [{_lr(b['lr_below'])}, "
            f"{above}]  {'bracketed' if b['bracketed'] else 'searching'}"
        )
    return lines


def _lr(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
