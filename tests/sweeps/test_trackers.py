import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import pytest
import yaml

from proxy_models.data import DataConfig, load_corpus
from proxy_models.lineage import plan_branches, train_lineage
from proxy_models.schedules import ScheduleConfig
from proxy_models.trainer import TrainConfig, Trainer
from sweeps.cli import main
from sweeps.spec import SpecError, spec_from_dict
from sweeps.store import ResultStore
from sweeps.sweep import submit
from sweeps.trackers import (
    BACKENDS,
    LineageLog,
    Target,
    budget_label,
    check_loggers,
    flat_params,
    mlflow_uri,
    prepare,
    run_name,
    tracking_root,
)

STEP_TOKENS = 4 * 32  # batch 4 x seq_len 32
PARAMS = {"model": "cpu-xs", "schedule.lr": 0.004, "schedule.power_a": math.nan, "data.tokenizer": None}
POINTS = [("loss_train/trunk", 3.5, 10), ("loss_train/trunk", 3.0, 20), ("loss_train/1K", 2.5, 30),
          ("final/loss_eval", 2.75, 32)]


class Recorder:
    """A tracker run that keeps what it is sent."""

    def __init__(self):
        self.points, self.finished = [], None

    def log(self, points):
        self.points.extend(points)

    def finish(self, *, failed=False):
        self.finished = "failed" if failed else "ok"

    def series(self, key):
        return [(step, value) for k, value, step in self.points if k == key]


def tensorboard_read(root, sweep_id, name):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(root, "tensorboard", sweep_id, name)))
    events.Reload()
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    params = json.loads(text.strip().strip("`"))
    metrics = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return params, metrics, None


def mlflow_read(root, sweep_id, name):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri(str(root)))
    runs = client.search_runs([client.get_experiment_by_name(sweep_id).experiment_id])
    [run] = [r for r in runs if r.info.run_name == name]
    metrics = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
               for key in run.data.metrics}
    return run.data.params, metrics, run.info.status


READERS = {"tensorboard": tensorboard_read, "mlflow": mlflow_read}


@pytest.mark.parametrize("logger", sorted(READERS))
def test_each_backend_writes_params_and_metric_histories_that_read_back(tmp_path, logger):
    prepare([logger], str(tmp_path), "sw")
    run = BACKENDS[logger](Target(str(tmp_path), "sw", "run-a", "lineage-a", PARAMS))
    run.log(POINTS[:2])
    run.log(POINTS[2:])
    run.finish()
    params, metrics, status = READERS[logger](tmp_path, "sw", "run-a")
    assert {k: str(v) for k, v in params.items()} == {k: str(v) for k, v in PARAMS.items()}
    assert metrics == {key: [(step, value) for k, value, step in POINTS if k == key] for key, *_ in POINTS}
    assert status in (None, "FINISHED")


def test_a_retried_lineage_continues_its_mlflow_run(tmp_path):
    target = Target(str(tmp_path), "sw", "run-a", "lineage-a", PARAMS)
    first = BACKENDS["mlflow"](target)
    first.log(POINTS[:1])
    first.finish(failed=True)
    again = BACKENDS["mlflow"](target)
    assert again.run_id == first.run_id
    again.log(POINTS[1:2])
    again.finish()
    _, metrics, status = mlflow_read(tmp_path, "sw", "run-a")
    assert metrics["loss_train/trunk"] == [(10, 3.5), (20, 3.0)] and status == "FINISHED"


