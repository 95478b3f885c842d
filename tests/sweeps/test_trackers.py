import importlib.util
import json
import math
import os
from pathlib import Path

import pytest
import yaml

from powersweep.cli import main
from powersweep.proxy_models.data import DataConfig, load_corpus
from powersweep.proxy_models.lineage import plan_branches, train_lineage
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.trainer import TrainConfig
from powersweep.sweeps.spec import RunSpec, SpecError, spec_from_dict
from powersweep.sweeps.store import ResultStore
from powersweep.sweeps.sweep import submit
from powersweep.sweeps.trackers import (
    BACKENDS,
    LineageLog,
    Target,
    budget_label,
    check_loggers,
    curve_metrics,
    flat_params,
    mlflow_uri,
    point_key,
    prepare,
    run_name,
    tracking_root,
)

STEP_TOKENS = 4 * 32  # batch 4 x seq_len 32
PARAMS = {"model": "cpu-xs", "schedule.lr": 0.004, "schedule.power_a": math.nan, "data.tokenizer": None}
POINTS = [
    ("loss_train/trunk", 3.5, 10),
    ("loss_train/trunk", 3.0, 20),
    ("loss_train/1K", 2.5, 30),
    ("final/loss_eval", 2.75, 32),
]


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


def in_steps(metrics: dict) -> dict:
    """TensorBoard's series (at tokens seen) at the trainer's steps, for comparing with the store's curve."""
    assert all(s % STEP_TOKENS == 0 for points in metrics.values() for s, _ in points)
    return {key: [(s // STEP_TOKENS, v) for s, v in points] for key, points in metrics.items()}


def tensorboard_hparams(root, sweep_id, name) -> dict:
    """What TensorBoard's HParams plugin reads of a run: {tag: HParamsPluginData}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    events = EventAccumulator(str(Path(root, "tensorboard", sweep_id, name)))
    events.Reload()
    return {
        tag: HParamsPluginData.FromString(data) for tag, data in events.PluginTagToContent("hparams").items()
    }


def mlflow_read(root, sweep_id, name):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri(str(root)))
    runs = client.search_runs([client.get_experiment_by_name(sweep_id).experiment_id])
    [run] = [r for r in runs if r.info.run_name == name]
    metrics = {
        key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        for key in run.data.metrics
    }
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


def test_tensorboard_hparams_show_the_runs_settings_against_its_final_losses(tmp_path):
    params = {**PARAMS, "batch_size": 4, "schedule.name": "wsd", "schedule.lr_max": 0.02, "seed": 0}
    for name, failed in (("run-a", False), ("run-b", True)):
        run = BACKENDS["tensorboard"](Target(str(tmp_path), "sw", name, name, params))
        run.log(POINTS)
        run.finish(failed=failed)
    statuses = []
    for name in ("run-a", "run-b"):
        data = tensorboard_hparams(tmp_path, "sw", name)
        experiment = data["_hparams_/experiment"].experiment
        assert [m.name.tag for m in experiment.metric_infos] == [
            "final/loss_eval",
            "final/loss_train",
            "final/diverged",
        ]
        start = data["_hparams_/session_start_info"].session_start_info.hparams
        assert start["model"].string_value == "cpu-xs" and start["batch_size"].number_value == 4
        assert start["schedule.lr"].number_value == 0.004 and start["schedule.name"].string_value == "wsd"
        assert "schedule.lr_max" not in start and "data.tokenizer" not in start  # power's only; not a setting
        statuses.append(data["_hparams_/session_end_info"].session_end_info.status)
        _, metrics, _ = tensorboard_read(tmp_path, "sw", name)
        assert metrics["final/loss_eval"] == [
            (32, 2.75)
        ]  # the metric the dashboard shows, from the run's scalars
    from tensorboard.plugins.hparams.api_pb2 import Status

    assert statuses == [Status.STATUS_SUCCESS, Status.STATUS_FAILURE]


def test_a_power_runs_hparams_are_its_coefficients():
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    from powersweep.sweeps.trackers import hparams_summaries

    params = {
        "schedule.name": "power",
        "schedule.lr": 0.01,
        "schedule.power_a": 4.0,
        "schedule.power_b": -0.51,
    }
    _, start, _ = hparams_summaries({**params, "schedule.lr_max": 0.02})
    content = start.value[0].metadata.plugin_data.content
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams.pop("schedule.name").string_value == "power"
    assert {k: v.number_value for k, v in hparams.items()} == {
        "schedule.power_a": 4.0,
        "schedule.power_b": -0.51,
        "schedule.lr_max": 0.02,
    }


def test_mlflow_keeps_its_artifacts_beside_its_database_not_in_the_working_directory(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    root = tmp_path / "store" / "tracking"
    prepare(["mlflow"], str(root), "sw")
    run = BACKENDS["mlflow"](Target(str(root), "sw", "run-a", "lineage-a", PARAMS))
    client = MlflowClient(tracking_uri=mlflow_uri(str(root)))
    client.log_text(run.run_id, "hello", "notes.txt")
    run.finish()
    artifacts = root / "mlflow-artifacts"
    assert client.get_experiment_by_name("sw").artifact_location == artifacts.as_uri()
    assert client.get_run(run.run_id).info.artifact_uri.startswith(artifacts.as_uri() + "/")
    assert [p.read_text() for p in artifacts.rglob("notes.txt")] == ["hello"]
    assert not any((tmp_path / "cwd").iterdir())  # no ./mlruns


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


def wandb_run(tmp_path) -> dict:
    """The lineage's offline run, read back with W&B's own record schema (tests/wandb_log.py)."""
    from wandb_log import read_run

    [directory] = (tmp_path / "wandb").glob("offline-run-*-lineage-a")
    return read_run(directory / "run-lineage-a.wandb")


def test_wandb_writes_an_offline_run_holding_the_config_and_metrics(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install 'powersweep[wandb]')")
    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    run = BACKENDS["wandb"](Target(str(tmp_path), "sw", "run-a", "lineage-a", PARAMS))
    run.log(POINTS)
    run.finish()
    wandb.teardown()  # returns once W&B's service has exited, its run file written
    # (finish() may return first)
    read = wandb_run(tmp_path)
    assert (read["run"].run_id, read["run"].display_name) == ("lineage-a", "run-a")
    # a NaN parameter goes to W&B as null (JSON has no NaN); the others as they are
    assert read["config"] == {
        "model": "cpu-xs",
        "schedule.lr": 0.004,
        "schedule.power_a": None,
        "data.tokenizer": None,
    }
    logged = [(key, row[key], row["step"]) for row in read["history"] for key in row if "/" in key]
    assert logged == POINTS
    assert read["exited"]


def test_wandb_groups_a_sweeps_runs_and_plots_them_against_tokens(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install 'powersweep[wandb]')")
    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_RUN_GROUP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_PROJECT", "lab")
    run = BACKENDS["wandb"](Target(str(tmp_path), "sweep-7", "run-a", "lineage-a", PARAMS))
    log = LineageLog([run], tokens_per_step=STEP_TOKENS)
    log._send(POINTS)
    log.finish()
    wandb.teardown()
    read = wandb_run(tmp_path)
    assert (read["run"].run_group, read["run"].project) == ("sweep-7", "lab")
    # every logged family is plotted against tokens seen, and each row carries its step's tokens
    assert read["metrics"]["loss_train/*"] == read["metrics"]["final/*"] == "tokens"
    assert [(row["step"], row["tokens"]) for row in read["history"]] == [
        (s, s * STEP_TOKENS) for _, _, s in POINTS
    ]


def lineage_config(log_every_steps: int) -> TrainConfig:
    return TrainConfig(
        model="cpu-xs",
        model_overrides={"seq_len": 32, "n_layers": 1},
        batch_size=4,
        tokens=STEP_TOKENS * 24,
        dtype="float64",
        data=DataConfig(eval_tokens=1024),
        schedule=ScheduleConfig(name="wsd", lr=2e-2, warmup_tokens=STEP_TOKENS * 3, decay_fraction=0.25),
        log_every_steps=log_every_steps,
    )


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(lineage_config(50).data)


def test_a_lineage_sends_each_curve_point_once_on_its_segment_then_its_rows(corpus):
    """The driver hands on the whole trunk at every evaluation; the trackers get each point once, as it was
    recorded, the trunk and each budget's branch as series of their own, each monotone in step."""
    config, budgets = lineage_config(2), [STEP_TOKENS * 8, STEP_TOKENS * 16, STEP_TOKENS * 24]
    forks = {float(b.tokens): b.fork_step for b in plan_branches(config, budgets)}
    recorder = Recorder()
    log = LineageLog([recorder], tokens_per_step=STEP_TOKENS)
    handed = []
    rows = train_lineage(
        config,
        budgets,
        corpus=corpus,
        on_curve=lambda points: (handed.extend(points), log.curve(points)),
        on_result=log.row,
    )
    log.finish()
    unique = {point_key(p): p for p in handed}
    assert recorder.finished == "ok" and len(unique) < len(handed)  # the trunk came more than once
    assert len([p for p in recorder.points if p[0].startswith("loss_train/")]) == sum(
        p["kind"] == "train" for p in unique.values()
    )
    for tokens in budgets:
        branch = [p for p in unique.values() if p["segment"] == "decay" and p["budget"] == tokens]
        label = budget_label(tokens)
        train = [p for p in branch if p["kind"] == "train"]
        for name in ("loss_train", "loss_train_mean", "lr"):
            assert recorder.series(f"{name}/{label}") == [(p["step"], p[name]) for p in train]
        assert all(step > forks[tokens] for step, _ in recorder.series(f"loss_train/{label}"))
    trunk = [p for p in unique.values() if p["segment"] == "trunk" and p["kind"] == "train"]
    assert recorder.series("loss_train/trunk") == [(p["step"], p["loss_train"]) for p in trunk]
    assert (
        recorder.series("lr/trunk")[:3] == [(p["step"], p["lr"]) for p in trunk[:3]] and trunk[0]["step"] == 1
    )
    final_eval = [(t // STEP_TOKENS, r.loss_eval) for t, r in zip(budgets, rows)]
    assert [recorder.series(f"loss_eval/{budget_label(t)}")[0] for t in budgets] == final_eval
    assert recorder.series("final/loss_eval") == final_eval
    for key in {p[0] for p in recorder.points} - {"tokens"}:
        steps = [s for s, _ in recorder.series(key)]
        assert steps == sorted(set(steps)), key
    every_step = sorted({step for key, _, step in recorder.points if key != "tokens"})
    # tokens once per step that got points (a branch's steps come before the trunk's between them)
    assert sorted(recorder.series("tokens")) == [(step, step * STEP_TOKENS) for step in every_step]


def test_points_sent_by_an_earlier_attempt_are_not_sent_again():
    points = [
        {
            "segment": "trunk",
            "budget": math.nan,
            "kind": "train",
            "step": s,
            "lr": 0.01,
            "loss_train": 3.0,
            "loss_train_mean": 3.1,
        }
        for s in (1, 2, 3)
    ]
    points.append({"segment": "decay", "budget": 1000.0, "kind": "eval", "step": 8, "loss_eval": 2.5})
    recorder = Recorder()
    stored = [
        {**points[0], "budget": None},
        points[3],
    ]  # as the store reads them back: the trunk's budget is null
    log = LineageLog([recorder], tokens_per_step=STEP_TOKENS, sent={point_key(p) for p in stored})
    log.curve(points)
    log.curve(points)
    assert recorder.series("loss_train/trunk") == [(2, 3.0), (3, 3.0)]
    assert recorder.series("loss_train_mean/trunk") == [(2, 3.1), (3, 3.1)]
    assert recorder.series("loss_eval/1K") == []


def test_rows_give_final_and_trunk_metrics_at_their_last_step(corpus):
    config, budgets = lineage_config(1000), [STEP_TOKENS * 8, STEP_TOKENS * 24]
    recorder = Recorder()
    log = LineageLog([recorder], tokens_per_step=STEP_TOKENS)
    rows = train_lineage(config, budgets, corpus=corpus, on_result=log.row)
    assert recorder.series("final/loss_eval") == [
        (t // STEP_TOKENS, r.loss_eval) for t, r in zip(budgets, rows)
    ]
    assert recorder.series("final/diverged") == [(t // STEP_TOKENS, 0.0) for t in budgets]
    assert [s for s, _ in recorder.series("trunk/loss_eval")] == [
        b.fork_step for b in plan_branches(config, budgets)
    ]


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
    "train": {
        "warmup_tokens": 128,
        "seq_len": 32,
        "model_overrides": {"n_layers": 1},
        "data": {"eval_tokens": 1024},
    },
}


@pytest.mark.parametrize(
    "loggers, fragment",
    [
        (
            ["tensorbord"],
            "run.loggers=['tensorbord']: 'tensorbord' is not a logger: choose from "
            "['tensorboard', 'mlflow', 'wandb']",
        ),
        (["mlflow", "mlflow"], "run.loggers=['mlflow', 'mlflow']: "),
        ("mlflow", "run.loggers='mlflow': "),
    ],
)
def test_spec_refuses_unknown_or_repeated_loggers_in_one_line(loggers, fragment):
    with pytest.raises(SpecError) as error:
        spec_from_dict({**TINY, "run": {"loggers": loggers}})
    assert str(error.value).startswith(fragment) and "\n" not in str(error.value)


def test_loggers_are_off_by_default():
    assert spec_from_dict(TINY).run.loggers == []


def test_a_missing_logger_package_stops_plan_and_submit_naming_the_extra(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
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
    result = submit(
        spec_from_dict({**TINY, "run": {"loggers": ["tensorboard", "mlflow"]}}),
        storage=str(tmp_path / "store"),
    )
    assert result.failed_trials == 0 and result.lineages_run == 2
    table = ResultStore(result.storage).read(sweep_id="tiny").table
    root = tmp_path / "store" / "tracking"
    names = sorted(p.name for p in (root / "tensorboard" / "tiny").iterdir())
    assert len(names) == 2
    for name in names:
        for logger, read in READERS.items():
            params, metrics, status = read(root, "tiny", name)
            if logger == "tensorboard":  # its one axis is tokens seen: curves of any batch size line up
                assert all(s == v for s, v in metrics["tokens"])
                metrics = in_steps(metrics)
            rows = table[(table["lineage_id"] == params["lineage_id"]) & (table["phase"] == "final")]
            expected = sorted((int(t) // STEP_TOKENS, v) for t, v in zip(rows["tokens"], rows["loss_eval"]))
            assert [s for s, _ in metrics["final/loss_eval"]] == [s for s, _ in expected], logger
            assert [v for _, v in metrics["final/loss_eval"]] == pytest.approx(
                [v for _, v in expected], rel=1e-6
            )
            assert_same_series(
                curve_series(metrics), stored_series(result.storage, "tiny", params["lineage_id"])
            )
            assert status in (None, "FINISHED")
            tokens = sorted(metrics["tokens"])  # the tokens axis: one point per step that got points
            assert tokens == [(s, s * STEP_TOKENS) for s in sorted({s for s, _ in tokens})], logger
            assert {s for s, _ in metrics["final/loss_eval"]} <= {s for s, _ in tokens}
        assert "_hparams_/session_start_info" in tensorboard_hparams(root, "tiny", name)


CURVE_METRICS = ("loss_train/", "loss_train_mean/", "lr/", "loss_eval/")


def curve_series(metrics: dict) -> dict:
    """A tracker run's curve metrics (its row metrics left out)."""
    return {key: points for key, points in metrics.items() if key.startswith(CURVE_METRICS)}


def stored_series(storage, sweep_id: str, lineage_id: str) -> dict:
    """The store's curve of a lineage as the metric series trackers should hold: {key: [(step, value)]}."""
    series = {}
    for point in ResultStore(storage).read_curve(sweep_id=sweep_id, name=lineage_id).to_pylist():
        for key, value, step in curve_metrics(point):
            series.setdefault(key, []).append((step, value))
    return series


def assert_same_series(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key, points in expected.items():
        assert [s for s, _ in got[key]] == [s for s, _ in points], key
        assert [v for _, v in got[key]] == pytest.approx([v for _, v in points], rel=1e-6), key  # TB: float32


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """One packed trial of two lrs run with TensorBoard, curves stored and not:
    (trial, {curves: settings, rows})."""
    from powersweep.sweeps.execute import ExecutionSettings, run_job
    from powersweep.sweeps.plan import plan

    [trial] = plan(spec_from_dict({**TINY, "run": {"pack": 2}})).trials
    runs = {}
    for curves in (True, False):
        root = tmp_path_factory.mktemp(f"curves-{str(curves).lower()}")
        settings = ExecutionSettings(
            store_uri=str(root / "store"),
            sweep_id="tiny",
            checkpoint_root=str(root),
            run=RunSpec(loggers=["tensorboard"], curves=curves),
        )
        runs[curves] = settings, run_job(trial, settings)
    return trial, runs


def test_each_member_of_a_packed_trial_gets_its_own_run_with_its_rows_and_its_curve(packed):
    trial, runs = packed
    settings, rows = runs[True]
    root = tracking_root(settings.store_uri)  # the default: under the store
    trunks = []
    for member, member_rows in zip(trial.members, rows):
        params, metrics, _ = tensorboard_read(root, "tiny", run_name(member.config, member.lineage_id))
        metrics = in_steps(metrics)
        assert (
            params["lineage_id"] == member.lineage_id and params["schedule.lr"] == member.config.schedule.lr
        )
        assert [v for _, v in metrics["final/loss_eval"]] == pytest.approx(
            [r.loss_eval for r in member_rows], rel=1e-6
        )
        assert_same_series(
            curve_series(metrics), stored_series(settings.store_uri, "tiny", member.lineage_id)
        )
        assert {"loss_train/trunk", "lr/8.192K", "loss_eval/16.384K"} <= set(metrics)
        trunks.append(metrics["lr/trunk"])
    assert trunks[0] != trunks[1]  # each variant's own curve (its own lr), not the pack's first


def test_with_curves_off_nothing_is_stored_and_the_trackers_get_the_same_points(packed):
    trial, runs = packed
    (on, on_rows), (off, off_rows) = runs[True], runs[False]
    assert not os.path.exists(os.path.join(off.store_uri, "curves"))
    assert os.path.exists(os.path.join(on.store_uri, "curves"))
    assert [[r.loss_eval for r in rows] for rows in off_rows] == [
        [r.loss_eval for r in rows] for rows in on_rows
    ]
    for member in trial.members:
        name = run_name(member.config, member.lineage_id)
        _, metrics_off, _ = tensorboard_read(tracking_root(off.store_uri), "tiny", name)
        _, metrics_on, _ = tensorboard_read(tracking_root(on.store_uri), "tiny", name)
        assert curve_series(metrics_off) and metrics_off == metrics_on


def test_a_lineage_trained_again_does_not_send_the_stored_curve_points_twice(tmp_path):
    """Its last budget's row lost, the lineage trains again from its checkpoint and the driver hands on the
    whole trunk again: the MLflow run it continues holds each point once."""
    from test_faults import drop_row

    from powersweep.sweeps.execute import ExecutionSettings, missing_rows, run_job
    from powersweep.sweeps.plan import plan

    job = plan(spec_from_dict(TINY)).jobs[0]
    settings = ExecutionSettings(
        store_uri=str(tmp_path / "store"),
        sweep_id="tiny",
        checkpoint_root=str(tmp_path),
        run=RunSpec(loggers=["mlflow"]),
    )
    root = tracking_root(settings.store_uri)
    prepare(["mlflow"], root, "tiny")
    run_job(job, settings)
    _, first, _ = mlflow_read(root, "tiny", run_name(job.config, job.lineage_id))
    drop_row(settings.store_uri, job.run_ids[-1])
    stored = set(job.row_ids) - {job.run_ids[-1]}
    run_job(missing_rows(job, stored), settings)
    _, again, status = mlflow_read(root, "tiny", run_name(job.config, job.lineage_id))
    assert status == "FINISHED" and ResultStore(settings.store_uri).has(sweep_id="tiny", name=job.run_ids[-1])
    assert_same_series(curve_series(again), stored_series(settings.store_uri, "tiny", job.lineage_id))
    assert curve_series(again) == curve_series(first)
