"""Where a sweep's slot-time goes: the main job's sweep with one timeline line per trial.

    python benchmarks/main_job_timeline.py --storage /tmp/timeline      # sweeps/specs/cpu-quick.yaml
    python benchmarks/main_job_timeline.py --spec SPEC --storage DIR

Runs the spec through `sweeps.sweep.submit`, as `powersweep demo` does before its analysis, into a fresh
storage directory. Prints the ExecutionReport, then per trial: its worker, when its body started, its first
and last stored row (seconds since execute() began, Ray's start-up included), and its training, eval and
other seconds, all from the trials' own reports. A late first start is start-up; a gap between the last
two trials' ends is the slot left idle at the end.
"""

from __future__ import annotations

import argparse
import os
import sys

from powersweep.cli.sweep_commands import SPECS_DIR
from powersweep.sweeps import progress
from powersweep.sweeps.spec import load_spec
from powersweep.sweeps.sweep import submit

SPEC = os.path.join(SPECS_DIR, "cpu-quick.yaml")


def record_reports() -> dict:
    """Wrap Tracker.on_report to keep, per (trial, worker), its start and its first and last report times."""
    trials, on_report = {}, progress.Tracker.on_report

    def recorded(self, trial_id: str, report: dict) -> bool:
        now = self.clock() - self.start
        key = (trial_id, report["worker_pid"])
        entry = trials.setdefault(key, {"start": now - report["trial_s"], "first": now})
        entry.update(last=now, train=report["train_s"], eval=report["eval_s"], body=report["trial_s"])
        return on_report(self, trial_id, report)

    progress.Tracker.on_report = recorded
    return trials


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spec", default=SPEC)
    parser.add_argument("--storage", required=True, help="a fresh directory for the store")
    args = parser.parse_args()
    if os.path.exists(args.storage):
        parser.error(f"--storage {args.storage!r} exists: give a fresh directory, so every lineage runs")
    trials = record_reports()
    result = submit(load_spec(args.spec), storage=args.storage)
    print(result.execution.format())
    print(
        f"{'trial':>8} {'worker':>7} {'start':>7} {'first row':>9} {'end':>7} {'train':>7} {'eval':>5} "
        f"{'other':>5}"
    )
    for (trial_id, pid), t in sorted(trials.items(), key=lambda item: item[1]["start"]):
        other = t["body"] - t["train"] - t["eval"]
        print(
            f"{trial_id[-8:]:>8} {pid:>7} {t['start']:7.2f} {t['first']:9.2f} {t['last']:7.2f} "
            f"{t['train']:7.2f} {t['eval']:5.2f} {other:5.2f}"
        )
    ends = sorted(t["last"] for t in trials.values())
    if len(ends) > 1:
        print(
            f"first trial body at {min(t['start'] for t in trials.values()):.2f} s; "
            f"last two trials ended {ends[-1] - ends[-2]:.2f} s apart"
        )
    return 1 if result.failed_trials else 0


if __name__ == "__main__":
    sys.exit(main())
