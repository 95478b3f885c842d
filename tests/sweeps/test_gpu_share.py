"""Trials placed by their memory estimate's share of a GPU, through a local Ray that has one (logical) GPU."""

import json

import pytest

from powersweep.proxy_models.budgets import trunk_tokens
from powersweep.proxy_models.data import DataConfig
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.trainer import TrainConfig
from powersweep.sweeps.execute import ExecutionSettings, execute, trial_gpus
from powersweep.sweeps.lineages import LineageJob
from powersweep.sweeps.store import ResultStore
from powersweep.sweeps.trials import PackedJob

STEP = 4 * 32


@pytest.fixture(scope="module")
def ray_with_a_gpu():
    """A fresh local Ray that offers one GPU: Ray schedules by the resource, the trials train on the CPU."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def job(lr: float) -> LineageJob:
    budgets = (STEP * 6, STEP * 12)
    config = TrainConfig(
        model="cpu-xs",
        model_overrides={"seq_len": 32, "n_layers": 1},
        batch_size=4,
        tokens=max(budgets),
        schedule=ScheduleConfig(name="wsd", lr=lr, warmup_tokens=STEP),
        data=DataConfig(eval_tokens=1024),
        device="cpu",
    )
    lineage_id = f"lr{lr:g}"
    trunk = tuple(trunk_tokens(config, budgets))
    return LineageJob(
        lineage_id,
        config,
        budgets,
        tuple(f"{lineage_id}-{t}" for t in budgets),
        trunk,
        tuple(f"{lineage_id}-trunk-{t}" for t in trunk),
    )


@pytest.mark.slow
def test_trials_sized_by_their_estimate_share_a_gpu_and_store_every_row(tmp_path, ray_with_a_gpu):
    jobs = [PackedJob((job(1e-3), job(3e-3))), job(1e-2)]
    settings = ExecutionSettings(
        store_uri=str(tmp_path / "store"),
        sweep_id="t",
        checkpoint_root=str(tmp_path),
        gpu_memory_bytes=8 * 2**30,
    )  # a fake 8 GiB GPU: each trial takes a small share
    assert 0 < trial_gpus(jobs, settings) < 0.5
    report = execute(jobs, settings)
    assert report.failed_trials == 0 and report.slots == 2
    table = ResultStore(settings.store_uri).read(sweep_id="t").table
    members = [job(1e-3), job(3e-3), job(1e-2)]
    assert sorted(table["run_id"]) == sorted(r for m in members for r in m.row_ids)
    packs = {row.lineage_id: json.loads(row.execution)["pack"] for row in table.itertuples()}
    assert packs == {"lr0.001": 2, "lr0.003": 2, "lr0.01": 1}


def wide(lr: float) -> LineageJob:
    """A lineage whose step, not the CUDA context, sets its share of the GPU (planned, never trained here)."""
    config = TrainConfig(
        model="paper-12m",
        model_overrides={"seq_len": 512},
        batch_size=16,
        tokens=16 * 512 * 4,
        schedule=ScheduleConfig(name="wsd", lr=lr, warmup_tokens=512),
    )
    return LineageJob(f"wide{lr:g}", config, (config.tokens,), (f"wide{lr:g}",), (), ())


def test_each_trial_asks_for_its_own_jobs_share_and_a_trial_without_jobs_for_the_settings():
    from dataclasses import replace

    from powersweep.sweeps.execute import _resources

    settings = ExecutionSettings(
        store_uri="unused", sweep_id="t", checkpoint_root="unused", gpu_memory_bytes=8 * 2**30
    )
    pack, solo = PackedJob(tuple(wide(lr) for lr in (1e-3, 2e-3, 4e-3, 8e-3))), wide(1e-2)
    assert 0 < trial_gpus((solo,), settings) < trial_gpus((pack,), settings)
    resources = _resources(settings)
    for jobs in [(pack,), (solo,)]:  # a grid's trial, or a round's as its searcher hands it out
        assert resources({"jobs": jobs}).bundles == [{"CPU": 1.0, "GPU": trial_gpus(jobs, settings)}]
    optuna_trial = {"job": solo, "settings": settings}  # its share is the study's, set in gpus_per_trial
    assert _resources(replace(settings, gpus_per_trial=0.25))(optuna_trial).bundles == [
        {"CPU": 1.0, "GPU": 0.25}
    ]
