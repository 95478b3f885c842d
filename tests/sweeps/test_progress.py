import io

import pytest
from test_execute import STEP, job

from powersweep.proxy_models.budgets import planned_tokens
from powersweep.sweeps.execute import missing_budgets
from powersweep.sweeps.progress import StatusPrinter, Tracker, bar


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def report(run_id: str, pid: int = 1, **seconds) -> dict:
    return {
        "run_id": run_id,
        "worker_pid": pid,
        "train_s": 0.0,
        "eval_s": 0.0,
        "trial_s": 0.0,
        "checkpoint_s": 0.0,
        **seconds,
    }


def test_tracker_counts_each_row_once_and_ends_at_the_planned_tokens():
    jobs = [job(1e-2, budgets=(STEP * 8, STEP * 16, STEP * 32)), job(3e-3)]
    tracker = Tracker(jobs, clock=Clock())
    assert tracker.tokens_planned == sum(planned_tokens(j.config, j.budgets) for j in jobs)
    fractions = []
    for j in jobs:
        for run_id in j.run_ids:
            assert tracker.on_report("trial", report(run_id))
            assert not tracker.on_report("trial", report(run_id, pid=2))  # a retry stores it again
            fractions.append(tracker.fraction_done)
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert "rows 5/5" in tracker.line() and "lineages 2/2" in tracker.line()


def test_a_later_rounds_jobs_join_the_plan_and_a_lineage_extended_by_them_ends_at_its_planned_tokens():
    first = job(1e-2, budgets=(STEP * 8,))
    extended = missing_budgets(job(1e-2, budgets=(STEP * 8, STEP * 16)), set(first.row_ids))
    assert extended.lineage_id == first.lineage_id and len(extended.run_ids) == 1  # the new budget only
    tracker = Tracker([first], clock=Clock(), rounds=True)
    tracker.on_report("a", report(first.run_ids[0]))
    assert tracker.fraction_done == pytest.approx(1.0) and tracker.line().startswith("round 1: rows 1/1 ")
    tracker.add([extended])  # the next round
    assert tracker.fraction_done < 1 and tracker.line().startswith("round 2: rows 1/2 ")
    assert "lineages 1/2" in tracker.line()
    assert tracker.on_report("b", report(extended.run_ids[0]))
    assert tracker.fraction_done == pytest.approx(1.0) and tracker.line().startswith("round 2: rows 2/2 ")
    assert "lineages 2/2" in tracker.line()
    assert Tracker([first], clock=Clock()).line().startswith("rows 0/1 ")  # a grid has no rounds


def test_eta_comes_from_the_rate_after_the_first_row_not_from_start_up():
    clock = Clock()
    j = job(1e-2, budgets=(STEP * 8, STEP * 16, STEP * 32))
    tracker = Tracker([j], clock=clock)
    clock.now = 100.0  # start-up: no row yet
    assert tracker.eta_s() is None and "eta ?" in tracker.line()
    tracker.on_report("a", report(j.run_ids[0]))
    assert tracker.eta_s() is None  # one row gives no rate
    first = tracker.fraction_done
    clock.now = 110.0
    tracker.on_report("a", report(j.run_ids[1]))
    rate = (tracker.fraction_done - first) / 10.0
    assert tracker.eta_s() == pytest.approx((1 - tracker.fraction_done) / rate)
    tracker.on_report("a", report(j.run_ids[2]))
    assert tracker.eta_s() == pytest.approx(0.0) and "eta 0s" in tracker.line()


