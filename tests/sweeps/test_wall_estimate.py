"""`plan`'s wall-time estimate on a GPU: from the rates measured on it, each traceable to RESULTS.md."""

import re
from pathlib import Path

import pytest

from powersweep.cli import main
from powersweep.sweeps.plan import plan
from powersweep.sweeps.spec import load_spec, spec_from_dict
from powersweep.sweeps.wall_estimate import (
    GPU_BYTES,
    HOST_PACED,
    RATES,
    STARTUP_S,
    device_name,
    estimate_wall,
    no_estimate,
)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = (ROOT / "benchmarks" / "RESULTS.md").read_text()


def gpu_spec(**search) -> dict:
    return {
        "name": "g",
        "search": {
            "models": ["paper-12m"],
            "batch_size": [16],
            "lr": [1e-3, 2e-3],
            "tokens": ["8M"],
            **search,
        },
        "train": {"seq_len": 4096, "warmup_tokens": "256K"},
        "run": {"gpus_per_trial": 1},
    }


def test_every_rate_is_one_measured_in_results():
    for rate in RATES:
        section = rate.source.split(",")[0]
        assert section in RESULTS, rate
        quotient = re.search(r"([\d,]+) / ([\d.]+)$", rate.source)
        if quotient:  # derived: tokens/s of wall over the share of it spent training
            wall, share = float(quotient[1].replace(",", "")), float(quotient[2])
            assert quotient[1] in RESULTS and rate.tokens_per_s == pytest.approx(wall / share, rel=1e-5)
        else:
            assert f"{rate.tokens_per_s:,.0f}" in RESULTS, rate


def test_a_measured_shape_gives_tokens_over_its_rate_plus_the_start_up():
    p = plan(spec_from_dict(gpu_spec()))  # solo trials of paper-12m at 16 x 4096: measured on the H100
    estimate = estimate_wall(p, "H100")
    rate = next(
        r
        for r in RATES
        if (r.device, r.preset, r.batch_size, r.seq_len, r.pack) == ("H100", "paper-12m", 16, 4096, 1)
    )
    assert estimate.exact and estimate.basis == (rate,)
    assert estimate.tokens == p.tokens_planned
    assert estimate.seconds == pytest.approx(p.tokens_planned / rate.tokens_per_s + STARTUP_S["H100"])
    twice = estimate_wall(plan(spec_from_dict(gpu_spec(tokens=["16M"]))), "H100")
    assert twice.seconds - STARTUP_S["H100"] == pytest.approx(
        2 * (estimate.seconds - STARTUP_S["H100"]), rel=0.02
    )


def test_a_shape_not_measured_stands_on_the_nearest_pack_then_step():
    spec = load_spec(str(ROOT / "sweeps" / "specs" / "gpu-quick.yaml"))
    spec = spec.model_copy(
        update={"train": spec.train.model_copy(update={"model_overrides": {"vocab_size": 256}})}
    )
    packed = estimate_wall(plan(spec, gpu_bytes=GPU_BYTES["H100"]), "H100")  # one trial of 8 variants
    assert not packed.exact and [(r.pack, r.batch_size, r.seq_len) for r in packed.basis] == [(16, 16, 1024)]
    solo = estimate_wall(plan(spec), "H100")  # no GPU memory known: one variant per trial
    assert [(r.pack, r.seq_len) for r in solo.basis] == [(1, 1024)] and solo.seconds > 3 * packed.seconds
    assert estimate_wall(plan(spec), "A100") is None  # nothing measured there


def test_without_a_rate_plan_names_the_preset_and_where_rates_are():
    models = {"models": ["paper-12m", "paper-121m"]}
    both = plan(spec_from_dict(gpu_spec(**models)))
    line = no_estimate(both, "H200")
    assert estimate_wall(both, "H200") is None
    measured = {}
    for rate in RATES:
        measured.setdefault(rate.device, []).append(rate.preset)
    missing = [m for m in models["models"] if m not in measured["H200"]]
    assert missing and line.startswith(f"estimated wall: no rate measured on H200 for {', '.join(missing)} (")
    shown = dict(part.split(": ") for part in line.split("(measured: ")[1].rstrip(")").split("; "))
    assert {d: set(p.split(", ")) for d, p in shown.items()} == {d: set(p) for d, p in measured.items()}
    assert no_estimate(plan(spec_from_dict(gpu_spec(models=["paper-12m"]))), "A100").startswith(
        "estimated wall: no rate measured on A100 for paper-12m ("
    )
    optuna = gpu_spec(mode="optuna", n_trials=4, a_range=[3.0, 5.0], b_range=[-0.6, -0.4])
    del optuna["search"]["lr"]  # the power schedule searches a and b instead
    searched = plan(spec_from_dict({**optuna, "train": {**optuna["train"], "schedule": "power"}}))
    assert not searched.trials and estimate_wall(searched, "H100") is None
    assert no_estimate(searched, "H100") == "estimated wall: none, its trials are chosen while it runs"


