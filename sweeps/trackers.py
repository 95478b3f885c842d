"""Experiment trackers (`run.loggers`): each lineage's training curve and stored rows, sent to TensorBoard,
MLflow or W&B through the library's own client, offline by default, under the store's `tracking/` folder.

One tracker run per lineage (per variant of a packed trial), named from its model, batch size, searched values
and seed plus its lineage id, with the lineage's resolved config as parameters. Two kinds of metrics reach it:

* per curve point, through `LineageLog.curve`: the points of the lineage's training curve
  (proxy_models.curve_recorder: every one of a segment's first 10 steps, then 40 log-spaced steps per decade,
  a point where a segment ends, and the held-out loss at each fork and budget), the same points the store
  keeps under `curves/`: `loss_train/<segment>`, `loss_train_mean/<segment>`, `lr/<segment>` and
  `loss_eval/<segment>`, where the segment is `trunk` (shared by every budget) or a budget's decay branch
  (e.g. `loss_train/125K`), at the step;
* per stored row, through `LineageLog.row`: `final/<metric>` (a budget's result) or `trunk/<metric>` (the
  trunk evaluated at a fork), for loss_eval, loss_train, diverged (0 or 1) and tokens, at the row's last step;
* with every step that gets points, `tokens` (tokens seen there, step * tokens_per_step): curves of different
  batch sizes line up on it (W&B plots against it; MLflow's charts can take it as their x axis; TensorBoard,
  whose one axis is its step, gets every point at its tokens seen).

TensorBoard also gets HParams entries (the run's model, batch size, schedule and searched values against its
final losses); MLflow keeps its artifacts beside its database; W&B groups a sweep's runs under its id.

A lineage trains its trunk up to a fork, then the branch past it, then puts the trunk back: the trainer's
steps repeat. Naming each segment apart keeps every series monotone in step, so each tracker draws it as one
line and the forks show. Ray Tune's logger callbacks (TBXLoggerCallback, MLflowLoggerCallback,
WandbLoggerCallback) run on the driver and see only what a trial reports, once per stored row, with the
trial's jobs as its config; these clients run inside the trial, next to the trainer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import itertools
import json
import logging
import os
import pathlib
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from powersweep.sweeps.spec import LOGGERS, SpecError

# Import names each logger needs, and the pip extra that installs them (pyproject.toml).
REQUIREMENTS = {
    "tensorboard": ("tensorboardX",),
    "mlflow": ("mlflow", "sqlalchemy", "alembic"),
    "wandb": ("wandb",),
}
Point = tuple[str, float, int]  # (metric key, value, step)
MLFLOW_BATCH = 1000  # metrics per log_batch call (MLflow's limit)
MLFLOW_PARAMS = 100  # params per log_batch call (MLflow's limit)


def check_loggers(loggers: Sequence[str]) -> None:
    """SpecError naming the logger and the pip extra when a logger's package is not installed here."""
    for name in loggers:
        if name not in LOGGERS:
            raise SpecError(
                f"run.loggers={list(loggers)}: {name!r} is not a logger: choose from {list(LOGGERS)}"
            )
        missing = [module for module in REQUIREMENTS[name] if importlib.util.find_spec(module) is None]
        if missing:
            raise SpecError(
                f"run.loggers={list(loggers)}: logger {name!r} needs the package {missing[0]!r}, which "
                f"is not installed: pip install 'powersweep[{name}]' (or remove {name!r})"
            )


def tracking_root(store_uri: str) -> str:
    """Where trackers write by default: `<store>/tracking` for a local store; a remote store's trackers write
    under ~/.cache/powersweep/tracking (their clients write local files)."""
    if "://" not in store_uri or store_uri.startswith("file://"):
        return os.path.join(os.path.abspath(store_uri.removeprefix("file://")), "tracking")
    return os.path.join(os.path.expanduser("~"), ".cache", "powersweep", "tracking")


@dataclasses.dataclass(frozen=True)
class Target:
    """One tracker run: where it goes and what describes it."""

    root: str  # tracking folder (see `tracking_root`)
    sweep_id: str  # TensorBoard folder, MLflow experiment and W&B project, unless the environment names them
    name: str  # readable run name
    key: str  # stable id across retries (the lineage id): a retried lineage continues its run
    params: dict  # the resolved config, flattened
    # tokens a step trains: TensorBoard's axis (one number per point) is then tokens seen; None: the step
    tokens_per_step: int | None = None


class TrackerRun(Protocol):
    """What every backend offers: log points, then finish (failed or not)."""

    def log(self, points: Sequence[Point]) -> None: ...

    def finish(self, *, failed: bool = False) -> None: ...