def test_mlflow_follows_its_environment(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    prepare(["mlflow"], str(tmp_path / "tracking"), "sw")
    run = BACKENDS["mlflow"](Target(str(tmp_path / "tracking"), "sw", "run-a", "lineage-a", PARAMS))
    run.finish()
    assert elsewhere.exists() and not (tmp_path / "tracking" / "mlflow.db").exists()
    _, _, status = mlflow_read(tmp_path, "mine", "run-a")
    assert status == "FINISHED"


def test_wandb_writes_an_offline_run_holding_the_config_and_metrics(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install 'powersweep[wandb]')")
    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    run = BACKENDS["wandb"](Target(str(tmp_path), "sw", "run-a", "lineage-a", PARAMS))
    run.log(POINTS)
    run.finish()
    wandb.teardown()  # returns once W&B's service has exited, its run file written (finish() may return first)
    [directory] = (tmp_path / "wandb").glob("offline-run-*-lineage-a")
    data = (directory / "run-lineage-a.wandb").read_bytes()
    assert data.startswith(b":W&B")  # W&B's own record log, which `wandb sync` uploads
    for fragment in (b"run-a", b"schedule.lr", b"0.004", b"loss_train/trunk", b"final/loss_eval", b"2.75"):
        assert fragment in data


def lineage_config(log_every_steps: int) -> TrainConfig:
    return TrainConfig(model="cpu-xs", model_overrides={"seq_len": 32, "n_layers": 1}, batch_size=4,
                       tokens=STEP_TOKENS * 24, dtype="float64", data=DataConfig(eval_tokens=1024),
                       schedule=ScheduleConfig(name="wsd", lr=2e-2, warmup_tokens=STEP_TOKENS * 3,
                                               decay_fraction=0.25),
                       log_every_steps=log_every_steps)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(lineage_config(50).data)


def test_a_lineage_curve_splits_into_its_trunk_and_each_budget_s_solo_curve(corpus):
    """Trunk points up to a budget's fork followed by its branch points are the curve of a solo run of that
    budget, and every series is monotone in step."""
    config, budgets = lineage_config(2), [STEP_TOKENS * 8, STEP_TOKENS * 16, STEP_TOKENS * 24]
    forks = {float(b.tokens): b.fork_step for b in plan_branches(config, budgets)}
    recorder = Recorder()
    log = LineageLog([recorder], forks=forks, tokens_per_step=STEP_TOKENS)
    calls = []
    train_lineage(config, budgets, corpus=corpus, log=lambda p: (calls.append(p), log.step(p)), on_result=log.row)
    log.finish()
    assert recorder.finished == "ok" and not log.pending
    trunk = recorder.series("loss_train/trunk")
    branch_points = [p for p in recorder.points if p[0].startswith("loss_train/") and p[0] != "loss_train/trunk"]
    assert len(trunk) + len(branch_points) == len(calls)  # every point once
    for tokens in budgets:
        solo = []
        Trainer(dataclasses.replace(config, tokens=tokens), corpus=corpus,
                log=lambda p: solo.append((p["step"], p["loss_train"]))).run()
        branch = recorder.series(f"loss_train/{budget_label(tokens)}")
        assert all(step > forks[tokens] for step, _ in branch)
        lineage_curve = [p for p in trunk if p[0] <= forks[tokens]] + branch
        assert [s for s, _ in lineage_curve] == [s for s, _ in solo]
        assert [v for _, v in lineage_curve] == pytest.approx([v for _, v in solo], rel=1e-9)
    for key in {p[0] for p in recorder.points}:
        steps = [s for s, _ in recorder.series(key)]
        assert steps == sorted(set(steps)), key
    assert [s for s, _ in recorder.series("final/tokens")] == [t // STEP_TOKENS for t in budgets]


def test_rows_give_final_and_trunk_metrics_at_their_last_step(corpus):
    config, budgets = lineage_config(1000), [STEP_TOKENS * 8, STEP_TOKENS * 24]
    recorder = Recorder()
    log = LineageLog([recorder], forks={}, tokens_per_step=STEP_TOKENS)
    rows = train_lineage(config, budgets, corpus=corpus, on_result=log.row)
    assert recorder.series("final/loss_eval") == [(t // STEP_TOKENS, r.loss_eval) for t, r in zip(budgets, rows)]
    assert recorder.series("final/diverged") == [(t // STEP_TOKENS, 0.0) for t in budgets]
    assert [s for s, _ in recorder.series("trunk/loss_eval")] == [b.fork_step for b in plan_branches(config, budgets)]


def test_run_names_and_params_describe_the_lineage():
    config = lineage_config(50)
    assert run_name(config, "0123456789abcdef") == "cpu-xs_bs4_wsd_lr0.02_s0_01234567"
    params = flat_params(config, lineage_id="x", budgets=[1.0, 2.0])
    assert params["schedule.lr"] == 0.02 and params["model_overrides.seq_len"] == 32
    assert params["budgets"] == "[1.0, 2.0]"
    assert params["data.tokenizer"] is None and params["lineage_id"] == "x"
    assert [budget_label(t) for t in (512, 125e3, 4e6, 1.5e9)] == ["512", "125K", "4M", "1.5B"]


def test_tracking_goes_under_a_local_store_and_to_a_cache_for_a_remote_one(tmp_path):
    assert tracking_root(str(tmp_path)) == str(tmp_path / "tracking")
    assert tracking_root(f"file://{tmp_path}") == str(tmp_path / "tracking")
    assert tracking_root("s3://bucket/runs").endswith("/.cache/powersweep/tracking")


TINY = {
    "name": "tiny",
    "search": {"models": ["cpu-xs"], "batch_size": [4], "lr": [0.004, 0.016], "tokens": [8192, 16384]},
    "train": {"warmup_tokens": 128, "seq_len": 32, "model_overrides": {"n_layers": 1}, "data": {"eval_tokens": 1024}},
}


@pytest.mark.parametrize("loggers, fragment", [
    (["tensorbord"], "run.loggers=['tensorbord']: 'tensorbord' is not a logger: choose from "
                     "['tensorboard', 'mlflow', 'wandb']"),
    (["mlflow", "mlflow"], "run.loggers=['mlflow', 'mlflow']: "),
    ("mlflow", "run.loggers='mlflow': "),
])
def test_spec_refuses_unknown_or_repeated_loggers_in_one_line(loggers, fragment):
    with pytest.raises(SpecError) as error:
        spec_from_dict({**TINY, "run": {"loggers": loggers}})
    assert str(error.value).startswith(fragment) and "\n" not in str(error.value)


def test_loggers_are_off_by_default():
    assert spec_from_dict(TINY).run.loggers == []


def test_a_missing_logger_package_stops_plan_and_submit_naming_the_extra(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    needs = r"logger 'mlflow' needs the package 'mlflow'.*pip install 'powersweep\[mlflow\]'"
    with pytest.raises(SpecError, match=needs):
        check_loggers(["tensorboard", "mlflow"])
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "run": {"loggers": ["mlflow"]}}))
    assert main(["plan", str(spec)]) == 2
    assert main(["submit", str(spec), "--storage", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("powersweep[mlflow]" in line for line in err)
    assert not (tmp_path / "store").exists()  # nothing written


@pytest.mark.slow
def test_a_sweep_with_loggers_sends_each_lineage_its_curve_and_stored_rows(tmp_path, local_ray):
    result = submit(spec_from_dict({**TINY, "run": {"loggers": ["tensorboard", "mlflow"]}}),
                    storage=str(tmp_path / "store"))
    assert result.failed_trials == 0 and result.lineages_run == 2
    table = ResultStore(result.storage).read(sweep_id="tiny").table
    root = tmp_path / "store" / "tracking"
    names = sorted(p.name for p in (root / "tensorboard" / "tiny").iterdir())
    assert len(names) == 2
    for name in names:
        for logger, read in READERS.items():
            params, metrics, status = read(root, "tiny", name)
            rows = table[(table["lineage_id"] == params["lineage_id"]) & (table["phase"] == "final")]
            expected = sorted((int(t) // STEP_TOKENS, v) for t, v in zip(rows["tokens"], rows["loss_eval"]))
            assert [s for s, _ in metrics["final/loss_eval"]] == [s for s, _ in expected], logger
            assert [v for _, v in metrics["final/loss_eval"]] == pytest.approx([v for _, v in expected], rel=1e-6)
            assert [s for s, _ in metrics["loss_train/trunk"]] == [50, 100], logger  # every 50 steps
            assert status in (None, "FINISHED")


def test_each_member_of_a_packed_trial_gets_its_own_run_with_its_rows(tmp_path):
    from sweeps.execute import ExecutionSettings, run_job
    from sweeps.plan import plan

    [trial] = plan(spec_from_dict({**TINY, "run": {"pack": 2}})).trials
    settings = ExecutionSettings(store_uri=str(tmp_path / "store"), sweep_id="tiny", checkpoint_root=str(tmp_path),
                                 loggers=("tensorboard",))
    rows = run_job(trial, settings)
    root = tmp_path / "store" / "tracking"  # the default: under the store
    for member, member_rows in zip(trial.members, rows):
        params, metrics, _ = tensorboard_read(root, "tiny", run_name(member.config, member.lineage_id))
        assert params["lineage_id"] == member.lineage_id and params["schedule.lr"] == member.config.schedule.lr
        assert [v for _, v in metrics["final/loss_eval"]] == pytest.approx([r.loss_eval for r in member_rows], rel=1e-6)
        assert not any(key.startswith("loss_train/") for key in metrics)  # packed trials send rows only
