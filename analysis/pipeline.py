"""The whole analysis of one results table, as one named result.

>>> result = analyze(load_table("runs/"), top_k=3, n_boot=1000, seed=0)
>>> result.gamma.pooled.a, result.gamma.pooled.b
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import pandas as pd

from powersweep.analysis.band import BandFit, band_fit
from powersweep.analysis.batch_scaling import BatchLaw, fit_batch_laws
from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.fit import GammaFits, Transfer, fit_gamma, transfer
from powersweep.analysis.merge import (
    DEFAULT_TOLERANCE,
    check_tolerance,
    merge_budgets,
    merge_notes,
    repeat_note,
)
from powersweep.analysis.optimum import choose_schedule, find_optima
from powersweep.analysis.order import in_model_order, model_order
from powersweep.analysis.power_search import PowerSearch, power_search
from powersweep.analysis.regimes import (
    CriticalBatch,
    Sensitivity,
    fit_critical_batch,
    label_regimes,
    sensitivity,
)
from powersweep.analysis.run_settings import require_uniform_settings
from powersweep.analysis.table import DIVERGE_FACTOR, load_table, mark_blowups
from powersweep.analysis.width_transfer import PARAMETRISATION_NAMES, WidthTransfer, width_transfer


@dataclass(frozen=True)
class Settings:
    """Choices of one analysis; every field has the default the command line uses."""

    top_k: int = 3  # batch sizes kept per (model, tokens), as in the paper
    n_boot: int = 1000  # bootstrap resamples for every CI; 0 gives analytic intervals
    seed: int = 0  # seed of the bootstrap
    schedule: str | None = None  # schedule whose runs locate lr_opt; None: the table's only non-power one
    include_flagged: bool = False  # let edge / too-small cells into the point fits
    half_width: int = 3  # grid points each side of the argmin in the per-cell bowl
    band_eps: float = 0.0025  # relative loss tolerance of the band fit (Step Law uses 0.25%)
    near_factor: float = 3.0  # B within [Bc / f, Bc * f] is "near_critical"
    diverge_factor: float = DIVERGE_FACTOR  # loss above this times its cell's best: the run diverged
    # a model's budgets this close (relative) are one; 0: none merge
    tokens_tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        minimum = {"top_k": 1, "n_boot": 0, "half_width": 1}
        for name, low in minimum.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise AnalysisError(f"{name}={value!r}: must be a whole number >= {low} ({_FLAGS[name]})")
        if not 0 < self.band_eps < 1:
            raise AnalysisError(
                f"band_eps={self.band_eps!r}: must be a relative loss tolerance in (0, 1), e.g. 0.0025"
            )
        if not self.near_factor > 1:
            raise AnalysisError(f"near_factor={self.near_factor!r}: must be above 1")
        check_tolerance(self.tokens_tolerance)


PAPER_SEQ_LEN = 4096  # tokens per sequence of the paper's batch sizes (its Table 2): the unit of its gamma
MIN_DRAWS = 200  # per-cell lr_opt draws even with n_boot 0: they give each cell's standard error
_FLAGS = {"top_k": "--top-k", "n_boot": "--bootstrap; 0 gives analytic intervals", "half_width": "half_width"}


@dataclass(frozen=True)
class Analysis:
    """Everything fitted from one table; parts without data are None and say why in ``notes``."""

    table: pd.DataFrame  # validated input
    cells: pd.DataFrame  # one row per cell: optimum, flags, gamma, top_k, used, bc, regime
    gamma: GammaFits | None
    transfer: Transfer | None
    critical: CriticalBatch | None
    sensitivity: Sensitivity | None
    band: BandFit | None
    power: PowerSearch | None
    settings: Settings
    schedule: str | None  # the schedule analysed for lr_opt
    notes: tuple[str, ...]
    batch: dict[str, BatchLaw] = field(default_factory=dict)  # per model: lr_opt = c * B**alpha * T**beta
    width_transfer: WidthTransfer | None = None  # drift of lr_opt in width per parametrisation

    @property
    def parametrisation(self) -> str:
        """'mup', 'sp', 'unknown' or 'mixed', from the table's analysed rows."""
        rows = self.table if self.schedule is None else self.table[self.table["schedule"].eq(self.schedule)]
        values = set(rows["parametrisation"]) if "parametrisation" in rows else {"unknown"}
        return values.pop() if len(values) == 1 else ("mixed" if values else "unknown")

    @property
    def paper_applies(self) -> bool:
        """The paper's gamma = 4.6 * T^-0.51 was measured on muP models with WSD, its batch in sequences of
        4096 tokens (its Table 2): compare only with those, as gamma per sequence of other lengths is in other
        units."""
        rows = self.table if self.schedule is None else self.table[self.table["schedule"].eq(self.schedule)]
        paper_unit = "seq_len" in rows and len(rows) > 0 and bool(rows["seq_len"].eq(PAPER_SEQ_LEN).all())
        return self.parametrisation == "mup" and self.schedule == "wsd" and paper_unit

    @property
    def headline(self) -> str:
        """Which law a reader should use (see ``HEADLINES``)."""
        return headline(self)