def packed_plan(*, run=None, **train):
    """Eight lrs in one pack at 16 x 512 on an H100: a step of 65,536 tokens, a shape measured nowhere (its
    neighbour: 16 variants at 16 x 1024, 1.03M tokens/s)."""
    spec = gpu_spec(lr=[1e-3 * 2**i for i in range(8)])
    spec["train"].update(seq_len=512, **train)
    spec["run"] = {"pack": "auto", "gpus_per_trial": "auto", **(run or {})}
    return plan(spec_from_dict(spec), gpu_bytes=GPU_BYTES["H100"])


def test_a_small_packed_step_is_held_to_the_hosts_pace_per_layer():
    p = packed_plan()
    assert [len(t.members) for t in p.trials] == [8]
    paced = HOST_PACED["H100"]  # paper-12m solo at 16 x 1024, 32 layers
    step_s = paced.step_tokens / paced.tokens_per_s
    assert step_s == pytest.approx(0.0747, abs=1e-4)  # RESULTS.md: 219,200 tokens/s of 16,384-token steps
    estimate = estimate_wall(p, "H100")
    assert not estimate.exact and estimate.host_step_s == pytest.approx(step_s)
    steps = p.tokens_planned / (8 * 16 * 512)
    assert estimate.seconds == pytest.approx(steps * step_s + STARTUP_S["H100"])
    assert "held to the host's pace, 74.7 ms a step at least" in estimate.format()
    assert p.tokens_planned / (estimate.seconds - STARTUP_S["H100"]) < estimate.basis[0].tokens_per_s
    # 1.5x the layers, 1.5x the launches a step; half the layers, and the neighbour's rate is the slower
    more = estimate_wall(packed_plan(model_overrides={"n_layers": 48}), "H100")
    assert more.host_step_s == pytest.approx(1.5 * step_s)
    assert more.seconds - STARTUP_S["H100"] == pytest.approx(1.5 * (estimate.seconds - STARTUP_S["H100"]))
    fewer = estimate_wall(packed_plan(model_overrides={"n_layers": 16}), "H100")
    assert fewer.host_step_s == 0.0 and fewer.basis == estimate.basis


def test_a_trial_that_may_replay_cuda_graphs_or_whose_shape_was_measured_keeps_its_rate():
    graphs = estimate_wall(packed_plan(run={"compile_mode": "reduce-overhead"}), "H100")
    assert len(graphs.basis) == 1 and graphs.host_step_s == 0.0 and "host's pace" not in graphs.format()
    solo = gpu_spec()
    solo["train"]["seq_len"] = 512  # solo under compile_mode 'auto': its trunk may replay as CUDA graphs
    assert estimate_wall(plan(spec_from_dict(solo)), "H100").host_step_s == 0.0
    solo["run"]["compile_mode"] = "default"
    assert estimate_wall(plan(spec_from_dict(solo)), "H100").host_step_s == pytest.approx(0.0747, abs=1e-4)
    solo["train"]["seq_len"] = 1024  # the measured shape: its own rate holds the host's pace already
    measured = estimate_wall(plan(spec_from_dict(solo)), "H100")
    assert measured.exact and measured.host_step_s == 0.0


def test_gpu_names_and_detection():
    assert device_name("NVIDIA H100 80GB HBM3") == device_name("h100") == "H100"
    with pytest.raises(ValueError, match=r"--gpu 'V100': not a GPU known here; rates are measured on"):
        device_name("V100")


def test_plan_prints_the_estimate_of_a_gpu_spec(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)  # no nvidia-smi: no GPU detected here
    spec = tmp_path / "g.yaml"
    spec.write_text(__import__("yaml").safe_dump(gpu_spec()))
    assert main(["plan", str(spec)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "estimated wall: no GPU here; name one with --gpu (e.g. --gpu H100)"
    )
    assert main(["plan", str(spec), "--gpu", "H100"]) == 0
    assert re.search(
        r"^estimated wall on H100: (\d+m)?\d+s \(1.599e\+07 tokens; measured: paper-12m 16 x 4096",
        capsys.readouterr().out,
        re.M,
    )
    assert main(["plan", str(spec), "--gpu", "V100"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
