"""Sweep tables drawn from a planted learning-rate law: for tests, demos and benchmarks.

The loss of a run (nats/token) is

    L(N, T) + batch_penalty * ln(B / Bc(T))**2 + k(T) * s * (ln lr - ln lr_opt(B, T))**2 + noise

with s = 1 below lr_opt and s = ``asymmetry`` above it (real bowls climb faster past the optimum).

with ``lr_opt = B * a * T**b`` (the paper's Eq. 6, ``lr_law="linear"``) or the critical-batch
form ``2 * lr_peak(T) / (sqrt(B / Bc) + sqrt(Bc / B))`` (``lr_law="critical"``). Runs with
``lr > diverge_ratio * lr_opt`` diverge (status 'diverged', NaN loss). The floor L(N, T) uses
the Chinchilla fit E + A / N**alpha + B / T**beta (Hoffmann et al. 2022, Eq. 10).

``synthetic_width_table`` holds models that differ in width only, under muP and SP, with the same bowl about
lr_opt(width) = lr_opt(B, T) * (width / width_base)**drift (drift 0 under muP, -1 under SP with Adam).

>>> table = synthetic_table(PlantedLaw(a=4.6, b=-0.51), SweepGrid(n_seeds=2), seed=0)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

from powersweep.analysis.errors import AnalysisError

PAPER_TOKENS = (2e9, 4e9, 8e9, 16e9, 32e9, 64e9, 128e9, 256e9)  # the paper's Table 2
PAPER_BATCH_SIZES = (16, 32, 64, 128, 256, 512)  # the paper's Table 2, sequences of 4096 tokens
PAPER_LRS = (0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256)  # the paper's Table 2
PAPER_MODELS = (("12M", 12e6), ("36M", 36e6), ("121M", 121e6))  # the paper's Table 2
_CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. 2022
_T_PIVOT = 1e10  # tokens where `curvature` is given


@dataclass(frozen=True)
class PlantedLaw:
    """The true optimum and loss landscape of a synthetic sweep."""

    a: float = 4.6  # gamma = lr_opt / batch_size = a * T**b (paper Eq. 5: 4.6 and -0.51)
    b: float = -0.51
    lr_law: str = "linear"  # "linear" (paper) or "critical" (lr_opt peaks at B = Bc)
    # "linear" law: lr_opt = B**batch_exp * a * T**b (the paper: 1, lr proportional to B)
    batch_exp: float = 1.0
    bc_c: float = 1.28e-3  # critical batch size Bc(T) = bc_c * T**bc_zeta, in sequences
    bc_zeta: float = 0.5
    peak_c: float = 0.02  # "critical" law: lr_peak(T) = peak_c * (T / 1e9)**peak_q
    peak_q: float = -0.3
    curvature: float = 0.02  # k at T = 1e10 tokens: nats per (ln lr)**2
    curvature_exp: float = 0.0  # k(T) = curvature * (T / 1e10)**curvature_exp
    asymmetry: float = 1.0  # above lr_opt the bowl is this many times steeper than below (1: symmetric)
    batch_penalty: float = 0.005  # nats per (ln(B / Bc))**2: the best batch size is near Bc
    noise_sd: float = 0.002  # nats, independent per run
    diverge_ratio: float = 8.0  # lr above diverge_ratio * lr_opt diverges

    def critical_batch(self, tokens: np.ndarray | float) -> np.ndarray:
        return self.bc_c * np.asarray(tokens, dtype=float) ** self.bc_zeta

    def lr_opt(self, batch_size: np.ndarray | float, tokens: np.ndarray | float) -> np.ndarray:
        """The planted optimal peak lr at ``batch_size`` sequences and ``tokens`` tokens."""
        batch, tokens = np.asarray(batch_size, dtype=float), np.asarray(tokens, dtype=float)
        if self.lr_law == "linear":
            return batch**self.batch_exp * self.a * tokens**self.b
        if self.lr_law == "critical":
            ratio = batch / self.critical_batch(tokens)
            peak = self.peak_c * (tokens / 1e9) ** self.peak_q
            return 2 * peak / (np.sqrt(ratio) + np.sqrt(1 / ratio))
        raise AnalysisError(f"lr_law={self.lr_law!r}: must be 'linear' or 'critical'")

    def sharpness(self, tokens: np.ndarray | float) -> np.ndarray:
        """k(T): d2(loss)/d(ln lr)**2 / 2 at the optimum, in nats."""
        return self.curvature * (np.asarray(tokens, dtype=float) / _T_PIVOT) ** self.curvature_exp

    def floor(self, n_params: np.ndarray, tokens: np.ndarray, batch_size: np.ndarray) -> np.ndarray:
        """Loss at the optimal lr (nats/token), before noise."""
        c = _CHINCHILLA
        n, t = np.asarray(n_params, float), np.asarray(tokens, float)
        base = c["E"] + c["A"] / n ** c["alpha"] + c["B"] / t ** c["beta"]
        return (
            base
            + self.batch_penalty * np.log(np.asarray(batch_size, float) / self.critical_batch(tokens)) ** 2
        )


@dataclass(frozen=True)
class SweepGrid:
    """Which runs a synthetic sweep holds: every combination of the values below, times seeds."""

    models: tuple[tuple[str, float], ...] = PAPER_MODELS  # (name, n_params)
    tokens: tuple[float, ...] = PAPER_TOKENS
    batch_sizes: tuple[int, ...] = PAPER_BATCH_SIZES  # sequences
    lrs: tuple[float, ...] = tuple(np.geomspace(1e-4, 0.1, 21).tolist())  # factor 1.41 apart
    n_seeds: int = 1
    seq_len: int = 4096  # tokens per sequence


def synthetic_table(
    law: PlantedLaw = PlantedLaw(),
    grid: SweepGrid = SweepGrid(),
    *,
    seed: int = 0,
    sweep_id: str = "synthetic",
) -> pd.DataFrame:
    """A tidy table (one row per run) of WSD runs on ``grid`` whose losses follow ``law``."""
    names, n_params = zip(*grid.models)
    m, t, bs, lr, s = (
        a.ravel()
        for a in np.meshgrid(
            np.arange(len(names)),
            grid.tokens,
            grid.batch_sizes,
            grid.lrs,
            np.arange(grid.n_seeds),
            indexing="ij",
        )
    )
    frame = _runs_frame(sweep_id, np.asarray(names)[m], np.asarray(n_params)[m], t, bs, lr, s, grid.seq_len)
    return frame.assign(**_bowl_runs(law, np.asarray(n_params)[m], t, bs, lr, law.lr_opt(bs, t), seed))


def _bowl_runs(law: PlantedLaw, n_params, tokens, batch_size, lr, lr_opt, seed: int) -> dict:
    """Columns of WSD runs whose loss is ``law``'s bowl about ``lr_opt``: loss_eval, status and the rest."""
    u = np.log(lr / lr_opt)
    loss = (
        law.floor(n_params, tokens, batch_size)
        + law.sharpness(tokens) * np.where(u > 0, law.asymmetry, 1.0) * u**2
    )
    loss = loss + np.random.default_rng(seed).normal(0.0, law.noise_sd, size=loss.shape)
    diverged = lr > law.diverge_ratio * lr_opt
    return {
        "loss_eval": np.where(diverged, np.nan, loss),
        "status": np.where(diverged, "diverged", "ok"),
        "schedule": "wsd",
        "power_a": np.nan,
        "power_b": np.nan,
        "lr_max": np.nan,
        "parametrisation": "mup",
    }


