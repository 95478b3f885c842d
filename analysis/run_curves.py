"""Training curves in the analysis: read a store's curve files, each run's curve, and a spike detector.

A store keeps each lineage's curve beside its results (``<store>/curves/sweep_id=<id>/<lineage_id>.parquet``,
written by the sweep; columns in docs/reference/store.md, "Training curves"). A run's curve is its
lineage's trunk up to the run's fork, then the run's own decay branch.

A **spike** is a near-divergence: the mean training loss over a window of ``SPIKE_WINDOW_STEPS`` (100) steps
rises more than ``SPIKE_RISE`` (20%) above the lowest window mean before it, then comes back within
``SPIKE_RECOVER`` (5%) of that minimum. A rise that never comes back is a divergence, not a spike.

>>> curves = load_curves("runs/cpu-quick/results")       # empty when the store has no curves
>>> table = mark_spikes(load_table("runs/cpu-quick/results"), curves)
>>> table[["run_id", "spike", "spike_rise"]]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.order import model_order
from powersweep.analysis.table import concat_frames
from powersweep.file_threads import map_threads
from powersweep.store_layout import CURVES_DIR, PARTITION, curve_owners, is_merged, sources

SPIKE_RISE = 0.2  # relative rise of the mean train loss above its running minimum that counts as a jump
SPIKE_RECOVER = 0.05  # back within this of that minimum afterwards: the run recovered (a spike)
# the loss is looked at as means over windows of at least this many steps: one step's loss at batch 4 x 64
# varies by tens of percent, a 100-step mean by a few
SPIKE_WINDOW_STEPS = 100
_KEYS = ["sweep_id", "lineage_id"]
_COLUMNS = [
    "sweep_id",
    "lineage_id",
    "run_id",
    "segment",
    "budget",
    "fork_tokens",
    "kind",
    "step",
    "tokens",
    "lr",
    "loss_train",
    "loss_train_mean",
    "loss_eval",
]


def curve_roots(source: str | Path) -> list[Path]:
    """The curve folders of the store(s) a results table is read from: ``<store>/curves`` beside a ``results``
    directory, and every ``curves`` folder under a directory of stores."""
    path = Path(source)
    if not path.is_dir():
        return []
    roots = [path.parent / CURVES_DIR] if path.name == "results" else []
    roots += [p for p in path.rglob(CURVES_DIR) if p.is_dir()]
    return sorted({r.resolve() for r in roots if r.is_dir()})


def load_curves(source: str | Path) -> pd.DataFrame:
    """Every curve point of the store(s) of a results table (see ``curve_roots``), with a ``sweep_id`` column,
    one copy of each lineage's points (a lineage's own file, else the newest compacted file holding it:
    ``store_layout.curve_owners``); empty when there are none. Unreadable files are skipped and named in
    ``attrs["skipped_files"]``."""
    tables, skipped = [], []
    for root in curve_roots(source):
        for folder in sorted(root.glob(f"{PARTITION}=*")):
            paths = [p for p in sorted(folder.glob("*.parquet")) if not p.name.startswith((".", "_"))]
            loaded = {}
            for path, table in zip(paths, map_threads(_read_curve, paths)):
                if isinstance(table, Exception):
                    skipped.append(f"{path}: {table}")
                else:
                    loaded[path.stem] = (table, sources(path.stem, table.schema.metadata))
            owners = curve_owners((name, held) for name, (_, held) in loaded.items())
            sweep_id = folder.name.partition("=")[2]
            for name, (table, _) in loaded.items():
                if is_merged(name):
                    mine = pa.array(
                        [lineage for lineage, owner in owners.items() if owner == name], pa.string()
                    )
                    table = table.filter(pc.is_in(table["lineage_id"], value_set=mine))
                if "sweep_id" in table.column_names:  # the folder's name is the sweep's
                    table = table.drop_columns(["sweep_id"])
                tables.append(
                    table.append_column("sweep_id", pa.array([sweep_id] * table.num_rows, pa.string()))
                )
    curves = concat_frames(tables) if tables else pd.DataFrame(columns=_COLUMNS)
    curves.attrs["skipped_files"] = skipped
    return curves


def _read_curve(path: Path) -> pa.Table | Exception:
    """A curve file's table, or why it cannot be read."""
    try:
        with pq.ParquetFile(path) as file:
            return file.read()
    except (OSError, ValueError, pa.ArrowException) as err:
        return err