class TensorBoardRun:
    """A TensorBoard event file per lineage, by tensorboardX (the writer Ray Tune's TBXLoggerCallback uses):
    `<root>/tensorboard/<sweep_id>/<name>`; the config as text. Its points are at tokens seen (step *
    tokens_per_step), TensorBoard's one axis: runs of different batch sizes line up."""

    def __init__(self, target: Target):
        from tensorboardX import SummaryWriter

        self.tokens_per_step = target.tokens_per_step or 1
        self.writer = SummaryWriter(
            logdir=os.path.join(target.root, "tensorboard", target.sweep_id, target.name)
        )
        self.writer.add_text(
            "config", "```\n" + json.dumps(target.params, indent=1, sort_keys=True) + "\n```"
        )
        experiment, session_start, _ = hparams_summaries(target.params)
        for summary in (experiment, session_start):
            self.writer.file_writer.add_summary(summary)

    def log(self, points: Sequence[Point]) -> None:
        for key, value, step in points:
            self.writer.add_scalar(key, value, global_step=step * self.tokens_per_step)
        self.writer.flush()  # a person watching sees each batch of points; one write per batch

    def finish(self, *, failed: bool = False) -> None:
        self.writer.file_writer.add_summary(session_end(failed=failed))
        self.writer.close()


# What the HParams dashboard shows of a run: its cell and searched values (the fields of its own schedule)
# against its losses at the end of each budget.
HPARAMS = (
    "model", "batch_size", "tokens", "seed", "schedule.name", "schedule.lr", "schedule.power_a",
    "schedule.power_b", "schedule.lr_max", "schedule.warmup_tokens", "schedule.decay_fraction",
)  # fmt: skip
POWER_ONLY, NOT_POWER = ("schedule.power_a", "schedule.power_b", "schedule.lr_max"), ("schedule.lr",)
HPARAM_METRICS = ("final/loss_eval", "final/loss_train", "final/diverged")


def hparams_summaries(params: Mapping) -> tuple:
    """TensorBoard HParams summaries (experiment, session start, session end) of a run's `params`: the
    `HPARAMS` it has (power's a, b and lr_max only for a power schedule, lr only for the others) against
    `HPARAM_METRICS`, whose values are the run's own scalars."""
    from tensorboardX.summary import hparams

    skip = NOT_POWER if params.get("schedule.name") == "power" else POWER_ONLY
    chosen = {k: params[k] for k in HPARAMS if k in params and k not in skip and params[k] is not None}
    return hparams(chosen, dict.fromkeys(HPARAM_METRICS, 0.0))


def session_end(*, failed: bool):
    """The HParams session's end, as failed or not."""
    from tensorboardX.proto.api_pb2 import Status
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    status = Status.Value("STATUS_FAILURE" if failed else "STATUS_SUCCESS")
    content = HParamsPluginData(session_end_info=SessionEndInfo(status=status), version=0)
    metadata = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name="hparams", content=content.SerializeToString())
    )
    return Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=metadata)])