# lr_opt ~ width**drift per parametrisation: flat under muP, 1 / width under SP with Adam
PLANTED_DRIFTS = MappingProxyType({"mup": 0.0, "sp": -1.0})


@dataclass(frozen=True)
class WidthGrid:
    """The runs of a synthetic width sweep: each width, T, batch size, lr and seed, per parametrisation."""

    widths: tuple[int, ...] = (64, 128, 256, 512, 1024)  # d_model
    width_base: int = 256  # d_model whose lr_opt is the law's own lr_opt(B, T)
    n_layers: int = 4  # one depth for all: n_params_non_embedding = 12 * n_layers * d_model**2
    vocab_size: int = 32768  # embedding parameters: vocab_size * d_model
    tokens: tuple[float, ...] = (1e9, 4e9)
    batch_sizes: tuple[int, ...] = (64,)  # sequences
    lrs: tuple[float, ...] = tuple(1e-4 * 2 ** (k / 2) for k in range(23))  # factor sqrt(2) apart, to 0.2
    n_seeds: int = 1
    seq_len: int = 4096  # tokens per sequence


def synthetic_width_table(
    law: PlantedLaw = PlantedLaw(),
    grid: WidthGrid = WidthGrid(),
    *,
    drifts: Mapping[str, float] = PLANTED_DRIFTS,
    seed: int = 0,
    sweep_id: str = "synthetic-width",
) -> pd.DataFrame:
    """WSD runs of models that differ in width only, one sweep per parametrisation in ``drifts``, with
    lr_opt(width) = law.lr_opt(B, T) * (width / grid.width_base) ** drift and ``law``'s loss bowl about it.

    Models are named by width (``d256``) in every parametrisation; rows carry ``d_model`` and
    ``n_params_non_embedding``.

    >>> table = synthetic_width_table(drifts={"mup": 0.0, "sp": -1.0})
    """
    width, t, bs, lr, s = (
        a.ravel()
        for a in np.meshgrid(
            grid.widths, grid.tokens, grid.batch_sizes, grid.lrs, np.arange(grid.n_seeds), indexing="ij"
        )
    )
    non_embedding = 12 * grid.n_layers * width**2
    n_params = non_embedding + grid.vocab_size * width
    names = np.array([f"d{w}" for w in width])
    frames = []
    for i, (parametrisation, drift) in enumerate(drifts.items()):
        lr_opt = law.lr_opt(bs, t) * (width / grid.width_base) ** drift
        frame = _runs_frame(f"{sweep_id}-{parametrisation}", names, n_params, t, bs, lr, s, grid.seq_len)
        runs = _bowl_runs(law, n_params, t, bs, lr, lr_opt, seed + i)
        extra = {
            "parametrisation": parametrisation,
            "d_model": width,
            "n_params_non_embedding": non_embedding,
        }
        frames.append(frame.assign(**(runs | extra)))
    return pd.concat(frames, ignore_index=True)