def run_curves(curves: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """(sweep_id, run_id) -> the run's training points in token order: its lineage's trunk up to its fork,
    then its decay branch."""
    train = curves[curves["kind"].eq("train")]
    trunks = {key: t for key, t in train[train["segment"].eq("trunk")].groupby(_KEYS)}
    out = {}
    for (sweep_id, run_id), decay in curves[curves["segment"].eq("decay")].groupby(["sweep_id", "run_id"]):
        trunk = trunks.get((sweep_id, decay["lineage_id"].iloc[0]))
        fork = decay["fork_tokens"].iloc[0]
        parts = [trunk[trunk["tokens"] <= fork]] if trunk is not None else []
        parts.append(decay[decay["kind"].eq("train")])
        parts = [p for p in parts if len(p)]
        if parts:
            out[(sweep_id, run_id)] = pd.concat(parts).sort_values("tokens", kind="stable")
    return out


@dataclass(frozen=True)
class Points:
    """Training points of one curve in token order, as arrays: what the window means and the detector read
    (thousands of runs a table: no DataFrame per run)."""

    tokens: np.ndarray
    step: np.ndarray  # float
    mean_steps: np.ndarray  # float; NaN where the curve does not say
    loss: np.ndarray  # the mean train loss since the previous point

    @classmethod
    def of(cls, curve: pd.DataFrame) -> Points:
        """The train points of ``curve`` (a run's, or a segment's), sorted by tokens."""
        points = _columns(curve[curve["kind"].eq("train")] if "kind" in curve else curve)
        return points.sorted()

    def sorted(self) -> Points:
        """In token order (points at equal tokens keep theirs)."""
        return self.take(np.argsort(self.tokens, kind="stable"))

    def take(self, index: np.ndarray) -> Points:
        return Points(self.tokens[index], self.step[index], self.mean_steps[index], self.loss[index])


def run_points(curves: pd.DataFrame) -> dict[tuple[str, str], Points]:
    """``run_curves`` as ``Points``: (sweep_id, run_id) -> its lineage's trunk up to its fork, then its decay
    branch, in token order. Works on the columns' arrays: a table of 10^5 runs makes no frame per run."""
    if curves.empty:
        return {}
    every = _columns(curves)
    train, segment = curves["kind"].eq("train").to_numpy(), curves["segment"].to_numpy()
    trunks = {key: every.take(rows) for key, rows in _groups(curves, train & (segment == "trunk"), _KEYS)}
    lineage, fork = curves["lineage_id"].to_numpy(), curves["fork_tokens"].to_numpy(dtype=float)
    out = {}
    for key, rows in _groups(curves, segment == "decay", ["sweep_id", "run_id"]):
        parts = [every.take(rows[train[rows]])]
        trunk = trunks.get((key[0], lineage[rows[0]]))
        if trunk is not None:
            parts.insert(0, trunk.take(np.flatnonzero(trunk.tokens <= fork[rows[0]])))
        points = Points(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in Points.__dataclass_fields__)
        )
        if len(points.tokens):
            out[key] = points.sorted()
    return out


def _columns(frame: pd.DataFrame) -> Points:
    """Every row of ``frame`` as ``Points``, in its order."""
    steps = frame["mean_steps"] if "mean_steps" in frame else pd.Series(np.nan, index=frame.index)
    return Points(
        frame["tokens"].to_numpy(),
        frame["step"].to_numpy(dtype=float),
        pd.to_numeric(steps).to_numpy(dtype=float, na_value=np.nan),
        pd.to_numeric(frame["loss_train_mean"]).to_numpy(dtype=float, na_value=np.nan),
    )


def _groups(frame: pd.DataFrame, mask: np.ndarray, keys: list[str]):
    """(key, positions in ``frame``) of each group of ``keys`` among the rows ``mask`` selects."""
    chosen = np.flatnonzero(mask)
    for key, rows in frame.iloc[chosen].groupby(keys).indices.items():
        yield key, chosen[rows]


@dataclass(frozen=True)
class Spike:
    """What the detector found on one run's curve."""

    flagged: bool  # the loss jumped and came back: a near-divergence
    rise: float  # the largest relative rise of the mean train loss above its running minimum (0 if none)
    at_tokens: float  # where that rise is (NaN if none)
    loss: float  # the mean train loss there (NaN if none)


def window_means(
    curve: pd.DataFrame, *, window: int = SPIKE_WINDOW_STEPS, relative: float = 0.0
) -> pd.DataFrame:
    """A run's mean train loss pooled, in token order, into windows of at least ``window`` steps, and of at
    least ``relative`` times the step where the window ends (tokens and step of each window's end, ``loss``).
    A point added where a segment ends covers steps that the next grid point covers again, so it is left out;
    curves without ``mean_steps`` count the steps since the previous point."""
    tokens, step, loss = _windows(Points.of(curve), window=window, relative=relative)
    return pd.DataFrame({"tokens": tokens, "step": step, "loss": loss})