def test_report_shares_add_up_and_count_the_latest_report_of_each_attempt():
    clock, wall = Clock(), Clock()
    wall.now = 1000.0
    tracker = Tracker([job(1e-2)], clock=clock, wall_clock=wall)
    second = job(1e-2).run_ids
    tracker.on_report("a", report(second[0], pid=1, train_s=1.0, eval_s=0.5, trial_s=2.0, started_at=1000.5))
    tracker.on_report(
        "a",
        report(
            second[1],
            pid=1,
            train_s=3.0,
            eval_s=1.0,
            trial_s=4.0,
            checkpoint_s=0.25,
            record_s=0.25,
            first_step_s=0.5,
            started_at=1000.5,
        ),
    )
    tracker.on_report("a", report(second[1], pid=2, train_s=2.0, eval_s=0.0, trial_s=2.5, started_at=1002.0))
    clock.now = 5.0  # the retry above; 0.5 s of the wall passed before the first trial began
    result = tracker.report(failed_trials=0, slots=2)
    summary = result.summary()
    assert result.startup_s == pytest.approx(0.5) and summary["startup"] == pytest.approx(0.5 * 2 / 10)
    assert summary["training"] == pytest.approx(5.0 / 10) and summary["eval"] == pytest.approx(1.0 / 10)
    assert summary["first_steps"] == pytest.approx(0.5 / 10)  # part of training, not beside it
    assert summary["checkpoints"] == pytest.approx(0.25 / 10) and summary["store_writes"] == pytest.approx(
        0.25 / 10
    )
    assert summary["trial_setup"] == pytest.approx((6.5 - 5.0 - 1.0 - 0.25 - 0.25) / 10)
    assert summary["ray_and_driver"] == pytest.approx(1 - 6.5 / 10 - 0.1)
    parts = ("training", "eval", "checkpoints", "store_writes", "trial_setup", "startup", "ray_and_driver")
    assert sum(summary[p] for p in parts) == pytest.approx(1.0) and summary[
        "outside_training"
    ] == pytest.approx(0.5)
    assert result.format().startswith(
        "wall 5s x 2 slots: training 50.0% (first steps 5.0%), outside training 50.0%"
    )
    assert "store writes 2.5%, trial setup 0.0%, start-up 10.0%, Ray and driver 25.0%" in result.format()


def test_start_up_is_none_of_the_wall_until_a_trial_reports_its_start():
    clock, wall = Clock(), Clock()
    tracker = Tracker([job(1e-2)], clock=clock, wall_clock=wall)
    clock.now = 3.0
    assert tracker.report(failed_trials=1, slots=1).startup_s == 0.0  # no trial ran: nothing to split off
    tracker.on_report("a", report(job(1e-2).run_ids[0], started_at=9.0))  # a clock ahead of the driver's
    assert tracker.report(failed_trials=0, slots=1).startup_s == 3.0  # never more than the wall


def test_the_start_up_to_the_first_step_is_split_into_parts_that_add_up():
    ids = job(1e-2).run_ids
    marks = (100.0, 101.0, 104.0)  # the driver's start, Ray's start, Ray ready
    tracker = Tracker([job(1e-2)], clock=Clock(), wall_clock=Clock(), marks=marks)
    assert tracker.report(failed_trials=0, slots=1).startup_parts == ()  # no trial reported a first step
    first = {"setup_device_s": 0.75, "setup_corpus_s": 0.25, "setup_model_s": 1.5}
    tracker.on_report(
        "a", report(ids[0], started_at=106.0, first_step_start_at=109.0, first_step_end_at=112.0, **first)
    )
    later = dict(started_at=105.0, first_step_start_at=113.0, first_step_end_at=113.5)
    tracker.on_report("b", report(ids[1], pid=2, **first, **later))  # its first step ended later: not it
    result = tracker.report(failed_trials=0, slots=1)
    assert result.startup_parts == (
        ("checks", 1.0),
        ("ray", 3.0),
        ("trial_process", 2.0),
        ("trial_setup", 0.5),
        ("device", 0.75),
        ("corpus", 0.25),
        ("model", 1.5),
        ("first_step", 3.0),
    )
    assert sum(s for _, s in result.startup_parts) == 112.0 - 100.0  # the driver's start to the step's end
    assert result.format().splitlines()[1] == (
        "to the first training step 12.0 s: checks 1.0 s, Ray's start 3.0 s, to the trial's process 2.0 s, "
        "trial setup 500 ms, device 750 ms, corpus 250 ms, model 1.5 s, first step 3.0 s"
    )
    assert result.summary()["startup_parts_s"]["first_step"] == 3.0
    assert Tracker([job(1e-2)], clock=Clock()).report(failed_trials=0, slots=1).startup_parts == ()


def test_status_printer_writes_a_line_per_interval_off_a_terminal():
    clock, out = Clock(), io.StringIO()
    tracker = Tracker([job(1e-2)], clock=clock)
    printer = StatusPrinter(tracker, stream=out, interval_s=10)
    printer.update()
    clock.now = 5.0
    printer.update()  # within the interval: nothing
    printer.update(final=True)
    assert len(out.getvalue().splitlines()) == 2
    assert bar(0.5, width=4) == "[##--]" and bar(2.0, width=2) == "[##]"