HEADLINES = {
    "pooled_gamma": "gamma = lr_opt / batch_size = a * T^b, pooled over models (it transfers across them)",
    "per_model_gamma": "gamma = a * T^b per model: the models' laws differ, so the pooled one is not used",
    "per_model_batch_law": (
        "lr_opt = c * B^alpha * T^beta per model: gamma is not batch-invariant (alpha != 1)"
    ),
    "none": "no law could be fitted",
}


def headline(result: Analysis) -> str:
    """'per_model_batch_law' when some model's alpha interval excludes 1; else 'per_model_gamma' when the
    per-model gamma laws disagree (several models); else 'pooled_gamma'; 'none' without a gamma fit."""
    if result.gamma is None or not result.gamma.pooled.ok:
        return "none"
    if any(law.ok and not law.linear for law in result.batch.values()):
        return "per_model_batch_law"
    fits = [f for f in result.gamma.per_model.values() if f.ok]
    if (
        len(fits) > 1
        and result.transfer is not None
        and not (result.transfer.b_agree and result.transfer.gamma_agree)
    ):
        return "per_model_gamma"
    return "pooled_gamma"


def analyze(table: pd.DataFrame, **options) -> Analysis:
    """Run every step on a results table; ``options`` are the fields of ``Settings``.

    The table is validated first (``load_table``) unless it came from ``load_table``.
    """
    unknown = sorted(set(options) - {f.name for f in fields(Settings)})
    if unknown:
        raise AnalysisError(
            f"unknown analysis option(s) {unknown}: known are {[f.name for f in fields(Settings)]}"
        )
    settings = Settings(**options)
    if not table.attrs.get("validated"):
        table = load_table(table, tokens_tolerance=settings.tokens_tolerance)
    # Before anything groups by cell: budgets that differ by rounding (two sweep versions) are one cell.
    table = merge_budgets(table, settings.tokens_tolerance)
    schedule = choose_schedule(table, settings.schedule)
    # Each parametrisation's cells apart: a muP and an SP model may share a name, never a bowl.
    parts = [mark_blowups(rows, diverge_factor=settings.diverge_factor) for rows in _law_split(table)]
    for rows in parts:
        require_uniform_settings(rows, {schedule, "power"} - {None})  # rows of one cell are averaged as seeds
    table, others = parts[0], parts[1:]
    _require_results(table, schedule)
    power = power_search(table, n_boot=settings.n_boot, seed=settings.seed)
    notes = [f"skipped file {entry}" for entry in table.attrs.get("skipped_files", [])] + _input_notes(table)
    if table.attrs.get("trunk_rows_dropped"):
        notes.append(
            f"left out {table.attrs['trunk_rows_dropped']} trunk rows (phase 'trunk': a lineage's "
            "stable-phase evaluations at its forks, not budget results)"
        )
    if power is None:
        notes.append("no runs with schedule 'power': the (a, b) search (Fig. 5-6) is skipped")
    if schedule is None:
        notes.append(
            "no runs with a fixed peak lr (wsd, cosine, constant): lr_opt, gamma and regime fits are skipped"
        )
        empty = find_optima(table.iloc[:0])
        return Analysis(table, empty, None, None, None, None, None, power, settings, None, tuple(notes))
    notes += _law_rows_note(table, others)
    widths = _width_transfer(pd.concat([table, *others]) if others else table, schedule, settings, notes)
    return _point_analysis(table, schedule, settings, power, notes, widths)