def _windows(points: Points, *, window: float, relative: float) -> tuple[list, list, list]:
    """``window_means`` on ``Points``: the (tokens, step, loss) of each window's end."""
    step, n = points.step, points.mean_steps
    if not len(step):
        return [], [], []
    since_previous = np.diff(step, prepend=step[0] - 1)  # a segment's first point: 1 step
    n = np.where(np.isfinite(n), n, since_previous)
    covered_again = np.append(step[1:] - n[1:] < step[:-1], False)
    tokens, ends, means = [], [], []
    total, steps, last = 0.0, 0.0, len(step) - 1
    loss, token_list, step_list, n_list = (
        points.loss.tolist(),
        points.tokens.tolist(),
        step.tolist(),
        n.tolist(),
    )
    for i in np.flatnonzero(~covered_again).tolist():
        total, steps = total + loss[i] * n_list[i], steps + n_list[i]
        if steps >= max(window, relative * step_list[i]) or i == last:
            tokens.append(token_list[i])
            ends.append(step_list[i])
            means.append(total / steps)
            total, steps = 0.0, 0.0
    return tokens, ends, means


def detect_spike(
    curve: pd.DataFrame,
    *,
    rise: float = SPIKE_RISE,
    recover: float = SPIKE_RECOVER,
    window: int = SPIKE_WINDOW_STEPS,
) -> Spike:
    """Whether one run's curve jumped by more than ``rise`` above its running minimum and later came back
    within ``recover`` of it, looking at the mean loss of windows of ``window`` steps (``window_means``). A
    non-finite loss, or a jump that never comes back, is a divergence: not flagged."""
    return _spike(Points.of(curve), rise=rise, recover=recover, window=window)


def _spike(points: Points, *, rise: float, recover: float, window: int = SPIKE_WINDOW_STEPS) -> Spike:
    tokens, _, means = _windows(points, window=window, relative=0.0)
    loss = np.asarray(means, dtype=float)
    if len(loss) < 3 or not np.isfinite(loss).all():
        return Spike(False, 0.0, np.nan, np.nan)
    floor = np.minimum.accumulate(loss)[:-1]  # the lowest mean before each later window
    rel = loss[1:] / floor - 1
    peak = int(np.argmax(rel))
    found = Spike(False, max(float(rel[peak]), 0.0), float(tokens[peak + 1]), float(loss[peak + 1]))
    jumps = np.flatnonzero(rel > rise)
    if not len(jumps):
        return found
    first = jumps[0]
    recovered = (loss[first + 2 :] <= floor[first] * (1 + recover)).any()
    return Spike(bool(recovered), found.rise, found.at_tokens, found.loss)


def mark_spikes(
    table: pd.DataFrame,
    curves: pd.DataFrame | None,
    *,
    exclude: bool = False,
    rise: float = SPIKE_RISE,
    recover: float = SPIKE_RECOVER,
) -> pd.DataFrame:
    """``table`` with columns ``spike`` (boolean; NA for runs without a curve) and ``spike_rise`` (the largest
    relative rise); with ``exclude``, flagged runs are dropped. ``attrs["spikes"]`` counts the flagged runs,
    ``attrs["spikes_excluded"]`` those dropped."""
    if not 0 < recover < rise:
        raise AnalysisError(f"spike thresholds rise={rise!r}, recover={recover!r}: need 0 < recover < rise")
    out = table.copy()
    found = (
        {key: _spike(c, rise=rise, recover=recover) for key, c in run_points(curves).items()}
        if curves is not None and len(curves)
        else {}
    )
    keys = list(zip(out["sweep_id"], out["run_id"]))
    out["spike"] = pd.array([found[k].flagged if k in found else pd.NA for k in keys], dtype="boolean")
    out["spike_rise"] = [found[k].rise if k in found else np.nan for k in keys]
    flagged = out["spike"].fillna(False).to_numpy(dtype=bool)
    out.attrs["spikes"] = int(flagged.sum())
    if exclude:
        out = out[~flagged].reset_index(drop=True)
        out.attrs["spikes_excluded"] = int(flagged.sum())
    return out


