"""Read the results table (CSV or Parquet; a file or a hive-partitioned directory) and validate it.

One row is one evaluation of one run. Units: ``tokens`` in training tokens, ``batch_size`` in
sequences, ``lr`` is the peak learning rate (of the muP base model under muP), ``loss_eval`` in nats/token.
Only ``model``, ``tokens``, ``batch_size``, ``lr`` and ``loss_eval`` are required.

>>> table = load_table("runs/", mapping={"lr": "config.lr", "loss_eval": "eval/loss"})
>>> table.attrs["skipped_files"]  # unreadable files of a directory, each with its reason
[]
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.merge import DEFAULT_TOLERANCE, check_tolerance, merge_close
from powersweep.file_threads import map_threads
from powersweep.rows import COLUMNS, PHASES, STATUSES  # the store's columns: their one declaration
from powersweep.store_layout import CURVES_DIR, PARTITION, RESULTS_DIR, SET_ASIDE_DIR

REQUIRED = ("model", "tokens", "batch_size", "lr", "loss_eval")
# The columns of the store's schema that analysis reads (and `--map` can fill), in the order of its table.
KNOWN = REQUIRED + (
    "run_id",
    "n_params",
    "n_params_non_embedding",
    "d_model",
    "seq_len",
    "status",
    "schedule",
    "power_a",
    "power_b",
    "lr_max",
    "seed",
    "sweep_id",
    "git_sha",
    "parametrisation",
    "warmup_tokens",
    "decay_fraction",
    "decay_shape",
    "settings_id",
)
PARAMETRISATIONS = {
    "mup": "mup",
    "µp": "mup",
    "mu-p": "mup",
    "sp": "sp",
    "standard": "sp",
    "unknown": "unknown",
}
# Read as well: which evaluation a row is (trunk rows are left out), its lineage, and which copy of a run
# is newest.
READ_TOO = ("phase", "lineage_id", "created_at")
NUMERIC = tuple(name for name in KNOWN if {c.name: c.type for c in COLUMNS}[name] in (int, float))
ALIASES = {"loss": "loss_eval"}  # `--map loss=COL` reads better on a command line
BATCH_UNITS = ("sequences", "tokens")
MAX_LR = 1e3  # no optimiser's peak lr is near this; larger values are a wrong column or unit
MAX_BATCH_SIZE = 1e9  # sequences
DIVERGE_FACTOR = 1.5  # a run whose loss is above 1.5x its cell's best loss diverged (see mark_blowups)
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
_READ_ERRORS = (OSError, ValueError, UnicodeDecodeError, pa.ArrowException, pd.errors.ParserError)


def load_table(
    source: str | Path | pd.DataFrame,
    *,
    mapping: dict[str, str] | None = None,
    batch_unit: str = "sequences",
    seq_len: int | None = None,
    schedule: str | None = None,
    parametrisation: str | None = None,
    tokens_tolerance: float = DEFAULT_TOLERANCE,
) -> pd.DataFrame:
    """Read, rename and validate a results table; return it with every known column filled in.

    ``mapping`` is ``{our_name: their_column}`` (e.g. a W&B export's ``{"lr": "config.lr"}``).
    ``batch_unit="tokens"`` converts batch sizes counted in tokens to sequences of ``seq_len``
    tokens (the argument, else the table's ``seq_len`` column); converted batch sizes of one model within
    ``tokens_tolerance`` (relative) of each other are one, their median rounded to whole sequences, listed in
    ``table.attrs["batch_merges"]`` (``analysis.merge``). A directory is read recursively;
    ``key=value`` folder names become columns; files that cannot be read are skipped and listed in
    ``table.attrs["skipped_files"]``. Trunk evaluations of a lineage (``phase`` 'trunk') are no budget's
    result: they are left out and counted in ``table.attrs["trunk_rows_dropped"]``. Raises ``AnalysisError``
    naming the column, a bad value and the fix.

    What the table does not say stays unknown: rows without a ``schedule`` get ``schedule`` (the argument)
    or 'unknown', rows without a ``parametrisation`` ('mup' or 'sp') get ``parametrisation`` or 'unknown'.
    """
    frame, skipped = _read(source, mapping or {})
    frame = _apply_mapping(frame, mapping or {})
    frame, trunk_rows = _final_rows(frame)
    # before filling in what the table did not say, so the error lists its own columns
    _require_columns(frame)
    frame = _stated(frame, schedule=schedule, parametrisation=parametrisation)
    frame, batch_merges = _validate(
        frame, batch_unit=batch_unit, seq_len=seq_len, tolerance=check_tolerance(tokens_tolerance)
    )
    frame.attrs["skipped_files"] = skipped
    frame.attrs["batch_merges"] = batch_merges
    frame.attrs["trunk_rows_dropped"] = trunk_rows
    frame.attrs["duplicate_run_ids"] = _duplicate_run_ids(frame)
    frame.attrs["validated"] = True  # lets analyze() skip a second validation
    return frame


def _read(source: str | Path | pd.DataFrame, mapping: dict[str, str]) -> tuple[pd.DataFrame, list[str]]:
    if isinstance(source, pd.DataFrame):
        return source.copy(), []
    path = Path(source)
    if not path.exists():
        raise AnalysisError(
            f"table path '{path}' does not exist: pass a CSV or Parquet file, or a directory of them"
        )
    if path.is_dir():
        return _read_directory(path, mapping)
    return _read_file(path, _wanted(mapping)), []


def _wanted(mapping: dict[str, str]) -> set[str]:
    """The columns a Parquet file is read for: the analysis's own, and those `mapping` reads ours from."""
    return {*KNOWN, *READ_TOO, *mapping.values()}


def _read_file(path: Path, wanted: set[str]) -> pd.DataFrame:
    return _frame(_read_any(path, wanted))


def _read_any(path: Path, wanted: set[str]) -> pa.Table | pd.DataFrame:
    """A Parquet file as an Arrow table of the columns it uses (a store's rows have 36, analysis reads about
    20), a CSV or TSV file as a DataFrame."""
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise AnalysisError(
            f"table file '{path}' has suffix {path.suffix!r}: use one of {', '.join(_SUFFIXES)}"
        )
    try:
        if kind == "parquet":
            with pq.ParquetFile(path) as file:
                names = file.schema_arrow.names
                return file.read(columns=[n for n in names if n in wanted])
        return pd.read_csv(path, sep="\t" if kind == "tsv" else ",")
    except _READ_ERRORS as err:
        raise AnalysisError(f"could not read table file '{path}': {err}") from None


def _read_directory(root: Path, mapping: dict[str, str]) -> tuple[pd.DataFrame, list[str]]:
    if (root / RESULTS_DIR).is_dir() and any((root / RESULTS_DIR).glob(f"{PARTITION}=*")):
        root = root / RESULTS_DIR  # a store: its rows, not the files of its checkpoints, Tune or trackers
    wanted, files = _wanted(mapping), _table_files(root)

    def read(path: Path) -> pa.Table | pd.DataFrame | AnalysisError:
        try:
            return _with_partitions(_read_any(path, wanted), path.relative_to(root))
        except AnalysisError as err:
            return err

    parts, skipped, paths = [], [], []
    for path, part in zip(files, map_threads(read, files)):
        if isinstance(part, AnalysisError):
            skipped.append(f"{path}: {part}")
        else:
            parts.append(part)
            paths.append(path)
    parts, foreign = _without_foreign(parts, paths, mapping)
    skipped += foreign
    if not parts:
        detail = f"; first problem: {skipped[0]}" if skipped else ""
        raise AnalysisError(f"no readable .csv or .parquet file under '{root}'{detail}")
    return concat_frames(parts), skipped


def concat_frames(parts: list[pa.Table | pd.DataFrame]) -> pd.DataFrame:
    """One DataFrame of `parts` in order. Consecutive Arrow tables are joined as Arrow and converted once (a
    store of 10^5 rows is thousands of small files); tables whose types Arrow cannot unify go through
    pandas one by one, as CSV frames do."""
    frames = []
    for arrow, run in itertools.groupby(parts, key=lambda part: isinstance(part, pa.Table)):
        run = list(run)
        if arrow:
            try:
                run = [_frame(pa.concat_tables(run, promote_options="permissive"))]
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                run = [_frame(table) for table in run]
        frames += run
    frames = [f for f in frames if len(f)] or frames[:1]  # concat warns about all-empty frames
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _frame(part: pa.Table | pd.DataFrame) -> pd.DataFrame:
    return part.to_pandas() if isinstance(part, pa.Table) else part


def _without_foreign(parts: list, paths: list[Path], mapping: dict[str, str]):
    """Drop files of another schema (no model, tokens, lr or loss column),
    when some file has the results schema.

    When none has it, every file is kept, so the missing-column error names the columns and the --map fix.
    """
    sources = {ALIASES.get(ours, ours): theirs for ours, theirs in mapping.items()}
    needed = [sources.get(name, name) for name in REQUIRED if name != "lr"]  # power-only tables have no lr

    def lacks(part) -> list[str]:
        names = set(_column_names(part))
        return [column for column in needed if column not in names]

    lacking = [lacks(part) for part in parts]
    if all(lacking):
        return parts, []
    kept = [part for part, lacks in zip(parts, lacking) if not lacks]
    foreign = [
        f"{path}: not a results table (no column {', '.join(repr(c) for c in lacks)})"
        for path, lacks in zip(paths, lacking)
        if lacks
    ]
    return kept, foreign


def _column_names(part: pa.Table | pd.DataFrame) -> list[str]:
    return part.column_names if isinstance(part, pa.Table) else list(part.columns)


def _table_files(root: Path) -> list[Path]:
    # Hidden and underscore files (_SUCCESS, .crc) are bookkeeping of writers, not data.
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in _SUFFIXES
        and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
        and not _is_beside_results(p.relative_to(root).parts)
    )


def _is_beside_results(parts: tuple[str, ...]) -> bool:
    """A store's training curve (curves/sweep_id=<id>/..., read by analysis/run_curves.py) or a file it set
    aside (set-aside/sweep_id=<id>/...: unreadable, or a sweep that `submit --replace` replaced), not a
    results file."""
    return any(
        a in (CURVES_DIR, SET_ASIDE_DIR) and b.startswith("sweep_id=") for a, b in zip(parts, parts[1:])
    )


def _with_partitions(part: pa.Table | pd.DataFrame, relative: Path) -> pa.Table | pd.DataFrame:
    """`key=value` folder names as columns; a column stored in the file wins over its folder name."""
    for folder in relative.parts[:-1]:
        key, sep, value = folder.partition("=")
        if not sep or key in _column_names(part):
            continue
        if isinstance(part, pa.Table):
            part = part.append_column(key, pa.array([unquote(value)] * part.num_rows, pa.string()))
        else:
            part[key] = unquote(value)
    return part


def _apply_mapping(frame: pd.DataFrame, mapping: dict[str, str]) -> pd.DataFrame:
    out = frame.copy()
    for ours, theirs in mapping.items():
        name = ALIASES.get(ours, ours)
        if name not in KNOWN:
            raise AnalysisError(
                f"unknown field {ours!r} in --map {ours}={theirs}: known fields are {', '.join(KNOWN)} "
                "(or 'loss')"
            )
        if theirs not in frame.columns:
            raise AnalysisError(
                f"column {theirs!r} (mapped to {name!r}) not found in table "
                f"(columns: {_names(frame.columns)}); fix --map {ours}={theirs}"
            )
        out[name] = frame[theirs]  # copied, not renamed: one source column may feed two fields
    return out


def _final_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The budget results (phase 'final', or no phase: files written before the column) and how many trunk
    rows were left out."""
    if "phase" not in frame.columns:
        return frame, 0
    phase = frame["phase"].astype("string").str.strip().str.lower()
    unknown = ~phase.isin(PHASES) & phase.notna()
    if unknown.any():
        raise AnalysisError(
            f"column 'phase' has value(s) {sorted(set(phase[unknown]))}: must be one of "
            f"{', '.join(PHASES)} (or empty, read as 'final')"
        )
    trunk = phase.eq("trunk").fillna(False).to_numpy(dtype=bool)
    return frame[~trunk], int(trunk.sum())


def _stated(frame: pd.DataFrame, *, schedule: str | None, parametrisation: str | None) -> pd.DataFrame:
    """Fill schedule and parametrisation from the arguments where the table is silent; never overwrite it."""
    out = frame.copy()
    for name, value in (("schedule", schedule), ("parametrisation", parametrisation)):
        fill = "unknown" if value is None else str(value).strip().lower()
        if name not in out.columns:
            out[name] = fill
        else:
            out[name] = out[name].astype("string").str.strip().str.lower().fillna(fill).astype(str)
    known = out["parametrisation"].map(PARAMETRISATIONS)
    if known.isna().any():
        row = known.isna().idxmax()
        raise AnalysisError(
            f"parametrisation={out['parametrisation'][row]!r} in row {row}: must be 'mup' or 'sp' "
            "(or empty, read as unknown); fix the column or pass --parametrisation"
        )
    out["parametrisation"] = known
    return out


def _validate(
    frame: pd.DataFrame, *, batch_unit: str, seq_len: int | None, tolerance: float
) -> tuple[pd.DataFrame, list]:
    _require_columns(frame)
    out = frame.reset_index(drop=True)
    for name in NUMERIC:
        if name in out.columns:
            out[name] = _numeric(out[name], name)
    _check_losses(out)  # before _fill_defaults, so a row is named by the table's own run_id
    out = _fill_defaults(out)
    out["batch_size"], merges = _batch_in_sequences(out, batch_unit, seq_len, tolerance)
    out["status"] = _status(out)
    _check_required_values(out)
    out = _drop_restated_runs(out)
    return out[list(KNOWN) + [c for c in out.columns if c not in KNOWN]].reset_index(drop=True), merges


def _require_columns(frame: pd.DataFrame) -> None:
    power_only = "schedule" in frame.columns and frame["schedule"].astype(str).str.lower().eq("power").all()
    needed = [c for c in REQUIRED if not (c == "lr" and power_only)]  # power runs are set by (a, b, lr_max)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        quoted = ", ".join(repr(c) for c in missing)
        fix = " ".join(f"{c}=YOUR_COLUMN" for c in missing)
        noun = "column" if len(missing) == 1 else "columns"
        raise AnalysisError(
            f"{noun} {quoted} not found in table (columns: {_names(frame.columns)}); pass --map {fix}"
        )


def _numeric(series: pd.Series, name: str) -> pd.Series:
    values = _as_float(series, name)
    # An infinite loss is a diverged run (+inf, see _status) or a wrong sign (-inf, see _check_losses).
    infinite = np.isinf(values) if name != "loss_eval" else pd.Series(False, index=values.index)
    if infinite.any():
        row = infinite.idxmax()
        raise AnalysisError(
            f"{name}={float(values[row])} in row {row}: must be a finite number; fix the table or "
            f"map {name} to another column with --map {name}=COLUMN"
        )
    return values


def _as_float(series: pd.Series, name: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return pd.Series(series.to_numpy(dtype=float, na_value=np.nan), index=series.index)  # Int64 NA -> NaN
    text = series.astype("string").str.strip()
    values = pd.to_numeric(text.where(text != ""), errors="coerce").astype("float64")
    bad = values.isna() & text.notna() & (text != "")
    bad &= ~text.str.lower().isin(["nan", "none", "null", "<na>"])
    if bad.any():
        row = bad.idxmax()
        raise AnalysisError(
            f"column {name!r} has {int(bad.sum())} non-numeric value(s), e.g. {series[row]!r} in row {row}: "
            f"fix the table or map {name} to a numeric column with --map {name}=COLUMN"
        )
    return values


def _check_losses(frame: pd.DataFrame) -> None:
    """Refuse a negative loss: a held-out cross-entropy never is one, so the column or its sign is wrong.

    NaN and +inf stay: they are how a diverged run's loss reads (see _status); -inf is no divergence.
    """
    negative = frame["loss_eval"] < 0
    if negative.any():
        row = negative.idxmax()
        raise AnalysisError(
            f"loss_eval={_plain(frame['loss_eval'][row])} in {_row_name(frame, row)} "
            f"({int(negative.sum())} negative row(s)): a held-out loss in nats/token is never "
            "negative; fix the table or map loss to the loss column with --map loss=COLUMN"
        )


def _row_name(frame: pd.DataFrame, row) -> str:
    """'run 'abc' (row 4)' where the table gives the row a run_id, else 'row 4'."""
    run_id = frame["run_id"][row] if "run_id" in frame.columns else None
    return f"run {str(run_id)!r} (row {row})" if pd.notna(run_id) else f"row {row}"


def _fill_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    defaults = {
        "run_id": None,
        "n_params": np.nan,
        "n_params_non_embedding": np.nan,
        "d_model": np.nan,
        "seq_len": np.nan,
        "status": "ok",
        "schedule": "unknown",
        "power_a": np.nan,
        "power_b": np.nan,
        "lr_max": np.nan,
        "seed": 0.0,
        "sweep_id": "",
        "git_sha": None,
        "lr": np.nan,
        "warmup_tokens": np.nan,
        "decay_fraction": np.nan,
        "decay_shape": None,
        "settings_id": None,
    }
    for name, value in defaults.items():
        if name not in frame.columns:
            frame[name] = value
    frame["run_id"] = (
        frame["run_id"].astype("string").fillna(pd.Series([f"row{i}" for i in range(len(frame))]))
    )
    frame["schedule"] = (
        frame["schedule"].astype("string").str.strip().str.lower().fillna("unknown").astype(str)
    )
    frame["sweep_id"] = frame["sweep_id"].astype("string").fillna("").astype(str)
    frame["seed"] = frame["seed"].fillna(0.0).astype("int64")
    frame["model"] = _model_names(frame["model"])
    return frame


def _model_names(series: pd.Series) -> pd.Series:
    if series.isna().any():
        row = series.isna().idxmax()
        raise AnalysisError(
            f"column 'model' is empty in {int(series.isna().sum())} row(s), e.g. row {row}: "
            "give every run a model name"
        )
    return series.astype(str)


def _batch_in_sequences(
    frame: pd.DataFrame, batch_unit: str, seq_len: int | None, tolerance: float
) -> tuple[pd.Series, list]:
    if batch_unit not in BATCH_UNITS:
        raise AnalysisError(f"batch_unit={batch_unit!r}: must be one of {', '.join(BATCH_UNITS)}")
    batch = frame["batch_size"]
    if batch_unit == "sequences" and seq_len is not None:
        frame["seq_len"] = _seq_len_for_sequences(frame, seq_len)
    if batch_unit == "tokens":
        per_seq = _seq_len_for_tokens(frame, seq_len)
        batch = batch / per_seq
        frame["seq_len"] = per_seq
    _check_positive(batch, "batch_size")
    if (batch > MAX_BATCH_SIZE).any():
        row = int(np.argmax(batch.to_numpy() > MAX_BATCH_SIZE))
        raise AnalysisError(
            f"batch_size={float(frame['batch_size'].iloc[row]):g} in row {row} is above {MAX_BATCH_SIZE:g} "
            "sequences: check --batch-unit (tokens?) and the batch_size column"
        )
    merges = []
    # a batch in tokens over a seq_len may come out a rounding off its nominal sequences
    if batch_unit == "tokens":
        batch, merges = _merged_batches(frame.assign(batch_size=batch), tolerance)
    whole = np.isclose(batch, np.round(batch), rtol=1e-9, atol=1e-6)
    if not whole.all():
        row = int(np.flatnonzero(~whole)[0])
        raise AnalysisError(
            f"batch_size={_plain(frame['batch_size'].iloc[row])} in row {row} is not a whole number of "
            "sequences"
            + (f" of seq_len={frame['seq_len'].iloc[row]:g} tokens" if batch_unit == "tokens" else "")
            + ": check --batch-unit and --seq-len"
        )
    return np.round(batch).astype("int64"), merges


def _merged_batches(frame: pd.DataFrame, tolerance: float) -> tuple[pd.Series, list]:
    """Batch sizes (sequences, per model) within ``tolerance`` of each other as one: their median, rounded to
    whole sequences where it lies within the tolerance of a whole number (else the whole-number check names
    it)."""
    batch, merges = merge_close(frame, "batch_size", by=("model",), tolerance=tolerance)
    rounded = []
    for merge in merges:
        whole = float(np.round(merge.value))
        value = whole if whole > 0 and abs(merge.value - whole) <= tolerance * whole else merge.value
        batch = batch.mask(batch.eq(merge.value) & frame["model"].eq(merge.where["model"]), value)
        rounded.append(replace(merge, value=value))
    return batch, rounded


def _seq_len_for_sequences(frame: pd.DataFrame, seq_len: int) -> pd.Series:
    # With batch sizes in sequences, --seq-len only states the sequence length; it must not contradict the
    # table.
    if seq_len <= 0:
        raise AnalysisError(f"seq_len={seq_len}: must be a positive number of tokens per sequence")
    column = frame["seq_len"]
    clash = column.notna() & (column != seq_len)
    if clash.any():
        raise AnalysisError(
            f"--seq-len {seq_len} disagrees with the table's seq_len column "
            f"({_plain(column[clash].iloc[0])} in row {clash.idxmax()}): drop --seq-len, or pass "
            "--batch-unit tokens if batch_size counts tokens"
        )
    return pd.Series(float(seq_len), index=frame.index)


def _seq_len_for_tokens(frame: pd.DataFrame, seq_len: int | None) -> pd.Series:
    if seq_len is not None:
        if seq_len <= 0:
            raise AnalysisError(f"seq_len={seq_len}: must be a positive number of tokens per sequence")
        return pd.Series(float(seq_len), index=frame.index)
    column = frame["seq_len"]
    if column.isna().any() or (column <= 0).any():
        raise AnalysisError(
            "batch_unit='tokens' needs the sequence length to convert batch sizes to sequences: "
            "pass --seq-len N (tokens per sequence) or give the table a seq_len column"
        )
    return column


def _status(frame: pd.DataFrame) -> pd.Series:
    status = frame["status"].astype("string").str.strip().str.lower().fillna("ok")
    unknown = ~status.isin(STATUSES)
    if unknown.any():
        values = sorted(set(status[unknown]))
        raise AnalysisError(f"column 'status' has value(s) {values}: must be one of {', '.join(STATUSES)}")
    # A NaN or +inf loss is a divergence whatever the status says; never a number to average (-inf:
    # _check_losses).
    blown = status.eq("ok") & ~np.isfinite(frame["loss_eval"].to_numpy(dtype=float))
    return status.mask(blown, "diverged").astype(str)


def _check_required_values(frame: pd.DataFrame) -> None:
    power = frame["schedule"].eq("power")
    for name in ("tokens", "lr"):
        rows = frame[name] if name == "tokens" else frame.loc[~power, name]
        missing = rows.isna()
        if missing.any():
            raise AnalysisError(
                f"column {name!r} is empty in {int(missing.sum())} row(s), e.g. row "
                f"{missing.idxmax()}: every run needs a value"
            )
        _check_positive(rows, name)
    too_big = frame["lr"] > MAX_LR
    if too_big.any():
        row = too_big.idxmax()
        raise AnalysisError(
            f"lr={float(frame['lr'][row]):g} in row {row} is above {MAX_LR:g}, not a learning rate: "
            "check the lr column or --map lr=COLUMN"
        )
    for name in ("power_a", "power_b"):
        bad = power & ~np.isfinite(frame[name])
        if bad.any():
            raise AnalysisError(
                f"schedule='power' rows need {name}: row {bad.idxmax()} has {name}="
                f"{_plain(frame[name][bad.idxmax()])}; pass --map {name}=COLUMN"
            )


def _check_positive(values: pd.Series, name: str) -> None:
    bad = ~(values > 0)
    if bad.any():
        row = bad.idxmax()
        raise AnalysisError(f"{name}={_plain(values[row])} in row {row}: must be a positive number")


def _drop_restated_runs(frame: pd.DataFrame) -> pd.DataFrame:
    # The store may hold a run twice after a retry; as in the store, the newest row wins.
    if "created_at" not in frame.columns:
        return frame
    ordered = frame.sort_values("created_at", kind="stable")
    return ordered.drop_duplicates(subset=["sweep_id", "run_id"], keep="last").sort_index()


def _duplicate_run_ids(frame: pd.DataFrame) -> list[str]:
    """run ids that name more than one row of a sweep (a store never writes those; a hand-made CSV may)."""
    ids = frame.loc[~frame["run_id"].str.match(r"^row\d+$"), ["sweep_id", "run_id"]]
    return sorted(set(ids.loc[ids.duplicated(keep=False), "run_id"]))


def mark_blowups(frame: pd.DataFrame, *, diverge_factor: float = DIVERGE_FACTOR) -> pd.DataFrame:
    """Status 'diverged' for every 'ok' run whose loss is non-finite or above ``diverge_factor`` times the
    lowest finite loss of its cell (schedule, model, tokens, batch_size), whatever the status column said.

    A run that blew up and recovered to a high plateau (loss 7 where the cell's best is 2.3) did not find
    a bowl: it bounds lr_max like a NaN does. The count of re-labelled runs is in ``attrs["blowups"]``.
    """
    if not diverge_factor > 1:
        raise AnalysisError(
            f"diverge_factor={diverge_factor!r}: must be above 1 (a loss this many times the best "
            f"of its cell counts as diverged), e.g. {DIVERGE_FACTOR}"
        )
    out = frame.copy()
    ok = out["status"].eq("ok")
    loss = out["loss_eval"].where(ok & np.isfinite(out["loss_eval"]))
    keys = [out[k] for k in ("schedule", "model", "tokens", "batch_size")]
    best = loss.groupby(keys, dropna=False).transform("min")
    blown = ok & ~(out["loss_eval"] <= diverge_factor * best)
    out["status"] = out["status"].mask(blown, "diverged")
    out.attrs["blowups"] = int((blown & np.isfinite(out["loss_eval"])).sum())
    out.attrs["diverge_factor"] = diverge_factor
    return out


def _plain(value) -> str:
    """A number as a person writes it (736, 0.5, nan), never numpy's repr (np.float64(736.0))."""
    return f"{float(value):g}" if isinstance(value, (int, float, np.number)) else repr(value)


def _names(columns: pd.Index) -> str:
    names = [str(c) for c in columns]
    return ", ".join(names[:30]) + (f", ... ({len(names)} in all)" if len(names) > 30 else "")