def _law_split(table: pd.DataFrame) -> list[pd.DataFrame]:
    """[the rows the law is fitted on, then the rest per parametrisation]: the muP rows apart when the table
    holds muP and SP rows (SP's lr_opt moves with width, so it has a law of each width); else [table]."""
    stated = set(table["parametrisation"])
    if not {"mup", "sp"} <= stated:
        return [table]
    mup = table["parametrisation"].eq("mup")
    return [table[mup], *(table[table["parametrisation"].eq(p)] for p in sorted(stated - {"mup"}))]


def _law_rows_note(table: pd.DataFrame, others: list[pd.DataFrame]) -> list[str]:
    if not others:
        return []
    left = " and ".join(
        f"{len(rows)} {PARAMETRISATION_NAMES[rows['parametrisation'].iloc[0]]} rows" for rows in others
    )
    return [
        f"the table holds muP and SP rows: the law is fitted on its {len(table)} muP rows only; {left} are "
        "left out of it and feed the transfer across widths"
    ]


def _width_transfer(table, schedule: str, settings: Settings, notes: list[str]) -> WidthTransfer | None:
    """The drift of lr_opt in width, when the table states widths and 3 or more are located per (T, B)."""
    widths = width_transfer(
        table,
        schedule=schedule,
        half_width=settings.half_width,
        n_draws=max(settings.n_boot, MIN_DRAWS),
        n_boot=settings.n_boot,
        seed=settings.seed,
        include_flagged=settings.include_flagged,
    )
    if widths is None:
        return None
    notes += list(widths.notes)
    if not widths.ok:
        if widths.cells["width"].nunique() > 1:  # a sweep of one width has nothing to transfer across
            notes.append(f"transfer across widths not checked: {widths.reason}")
        return None
    notes += [
        f"muP lr_opt moves with width: {v.text}; the proxies' law would not transfer to wider models "
        "(check the runs' muP multipliers: m_width, init and output scale)"
        for v in widths.verdicts.values()
        if v.warning
    ]
    return widths


def _require_results(table: pd.DataFrame, schedule: str | None) -> None:
    runs = table if schedule is None else table[table["schedule"].isin([schedule, "power"])]
    if len(runs) and runs["status"].eq("failed").all():
        raise AnalysisError(
            f"every one of the {len(runs)} runs has status 'failed' (the job broke, not the lr): "
            "nothing to analyse; resume the sweep or fix the status column"
        )


