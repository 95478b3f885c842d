import hashlib
import json
from pathlib import Path

import pytest
from tiny_sweep import TINY

from powersweep.proxy_models.memory import CUDA_CONTEXT_BYTES, USABLE_FRACTION, device_budget, step_memory
from powersweep.sweeps.plan import format_memory_table, format_plan, memory_table, plan
from powersweep.sweeps.spec import load_spec, spec_from_dict
from powersweep.sweeps.sweep import gpu_memory
from powersweep.sweeps.trials import gpu_share, trial_budget_gib, trial_memory

SPECS = Path(__file__).parents[2] / "sweeps" / "specs"


def test_paper_table2_grid_ratio_is_0552():
    p = plan(load_spec(str(SPECS / "paper-wsd.yaml")))
    summary = p.summary()
    assert summary["runs"] == 3 * 6 * 8 * 8 and summary["lineages"] == 3 * 6 * 8
    assert summary["ratio"] == pytest.approx(0.552, abs=5e-4)


def spec(**search):
    return spec_from_dict(
        {
            "name": "t",
            "search": {"lr": [0.01, 0.02], "tokens": ["1M", "2M"], **search},
            "train": {"seq_len": 64},
        }
    )


def test_ids_are_deterministic_and_independent_of_other_grid_values():
    small, extended = plan(spec()), plan(spec(lr=[0.01, 0.02, 0.04], tokens=["1M", "2M", "4M"]))
    assert plan(spec()).jobs == small.jobs  # same spec, same ids
    old_runs = {r for j in small.jobs for r in j.run_ids}
    new_runs = {r for j in extended.jobs for r in j.run_ids}
    assert old_runs < new_runs and len(new_runs) == 9  # extending keeps every finished run_id
    assert len({j.lineage_id for j in extended.jobs}) == 3


def test_parametrisations_are_a_grid_that_keeps_the_mup_ids():
    mup_only, both = plan(spec()), plan(spec(parametrisation=["mup", "sp"]))
    assert (
        len(both.jobs) == 2 * len(mup_only.jobs)
        and both.summary()["runs"] == spec(parametrisation=["mup", "sp"]).planned_runs
    )
    mup_jobs = [j for j in both.jobs if j.config.model_overrides.get("use_mup", True)]
    sp_jobs = [j for j in both.jobs if j.config.model_overrides.get("use_mup") is False]
    assert mup_jobs == list(mup_only.jobs)  # adding sp to a muP sweep runs only the new cells
    assert len(sp_jobs) == len(mup_only.jobs) and not {j.lineage_id for j in sp_jobs} & {
        j.lineage_id for j in mup_jobs
    }
    assert {j.config.proxy.use_mup for j in sp_jobs} == {False}


def test_parametrisation_is_chosen_in_one_place():
    with pytest.raises(ValueError, match=r"model_overrides.use_mup and search.parametrisation"):
        spec_from_dict(
            {
                "name": "t",
                "search": {"lr": [0.01], "tokens": ["1M"], "parametrisation": ["mup", "sp"]},
                "train": {"seq_len": 64, "model_overrides": {"use_mup": False}},
            }
        )
    with pytest.raises(ValueError, match=r"repeats a value"):
        spec(parametrisation=["sp", "sp"])
    with pytest.raises(ValueError, match=r"parametrisation"):
        spec(parametrisation=["standard"])


def test_cosine_budgets_become_solo_lineages():
    p = plan(
        spec_from_dict(
            {
                "name": "c",
                "search": {"lr": [0.01], "tokens": ["1M", "2M"]},
                "train": {"schedule": "cosine", "seq_len": 64},
            }
        )
    )
    assert len(p.jobs) == 2 and p.summary()["ratio"] == pytest.approx(1.0) and p.notes
    assert p.jobs[0].lineage_id != p.jobs[1].lineage_id