def synthetic_power_table(
    law: PlantedLaw = PlantedLaw(a=4.0, b=-0.51),
    *,
    a_values: tuple[float, ...] = (3.0, 3.5, 4.0, 4.5, 5.0),
    b_values: tuple[float, ...] = (-0.6, -0.55, -0.5, -0.45, -0.4),
    tokens: tuple[float, ...] = (8e9, 16e9, 32e9),
    batch_sizes: tuple[int, ...] = (32, 64, 128),
    model: tuple[str, float] = ("36M", 36e6),
    lr_max: float = 0.02,
    n_seeds: int = 1,
    seq_len: int = 4096,
    seed: int = 0,
    sweep_id: str = "synthetic-power",
) -> pd.DataFrame:
    """Power-scheduler runs over an (a, b) grid, as in the paper's Table 3 search.

    A run pays for how far its lr(n) = min(lr_max, B * a * n**b) strays from the planted optimum
    B * a_true * n**b_true over its last decade of tokens (mean squared log ratio): so the loss is
    lowest at the planted (a, b), flat along a ridge, as in the paper's Fig. 5.
    """
    a, b, t, bs, s = (
        x.ravel()
        for x in np.meshgrid(a_values, b_values, tokens, batch_sizes, np.arange(n_seeds), indexing="ij")
    )
    n = t[:, None] * np.geomspace(0.1, 1.0, 16)[None, :]  # (runs, 16) tokens in the last decade
    lr_run = np.minimum(lr_max, bs[:, None] * a[:, None] * n ** b[:, None])
    stray = np.mean(np.log(lr_run / law.lr_opt(bs[:, None], n)) ** 2, axis=1)
    loss = law.floor(np.full(t.shape, model[1]), t, bs) + law.sharpness(t) * stray
    loss = loss + np.random.default_rng(seed).normal(0.0, law.noise_sd, size=loss.shape)
    same = functools.partial(np.full, t.shape)
    frame = _runs_frame(sweep_id, same(model[0]), same(model[1]), t, bs, same(lr_max), s, seq_len)
    return frame.assign(
        loss_eval=loss,
        status="ok",
        schedule="power",
        power_a=a,
        power_b=b,
        lr_max=lr_max,
        parametrisation="mup",
    )


def _runs_frame(sweep_id, model, n_params, tokens, batch_size, lr, seed, seq_len) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": [f"{sweep_id}-{i}" for i in range(len(tokens))],
            "model": model,
            "n_params": np.asarray(n_params, dtype="int64"),
            # The planted law has no width: unstated, as in rows from before these columns.
            "n_params_non_embedding": np.nan,
            "d_model": np.nan,
            "lr": np.asarray(lr, dtype=float),
            "batch_size": np.asarray(batch_size, dtype="int64"),
            "seq_len": seq_len,
            "tokens": np.asarray(tokens, float),
            "seed": np.asarray(seed, dtype="int64"),
            "sweep_id": sweep_id,
            # The planted law has no warmup or decay phase: these training settings are unstated, as in old
            # rows.
            "warmup_tokens": np.nan,
            "decay_fraction": np.nan,
            "decay_shape": None,
            "settings_id": None,
        }
    )