def _input_notes(table: pd.DataFrame) -> list[str]:
    merges = [*table.attrs.get("batch_merges", []), *table.attrs.get("budget_merges", [])]
    notes = merge_notes(merges, model_order(table))
    duplicates = table.attrs.get("duplicate_run_ids", [])
    if duplicates:
        notes.append(
            f"{len(duplicates)} run id(s) name several rows (e.g. {duplicates[0]!r}): they are kept as "
            "separate runs (as seeds where they share a cell and lr); give each run its own run_id or drop "
            "the copies"
        )
    unstated = [name for name in ("schedule", "parametrisation") if table[name].eq("unknown").all()]
    if unstated:
        flags = " ".join(f"--{name} NAME" for name in unstated)
        notes.append(
            f"the table does not say its {' or '.join(unstated)}: shown as unknown, and the paper's "
            f"4.6 * T^-0.51 (muP, wsd) is not drawn; state it with {flags}"
        )
    if table.attrs.get("spikes"):
        done = (
            "left out (--exclude-spikes)"
            if table.attrs.get("spikes_excluded")
            else "kept and marked (column spike; --exclude-spikes leaves them out)"
        )
        notes.append(
            f"{table.attrs['spikes']} run(s) spiked: their training loss jumped and recovered (a "
            f"near-divergence, see the loss curves); {done}"
        )
    if table.attrs.get("blowups"):
        notes.append(
            f"{table.attrs['blowups']} run(s) with a finite loss above "
            f"{table.attrs.get('diverge_factor', DIVERGE_FACTOR):g}x the best loss of their cell count as "
            "diverged (they bound lr_max); set the factor with --diverge-factor"
        )
    return notes


def _point_analysis(
    table,
    schedule: str,
    settings: Settings,
    power: PowerSearch | None,
    notes: list[str],
    widths: WidthTransfer | None = None,
) -> Analysis:
    boot = {"n_boot": settings.n_boot, "seed": settings.seed}
    cells = find_optima(
        table,
        schedule=schedule,
        half_width=settings.half_width,
        n_draws=max(settings.n_boot, MIN_DRAWS),
        seed=settings.seed,
    )
    gamma = fit_gamma(cells, top_k=settings.top_k, include_flagged=settings.include_flagged, **boot)
    critical = fit_critical_batch(cells, **boot)
    labelled = label_regimes(gamma.cells, critical, near_factor=settings.near_factor)
    batch = fit_batch_laws(cells, **boot)
    band = band_fit(table, eps=settings.band_eps, schedule=schedule, **boot)
    labelled = in_model_order(labelled, model_order(cells))  # after the fits: the rows move, the numbers stay
    notes += repeat_note(table, schedule) + _fit_notes(gamma, critical, labelled) + _batch_notes(batch)
    notes += list(band.notes)
    return Analysis(
        table=table,
        cells=labelled,
        gamma=gamma,
        transfer=transfer(gamma),
        critical=critical,
        sensitivity=sensitivity(cells, **boot),
        band=band,
        power=power,
        settings=settings,
        schedule=schedule,
        notes=tuple(notes),
        batch=batch,
        width_transfer=widths,
    )


def _batch_notes(batch: dict[str, BatchLaw]) -> list[str]:
    notes = []
    for model, law in batch.items():
        if law.ok and not law.linear:
            notes.append(
                f"gamma = lr_opt / batch_size is not batch-invariant for model {model}: lr_opt ~ "
                f"B^{law.alpha:.3g} (95% CI {law.alpha_ci.low:.3g} to {law.alpha_ci.high:.3g}), not B^1; "
                "use the per-model law lr_opt = c * B^alpha * T^beta (predict --model)"
            )
    return notes


def _fit_notes(gamma: GammaFits, critical: CriticalBatch, cells: pd.DataFrame) -> list[str]:
    notes = []
    if not gamma.pooled.ok:
        notes.append(f"gamma fit failed: {gamma.pooled.reason}")
    if not critical.law.ok:
        notes.append(f"critical batch size law not fitted: {critical.law.reason}")
    flagged = int((~cells["ok"].astype(bool)).sum())
    if flagged:
        notes.append(
            f"{flagged} of {len(cells)} cells are flagged and left out of the point fits (see cells.csv)"
        )
    one_side = cells[cells["flags"].str.split(";").apply(lambda f: "one_side" in f)]
    if len(one_side):
        first = one_side.iloc[0]
        notes.append(
            f"{len(one_side)} of {len(cells)} cells have a single lr on one side of their best lr (flag "
            f"one_side; e.g. model {first['model']}, T = {first['tokens']:g}, batch size "
            f"{int(first['batch_size'])}): their lr_opt is kept, with a wider interval; to tighten it, "
            "extend the lr grid past that side"
        )
    return notes