def attach_curves(
    table: pd.DataFrame, source: str | Path, *, exclude_spikes: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The curves of the store(s) ``source`` names (``load_curves``) and ``table`` with the spike columns
    (``mark_spikes``); the command line's one call."""
    curves = load_curves(source)
    return mark_spikes(table, curves, exclude=exclude_spikes), curves


@dataclass(frozen=True)
class CellCurves:
    """The curves of one cell (model, batch size): what the report's curve figure draws."""

    model: str
    batch_size: int
    points: pd.DataFrame  # curve points of the cell's lineages, with the lineage's peak lr as `peak_lr`
    spikes: pd.DataFrame  # one row per flagged run: peak_lr, tokens, loss (where its rise peaked)


def choose_cell(table: pd.DataFrame, curves: pd.DataFrame, cell: str | None = None) -> tuple[str, int]:
    """The (model, batch_size) whose curves the report draws: ``cell`` ('MODEL:BATCH'), else the one with the
    most lrs with a curve at its largest T (then the larger T)."""
    runs = _runs_with_curves(table, curves)
    if cell is not None:
        model, _, batch = cell.rpartition(":")
        if not model or not batch.isdigit():
            raise AnalysisError(f"--curves-cell {cell!r}: write MODEL:BATCH, e.g. cpu-xxs:4")
        if not (runs["model"].eq(model) & runs["batch_size"].eq(int(batch))).any():
            rank = {name: i for i, name in enumerate(model_order(runs))}
            have = [
                f"{m}:{b:g}"
                for m, b in sorted(
                    set(zip(runs["model"], runs["batch_size"])), key=lambda cell: (rank[cell[0]], cell[1])
                )
            ]
            raise AnalysisError(
                f"--curves-cell {cell!r}: no run of that model and batch size has a curve; "
                f"cells with curves: {', '.join(have) or 'none'}"
            )
        return model, int(batch)
    largest = runs[runs["tokens"].eq(runs.groupby(["model", "batch_size"])["tokens"].transform("max"))]
    score = largest.groupby(["model", "batch_size"]).agg(lrs=("lr", "nunique"), tokens=("tokens", "max"))
    model, batch = score.sort_values(["lrs", "tokens"], ascending=False, kind="stable").index[0]
    return model, int(batch)


def _runs_with_curves(table: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    pointed = curves.dropna(subset=["run_id"])  # trunk training points lead to no one run
    with_curve = set(zip(pointed["sweep_id"], pointed["run_id"]))
    runs = table[[k in with_curve for k in zip(table["sweep_id"], table["run_id"])]]
    if runs.empty:
        raise AnalysisError(
            "no run of the table has a stored curve (curves/ beside results/): nothing to draw"
        )
    return runs


def cell_curves(table: pd.DataFrame, curves: pd.DataFrame, cell: str | None = None) -> CellCurves:
    """The curves of the chosen cell (``choose_cell``), each point with its lineage's peak lr."""
    model, batch = choose_cell(table, curves, cell)
    runs = _runs_with_curves(table, curves)
    runs = runs[runs["model"].eq(model) & runs["batch_size"].eq(batch)]
    peak = runs[["sweep_id", "run_id", "lr"]].rename(columns={"lr": "peak_lr"})
    lineage_lr = (
        curves[_KEYS + ["run_id"]]
        .dropna(subset=["run_id"])
        .drop_duplicates()
        .merge(peak, on=["sweep_id", "run_id"])
        .groupby(_KEYS)["peak_lr"]
        .first()
        .reset_index()
    )
    points = _pooled(curves.merge(lineage_lr, on=_KEYS))
    flagged = runs[runs["spike"].fillna(False).astype(bool)] if "spike" in runs else runs.iloc[:0]
    per_run = run_points(curves[curves.set_index(_KEYS).index.isin(lineage_lr.set_index(_KEYS).index)])
    spikes = [
        {"peak_lr": r.lr, **_spike_point(per_run.get((r.sweep_id, r.run_id)))} for r in flagged.itertuples()
    ]
    return CellCurves(model, batch, points, pd.DataFrame(spikes, columns=["peak_lr", "tokens", "loss"]))


DRAW_WINDOW_STEPS, DRAW_WINDOW_FRACTION = 8, 0.05  # a drawn point pools at least 8 steps and 5% of its step


def _pooled(points: pd.DataFrame) -> pd.DataFrame:
    """The points to draw: each segment's train points pooled (``window_means``) so one noisy step is not a
    line's peak, and the eval points as they are."""
    keys = [*_KEYS, "segment", "budget", "fork_tokens", "peak_lr"]
    train = points[points["kind"].eq("train")]
    every = _columns(train)
    columns: dict[str, list] = {name: [] for name in ["tokens", "step", "loss_train_mean", *keys]}
    for key, index in train.groupby(keys, dropna=False).indices.items():
        group = every.take(index).sorted()
        tokens, step, loss = _windows(group, window=DRAW_WINDOW_STEPS, relative=DRAW_WINDOW_FRACTION)
        for name, values in (("tokens", tokens), ("step", step), ("loss_train_mean", loss)):
            columns[name] += values
        for name, value in zip(keys, key):
            columns[name] += [value] * len(tokens)
    pooled = pd.DataFrame(columns).assign(kind="train")
    return pd.concat([pooled, points[points["kind"].eq("eval")]], ignore_index=True)


def _spike_point(curve: Points | None) -> dict:
    spike = _spike(curve, rise=SPIKE_RISE, recover=SPIKE_RECOVER) if curve is not None else None
    return {"tokens": spike.at_tokens, "loss": spike.loss} if spike else {"tokens": np.nan, "loss": np.nan}