def mlflow_uri(root: str) -> str:
    """MLFLOW_TRACKING_URI when set, else an SQLite store `<root>/mlflow.db` (MLflow's own local backend; its
    file store is in maintenance mode and refused by default since MLflow 3.13)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///" + os.path.join(
        os.path.abspath(root), "mlflow.db"
    )


class MLflowRun:
    """An MLflow run per lineage through MlflowClient: experiment = MLFLOW_EXPERIMENT_NAME or the sweep id,
    the lineage id as tag `lineage_id` (a retried lineage continues its run), the config as params."""

    def __init__(self, target: Target):
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient(tracking_uri=mlflow_uri(target.root))
        experiment = mlflow_experiment(
            self.client, os.environ.get("MLFLOW_EXPERIMENT_NAME") or target.sweep_id, root=target.root
        )
        found = self.client.search_runs(
            [experiment], filter_string=f"tags.lineage_id = '{target.key}'", max_results=1
        )
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        self.run_id = self.client.create_run(
            experiment, run_name=target.name, tags={"lineage_id": target.key}
        ).info.run_id
        params = [Param(key, str(value)) for key, value in sorted(target.params.items())]
        for i in range(0, len(params), MLFLOW_PARAMS):
            self.client.log_batch(self.run_id, params=params[i : i + MLFLOW_PARAMS])

    def log(self, points: Sequence[Point]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value, step in points]
        for i in range(0, len(metrics), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + MLFLOW_BATCH])

    def finish(self, *, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def mlflow_artifacts(root: str) -> str | None:
    """Where a new MLflow experiment keeps its artifacts: `<root>/mlflow-artifacts` beside the SQLite store
    (MLflow's default is `./mlruns` in the working directory); a tracking server's own (None) when
    MLFLOW_TRACKING_URI names one."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return pathlib.Path(os.path.abspath(root), "mlflow-artifacts").as_uri()


def mlflow_experiment(client, name: str, *, root: str) -> str:
    """The id of experiment `name`, created if missing with its artifacts under `root` (`mlflow_artifacts`);
    another process may create it at the same moment."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=mlflow_artifacts(root))
    except MlflowException:
        return client.get_experiment_by_name(name).experiment_id


class WandbRun:
    """A W&B run per lineage with `wandb.init`: offline under `<root>/wandb` unless WANDB_MODE or WANDB_DIR
    say otherwise, project WANDB_PROJECT or the sweep id, group WANDB_RUN_GROUP or the sweep id, run id the
    lineage id (a retried lineage resumes it). Its metrics are plotted against `tokens`."""

    def __init__(self, target: Target):
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or target.sweep_id,
            group=os.environ.get("WANDB_RUN_GROUP") or target.sweep_id,
            name=target.name,
            id=target.key,
            resume="allow",
            config=target.params,
            reinit="create_new",
            mode=None if os.environ.get("WANDB_MODE") else "offline",
            dir=None if os.environ.get("WANDB_DIR") else _made(target.root),
            settings=wandb.Settings(console="off", silent=True),
        )
        # tokens seen, so that runs of different batch sizes line up (the trainer's step, which repeats across
        # segments, is logged too: W&B's own step must not repeat)
        self.tokens: dict[int, float] = {}  # step -> tokens seen there
        self.run.define_metric("step")
        self.run.define_metric("tokens")
        for prefix in ("loss_train", "loss_train_mean", "lr", "loss_eval", "final", "trunk"):
            self.run.define_metric(f"{prefix}/*", step_metric="tokens")

    def log(self, points: Sequence[Point]) -> None:
        self.tokens.update((step, value) for key, value, step in points if key == "tokens")
        for step, same_step in itertools.groupby(points, key=lambda point: point[2]):
            # one W&B row per step, with its tokens (sent with the step's first points) to plot against
            row = {key: value for key, value, _ in same_step} | {"step": step}
            self.run.log(row | ({"tokens": self.tokens[step]} if step in self.tokens else {}))

    def finish(self, *, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


def _made(directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    return directory


BACKENDS = {"tensorboard": TensorBoardRun, "mlflow": MLflowRun, "wandb": WandbRun}


def prepare(loggers: Sequence[str], root: str, sweep_id: str) -> None:
    """Driver side, before any trial starts: the tracking folder, and MLflow's database and experiment made
    once (concurrent trials would otherwise race to create its tables)."""
    if not loggers:
        return
    check_loggers(loggers)
    os.makedirs(root, exist_ok=True)
    if "mlflow" in loggers:
        from mlflow import MlflowClient

        logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration on the first use
        mlflow_experiment(
            MlflowClient(tracking_uri=mlflow_uri(root)),
            os.environ.get("MLFLOW_EXPERIMENT_NAME") or sweep_id,
            root=root,
        )


def budget_label(tokens: float) -> str:
    """A budget as a metric-key fragment: 125000 -> '125K', 4e6 -> '4M', 1.5e9 -> '1.5B'."""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if tokens >= scale:
            return f"{tokens / scale:.6g}{suffix}"
    return f"{tokens:.6g}"


def curve_metrics(point: Mapping) -> list[Point]:
    """A curve point (sweeps.curve_store.CURVE_SCHEMA, or a proxy_models.curve_recorder dict) as tracker
    points at its step, keyed by segment (`trunk`, or the budget's label on its decay branch): a train point
    gives `loss_train/<segment>` (that step's loss), `loss_train_mean/<segment>` (mean since the previous
    point) and `lr/<segment>`; an eval point gives `loss_eval/<segment>` (the held-out loss evaluated
    there)."""
    segment = "trunk" if point["segment"] == "trunk" else budget_label(float(point["budget"]))
    names = ("loss_eval",) if point["kind"] == "eval" else ("loss_train", "loss_train_mean", "lr")
    return [(f"{name}/{segment}", float(point[name]), int(point["step"])) for name in names]


def point_key(point: Mapping) -> tuple:
    """A curve point's key within its lineage (sweeps.curve_store.KEY):
    the trunk's budget is None, stored or not."""
    budget = None if point["segment"] == "trunk" else float(point["budget"])
    return point["segment"], budget, point["kind"], int(point["step"])


class LineageLog:
    """The tracker runs of one lineage: its curve points, each sent once, and its stored rows' metrics.

    The lineage driver hands on the whole trunk so far at every evaluation (proxy_models.lineage): a point
    whose key was sent already (`sent`, e.g. the points of the lineage's stored curve, sent by an earlier
    attempt) is not sent again, so every series stays monotone in step. A trunk and each decay branch are
    apart (`loss_train/trunk`, `loss_train/125K`), so each tracker draws each as one line and the forks show.
    """

    def __init__(self, runs: Sequence[TrackerRun], *, tokens_per_step: int, sent: Iterable[tuple] = ()):
        self.runs, self.tokens_per_step = list(runs), tokens_per_step
        self.sent = set(sent)  # point_key of every curve point the runs have
        self.token_steps = {key[3] for key in self.sent}  # steps whose `tokens` the runs have

    def skip(self, points: Iterable[Mapping]) -> None:
        """Curve points the runs already have
        (e.g. the lineage's stored curve, sent by an earlier attempt)."""
        self.sent.update(point_key(p) for p in points)
        self.token_steps.update(key[3] for key in self.sent)

    def curve(self, points: Sequence[Mapping]) -> None:
        """Send the points not sent yet (sweeps.curve_store.curve_records rows, or the recorder's dicts)."""
        new = [p for p in points if point_key(p) not in self.sent]
        self.sent.update(point_key(p) for p in new)
        if new:
            self._send([metric for p in new for metric in curve_metrics(p)])

    def row(self, row) -> None:
        """A row as it is stored (a RunResult): `<phase>/<metric>` at its last step."""
        at = round(row.tokens / self.tokens_per_step)
        metrics = {
            "loss_eval": row.loss_eval,
            "loss_train": row.loss_train,
            "diverged": float(row.status == "diverged"),
            "tokens": float(row.tokens),
        }
        self._send([(f"{row.phase}/{key}", float(value), at) for key, value in metrics.items()])

    def _send(self, points: list[Point]) -> None:
        """`points`, each step with none sent before followed by `tokens` there (step * tokens_per_step)."""
        with_tokens = []
        for step, same_step in itertools.groupby(points, key=lambda point: point[2]):
            with_tokens += same_step
            if step not in self.token_steps:
                self.token_steps.add(step)
                with_tokens.append(("tokens", float(step * self.tokens_per_step), step))
        for run in self.runs:
            run.log(with_tokens)

    def finish(self, *, failed: bool = False) -> None:
        """End every run (as failed if training raised)."""
        for run in self.runs:
            run.finish(failed=failed)


def run_name(config, lineage_id: str) -> str:
    """Readable and unique: model, batch size, the schedule's searched values, seed, lineage id."""
    s = config.schedule
    searched = f"a{s.power_a:g}_b{s.power_b:g}_max{s.lr_max:g}" if s.name == "power" else f"lr{s.lr:g}"
    name = f"{config.model}_bs{config.batch_size}_{s.name}_{searched}_s{config.seed}_{lineage_id[:8]}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", name)


def flat_params(config, **extra) -> dict:
    """The resolved config as flat `section.field` parameters (JSON scalars; lists and dicts as JSON text)."""
    flat = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = (
                value if isinstance(value, (str, int, float, bool)) or value is None else json.dumps(value)
            )

    walk("", {**dataclasses.asdict(config), **extra})
    return flat


@contextlib.contextmanager
def lineage_logs(
    members: Sequence, *, loggers: Sequence[str], root: str, sweep_id: str
) -> Iterator[list[LineageLog | None]]:
    """A LineageLog per member (a LineageJob) with a run per logger, or None each without loggers; every run
    is finished on the way out, as failed if training raised."""
    if not loggers:
        yield [None] * len(members)
        return
    logs = []
    try:
        for m in members:
            target = Target(
                root,
                sweep_id,
                run_name(m.config, m.lineage_id),
                m.lineage_id,
                flat_params(m.config, lineage_id=m.lineage_id, budgets=list(m.budgets)),
                tokens_per_step=m.config.tokens_per_step,
            )
            logs.append(LineageLog([], tokens_per_step=m.config.tokens_per_step))
            for name in loggers:
                logs[-1].runs.append(BACKENDS[name](target))
        yield logs
    except BaseException:
        for log in logs:
            log.finish(failed=True)
        raise
    for log in logs:
        log.finish()