def test_trunk_row_ids_are_planned_and_independent_of_other_grid_values():
    small, extended = plan(spec()), plan(spec(lr=[0.01, 0.02, 0.04], tokens=["1M", "2M", "4M"]))
    job = small.jobs[0]
    seq = 16 * 64  # tokens per step
    assert job.trunk_tokens == tuple(int(t * 0.9 // seq) * seq for t in job.budgets)  # the forks, decay 10%
    assert len(set(job.trunk_run_ids)) == 2 and not set(job.trunk_run_ids) & set(job.run_ids)
    assert small.row_ids == {r for j in small.jobs for r in j.run_ids + j.trunk_run_ids}
    assert small.row_ids < extended.row_ids  # trunk ids, like run ids, survive extending the grid


def test_packs_group_schedule_variants_and_keep_ids():
    values = {
        "name": "p",
        "search": {"lr": [0.01, 0.02, 0.04], "batch_size": [8, 16], "tokens": ["1M", "2M"]},
        "train": {"seq_len": 64},
    }
    solo = plan(spec_from_dict(values))
    packed = plan(spec_from_dict({**values, "run": {"pack": 2}}))
    assert packed.jobs == solo.jobs and packed.row_ids == solo.row_ids  # ids do not depend on pack
    assert [len(t.members) for t in packed.trials] == [2, 1, 2, 1] and len(solo.trials) == 6
    for trial in packed.trials:  # one batch size per pack, the lrs differ
        assert len({m.config.batch_size for m in trial.members}) == 1
        assert len({m.config.schedule.lr for m in trial.members}) == len(trial.members)
    power = plan(
        spec_from_dict(
            {
                "name": "w",
                "search": {
                    "power_a": [3.0, 4.0],
                    "power_b": [-0.5],
                    "tokens": ["1M"],
                    "lr_max": [0.01, 0.02],
                },
                "train": {"schedule": "power", "seq_len": 64},
                "run": {"pack": 8},
            }
        )
    )
    assert [len(t.members) for t in power.trials] == [4]


def test_packs_group_the_lineages_of_several_seeds():
    values = {
        "name": "p",
        "search": {"lr": [0.01, 0.02], "batch_size": [8, 16], "tokens": ["1M", "2M"], "seeds": [0, 1]},
        "train": {"seq_len": 64},
    }
    packed = plan(spec_from_dict({**values, "run": {"pack": 4}}))
    assert packed.row_ids == plan(spec_from_dict(values)).row_ids
    assert [len(t.members) for t in packed.trials] == [4, 4]
    for trial in packed.trials:  # one batch size per pack, every (lr, seed) once
        assert len({m.config.batch_size for m in trial.members}) == 1
        assert {(m.config.schedule.lr, m.config.seed) for m in trial.members} == {
            (lr, seed) for lr in (0.01, 0.02) for seed in (0, 1)
        }


def test_ids_of_stored_sweeps_do_not_change_with_execution_settings():
    # Values computed before the head, checkpointing and memory-budget fields existed: a store written
    # then must still find its rows.
    job = plan(
        spec_from_dict(
            {"name": "t", "search": {"lr": [0.01], "tokens": ["1M", "2M"]}, "train": {"seq_len": 64}}
        )
    ).jobs[0]
    assert job.lineage_id == "b73efed7e3872189"
    assert job.run_ids == ("fb9298ccb8baed24", "986a1cf497d913ee")


GIB = 2**30


def gpu_spec(**run):
    return spec_from_dict(
        {
            "name": "g",
            "search": {
                "models": ["paper-12m"],
                "lr": [1e-3, 2e-3, 4e-3, 8e-3],
                "batch_size": [16],
                "tokens": ["4M", "8M"],
                "seeds": [0, 1],
            },
            "train": {"seq_len": 1024},
            "run": run,
        }
    )


@pytest.mark.parametrize("gpu_gib", [8, 24, 80])
def test_pack_auto_packs_as_many_variants_as_the_estimate_fits(gpu_gib):
    p = plan(gpu_spec(pack="auto"), gpu_bytes=gpu_gib * GIB)
    sizes = {len(t.members) for t in p.trials}
    k = max(sizes)
    config = p.trials[0].config

    def trial_peak(variants: int) -> int:  # the step and the trunk copy a lineage holds while a branch decays
        copy = 3 * variants * config.proxy.num_params() * 4
        return step_memory(config.proxy, micro_batch_size=16, variants=variants).peak + copy

    assert trial_peak(k) <= device_budget(gpu_gib * GIB)
    if k < 8:  # one more variant would not fit (4 lrs x 2 seeds is the most a trial can pack here)
        assert trial_peak(k + 1) > device_budget(gpu_gib * GIB)
    assert sorted(r for t in p.trials for m in t.members for r in m.row_ids) == sorted(p.row_ids)
    assert p.row_ids == plan(gpu_spec()).row_ids  # ids do not depend on packing


def test_pack_auto_without_gpu_memory_is_one_per_trial_with_a_note():
    p = plan(gpu_spec(pack="auto", gpus_per_trial=1))
    assert {len(t.members) for t in p.trials} == {1} and any("no GPU memory known" in n for n in p.notes)


def test_pack_auto_on_the_cpu_ignores_gpu_memory():
    """Trials that ask for no GPU run on the CPU: run.gpu_memory sizes nothing there."""
    on_cpu = gpu_spec(pack="auto", gpu_memory="80GiB")
    p = plan(on_cpu)
    assert p.gpu_bytes is None and {len(t.members) for t in p.trials} == {1}
    assert any("trials run on the CPU" in n for n in p.notes) and gpu_memory(on_cpu) is None
    on_gpu = gpu_spec(pack="auto", gpu_memory="80GiB", gpus_per_trial="auto")
    assert (
        gpu_memory(on_gpu) == plan(on_gpu).gpu_bytes == 80 * GIB
        and max(len(t.members) for t in plan(on_gpu).trials) > 1
    )


@pytest.mark.parametrize("gpu_gib", [16, 80])
def test_a_trials_gpu_share_covers_its_estimate_and_a_small_request_is_raised(gpu_gib):
    gpu_bytes = gpu_gib * GIB
    trial = plan(gpu_spec(pack=4), gpu_bytes=gpu_bytes).trials[0]
    share, note = gpu_share(trial, gpu_bytes=gpu_bytes)
    trunk_copy = 3 * 4 * trial.config.proxy.num_params() * 4  # 4 variants' weights and AdamW moments, fp32
    need = CUDA_CONTEXT_BYTES + trial_memory(trial, gpu_bytes=gpu_bytes).memory.peak + trunk_copy
    assert need <= share * gpu_bytes * USABLE_FRACTION < need + 0.01 * gpu_bytes and note is None
    per_gpu = int(1 / share)  # what Ray places on one GPU: their estimates fit together
    assert per_gpu * need <= gpu_bytes * USABLE_FRACTION
    raised, note = gpu_share(trial, gpu_bytes=gpu_bytes, requested=share / 2)
    assert raised == share and "run.gpus_per_trial=" in note and "\n" not in note
    assert gpu_share(trial, gpu_bytes=gpu_bytes, requested=1.0) == (1.0, None)  # more than needed is kept
    budget = trial_budget_gib(trial, share, gpu_bytes=gpu_bytes) * GIB
    # the step fits beside the trunk copy
    assert budget >= trial_memory(trial, gpu_bytes=gpu_bytes).memory.peak
    assert budget + trunk_copy + CUDA_CONTEXT_BYTES <= share * gpu_bytes * USABLE_FRACTION + 1


def test_plan_gpu_memory_table_shows_each_trials_share():
    p = plan(gpu_spec(pack="auto", gpus_per_trial="auto"), gpu_bytes=80 * GIB)
    [row] = memory_table(p, gpu_bytes=80 * GIB)
    # 4 lrs x 2 seeds, one trial
    assert row["pack"] == 8 and row["trials_per_gpu"] == int(1 / row["gpu_share"]) >= 1
    assert "GPU share" in format_memory_table([row], gpu_bytes=80 * GIB)


# sha256 of the sorted row ids (budget rows and trunk evaluations) each shipped spec planned at 37f4688, when
# `compile` was a bool that sweeps left False: a stored sweep keeps its ids now that compile is 'auto'.
IDS_AT_37F4688 = {
    "cpu-quick": (96, "23e969df9f8d3ecb"),
    "paper-wsd": (2304, "ae8aeb6eabbe1e11"),
    "paper-power": (1750, "a3c39c11d7f37027"),
    "cpu-quick-adaptive": (8, "36cf089eb5f41932"),
}


@pytest.mark.parametrize("name", sorted(IDS_AT_37F4688))
def test_shipped_specs_plan_the_row_ids_they_planned_before_compile_became_an_execution_detail(name):
    ids = sorted(plan(load_spec(str(SPECS / f"{name}.yaml"))).row_ids)
    assert (len(ids), hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]) == IDS_AT_37F4688[name]


def test_compile_changes_no_id():
    def planned(compile):
        return plan(
            spec_from_dict(
                {
                    "name": "t",
                    "search": {"lr": [0.01, 0.02], "tokens": ["1M", "2M"]},
                    "train": {"seq_len": 64},
                    "run": {"compile": compile},
                }
            )
        )

    plans = [planned(c) for c in ("auto", True, False)]
    assert [p.jobs[0].config.compile for p in plans] == [
        "auto",
        True,
        False,
    ]  # the spec's choice reaches the run
    assert plans[0].row_ids == plans[1].row_ids == plans[2].row_ids
    graphed = plan(
        spec_from_dict(
            {
                "name": "t",
                "search": {"lr": [0.01, 0.02], "tokens": ["1M", "2M"]},
                "train": {"seq_len": 64},
                "run": {"compile_mode": "reduce-overhead", "compile_scope": "trunk"},
            }
        )
    )
    assert graphed.jobs[0].config.compile_mode == "reduce-overhead" and graphed.row_ids == plans[0].row_ids
    assert graphed.jobs[0].config.compile_scope == "trunk"
    assert [j.lineage_id for j in plans[0].jobs] == [j.lineage_id for j in plans[1].jobs]


def test_a_plan_of_one_lineage_says_so_in_the_singular():
    spec = spec_from_dict({**TINY, "search": {**TINY["search"], "lr": [0.004], "tokens": [1024]}})
    assert format_plan(plan(spec)).splitlines()[0] == (
        "sweep tiny: 1 run in 1 lineage (1 trial), plus 1 trunk evaluation"
    )
