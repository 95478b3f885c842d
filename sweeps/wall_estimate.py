"""How long a sweep would take on a GPU, from the rates measured on that GPU (benchmarks/RESULTS.md).

`RATES` holds training tokens/s of one trial (all its packed variants together) per device, preset, batch x
seq and pack, each with where it was measured. A plan's trials are matched to the measured shape nearest to
theirs (same device and preset; then the nearest pack, and the nearest tokens per step) and their tokens
divided by its rate; trials run `slots` at a time, and the fixed start-up measured on the device is added.
A shape not measured itself runs no faster than the device's host can issue its steps (`HOST_PACED`).
The estimate says which shape it stands on, whether that shape is the trial's own or a neighbour's, and
whether the host set the pace. Nothing here imports torch or Ray: `plan` stays light.

>>> estimate_wall(plan(spec, gpu_bytes=80 * GIB), "H100").format()
'estimated wall on H100: 5m47s (2.688e+08 tokens; nearest measured shape: ...; start-up 40 s)'
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass

from powersweep.proxy_models.shapes import PRESETS
from powersweep.proxy_models.train_config import CUDA_GRAPH_MODES, TrainConfig
from powersweep.sweeps.plan import Plan

GPUS = ("H100", "H200", "A100", "L40S", "B200")  # the names a CUDA device name contains, and --gpu takes
# memory of each, for `pack: auto` where the spec names none (the 80 GB A100 and H100; data sheets)
GPU_BYTES = {"H100": 80 << 30, "H200": 141 << 30, "A100": 80 << 30, "L40S": 48 << 30, "B200": 180 << 30}


@dataclass(frozen=True)
class MeasuredRate:
    device: str  # one of GPUS
    preset: str
    batch_size: int  # sequences per step of each variant
    seq_len: int
    pack: int  # variants trained together in one trial (1: solo)
    tokens_per_s: float  # training tokens of the trial (all variants) per second of training
    source: str  # where in benchmarks/RESULTS.md

    @property
    def step_tokens(self) -> int:
        return self.batch_size * self.seq_len * self.pack


_H100_2, _H100_3 = "The GPU tables, one H100, second run", "The GPU tables, one H100, third run, call 2"
_H200 = "The GPU tables, one H200, call 2"
RATES: tuple[MeasuredRate, ...] = (
    MeasuredRate("H100", "paper-12m", 16, 4096, 1, 951_314, _H100_3),
    MeasuredRate("H100", "paper-12m", 512, 4096, 1, 1_099_529, _H100_3),
    MeasuredRate("H100", "paper-36m", 16, 4096, 1, 545_317, _H100_3),
    MeasuredRate("H100", "paper-36m", 512, 4096, 1, 601_743, _H100_3),
    MeasuredRate("H100", "paper-121m", 16, 4096, 1, 284_869, _H100_3),
    MeasuredRate("H100", "paper-121m", 512, 4096, 1, 288_462, _H100_3),
    MeasuredRate("H100", "paper-12m", 16, 1024, 1, 219_200, f"{_H100_2}, call 2 (the solo run)"),
    # the sweep's tokens/s of wall over its share of training: 16 packed variants of 4 seeds
    MeasuredRate("H100", "paper-12m", 16, 1024, 16, 1_034_651, f"{_H100_2}, call 2: 826,686 / 0.799"),
    MeasuredRate("H200", "paper-12m", 16, 1024, 1, 257_962, _H200),
    MeasuredRate("H200", "paper-12m", 16, 1024, 8, 1_378_335, _H200),
    MeasuredRate("H200", "paper-12m", 16, 4096, 1, 861_761, _H200),
    MeasuredRate("H200", "paper-12m", 16, 4096, 8, 1_160_632, _H200),
)
# A small model's step waits on the host: it issues about 53 kernel launches a layer however few tokens it
# holds (paper-12m, 32 layers: 1,684 solo, 1,718 for 8 packed variants; RESULTS.md, "The GPU tables, one
# H200"), and its kernels finish before the next ones are issued. So a step takes at least the host's time
# per layer times the layers, here the step time of the smallest step measured on the device, paper-12m
# solo at 16 x 1024 (74.7 ms on the H100, 63.5 ms on the H200), whose kernels are a fraction of it. That is
# the host's pace without CUDA graphs; a trial that may replay them (a solo run under compile_mode 'auto',
# or a CUDA-graph mode) is not held to it.
HOST_PACED = {
    r.device: r for r in RATES if (r.preset, r.batch_size, r.seq_len, r.pack) == ("paper-12m", 16, 1024, 1)
}

# Wall before the first training step and after the last (Ray's start, the trial's process, CUDA context,
# building and compiling the variants, the end): the H100 sweep's 250 s wall less its training, eval,
# checkpoints and store writes, about 40 s (RESULTS.md, second run, call 2).
STARTUP_S = {"H100": 40.0, "H200": 40.0}


@dataclass(frozen=True)
class Estimate:
    device: str
    seconds: float
    tokens: int
    basis: tuple[MeasuredRate, ...]  # the measured shapes the trials stood on
    exact: bool  # every trial's own shape was measured
    host_step_s: float = 0.0  # the longest step held to the host's pace (HOST_PACED); 0: none was

    def format(self) -> str:
        shapes = "; ".join(
            f"{r.preset} {r.batch_size} x {r.seq_len}, pack {r.pack}: {r.tokens_per_s / 1e6:.3g}M tokens/s"
            for r in self.basis[:3]
        ) + ("; ..." if len(self.basis) > 3 else "")
        kind = "measured" if self.exact else "nearest measured shape"
        host = (
            f"; held to the host's pace, {self.host_step_s * 1e3:.1f} ms a step at least"
            if self.host_step_s
            else ""
        )
        return (
            f"estimated wall on {self.device}: {_duration(self.seconds)} ({self.tokens:.4g} tokens; "
            f"{kind}: {shapes}{host}; start-up {STARTUP_S.get(self.device, 0):.0f} s)"
        )


def device_name(named: str | None = None) -> str | None:
    """The GPU model (one of GPUS) `named` gives (e.g. 'h100', 'NVIDIA H100 80GB HBM3'), else this machine's
    first GPU as nvidia-smi names it; None when neither names one."""
    if named is None:
        named = _detected()
    if named is None:
        return None
    found = [g for g in GPUS if g.lower() in named.lower()]
    if not found:
        measured = sorted({r.device for r in RATES})
        raise ValueError(f"--gpu {named!r}: not a GPU known here; rates are measured on {measured}")
    return found[0]


def _detected() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def estimate_wall(p: Plan, device: str, *, slots: int = 1) -> Estimate | None:
    """The wall `p`'s trials would take on `device` (one of GPUS) with `slots` GPUs; trials sharing one GPU
    share its rate, so their times add. None when no rate of the device and the trials' presets was
    measured."""
    from powersweep.proxy_models.budgets import planned_tokens

    trials = p.trials
    if not trials:
        return None
    busy, basis, exact, tokens, host_step_s = [], [], True, 0, 0.0
    for trial in trials:
        config, pack = trial.config, len(trial.members)
        rate = _nearest(device, config.model, config.batch_size, config.proxy.seq_len, pack)
        if rate is None:
            return None
        trial_tokens = sum(planned_tokens(m.config, m.budgets) for m in trial.members)
        tokens_per_s = rate.tokens_per_s
        own = (rate.batch_size, rate.seq_len, rate.pack) == (config.batch_size, config.proxy.seq_len, pack)
        floor = None if own else host_step_floor(device, config, pack)
        step_tokens = config.batch_size * config.proxy.seq_len * pack
        if floor is not None and step_tokens / floor < tokens_per_s:
            tokens_per_s, host_step_s = step_tokens / floor, max(host_step_s, floor)
        busy.append(trial_tokens / tokens_per_s)
        tokens += trial_tokens
        exact &= own
        if rate not in basis:
            basis.append(rate)
    seconds = _makespan(busy, slots) + STARTUP_S.get(device, 0.0)
    return Estimate(device, seconds, tokens, tuple(basis), exact, host_step_s)


def no_estimate(p: Plan, device: str) -> str:
    """Why `estimate_wall` has none for `p` on `device`, as plan prints it: the trials' presets that have no
    rate measured there, and the presets measured on each device (so a user can name one that has)."""
    if not p.trials:  # an Optuna search: a plan always has trials otherwise
        return "estimated wall: none, its trials are chosen while it runs"
    measured: dict[str, set[str]] = {}
    for rate in RATES:
        measured.setdefault(rate.device, set()).add(rate.preset)

    order = {name: i for i, name in enumerate(PRESETS)}

    def names(presets: set[str]) -> str:  # smallest first, as PRESETS lists them
        return ", ".join(sorted(presets, key=lambda name: (order.get(name, len(order)), name)))

    missing = names({t.config.model for t in p.trials} - measured.get(device, set()))
    where = "; ".join(f"{name}: {names(presets)}" for name, presets in sorted(measured.items()))
    return f"estimated wall: no rate measured on {device} for {missing} (measured: {where})"


def host_step_floor(device: str, config: TrainConfig, pack: int) -> float | None:
    """The fewest seconds a step of `config` takes on `device` without CUDA graphs (HOST_PACED), scaled by
    its layers; None where the trial may replay CUDA graphs or the device's pace was not measured."""
    paced = HOST_PACED.get(device)
    graphs = config.compile_mode in CUDA_GRAPH_MODES or (config.compile_mode == "auto" and pack == 1)
    if paced is None or graphs:
        return None
    return paced.step_tokens / paced.tokens_per_s * config.proxy.n_layers / PRESETS[paced.preset].n_layers


def _nearest(device: str, preset: str, batch_size: int, seq_len: int, pack: int) -> MeasuredRate | None:
    """The measured shape closest to a trial's: its pack first (packing changes the rate most), then its
    tokens per step (a small step waits on the host, a large one on the chip), both on a log scale."""
    candidates = [r for r in RATES if r.device == device and r.preset == preset]
    if not candidates:
        return None
    step = batch_size * seq_len * pack
    return min(candidates, key=lambda r: (abs(math.log(r.pack / pack)), abs(math.log(r.step_tokens / step))))


def _makespan(seconds: list[float], slots: int) -> float:
    """Wall of running jobs of `seconds` longest first on `slots` slots (as the sweep orders its trials)."""
    ends = [0.0] * max(slots, 1)
    for s in sorted(seconds, reverse=True):
        i = ends.index(min(ends))
        ends[i] += s
    return max(ends)


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:,.0f} days"
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, rest = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"
