"""A sweep's identity is its settings: a spec that changes them under the same name is refused in one line, or
with --replace starts the sweep afresh (the earlier rows kept aside); grids may change."""

import json
import os

import pandas as pd
import pytest
import yaml
from test_sweep import TINY, submitted

from powersweep.cli import main
from powersweep.sweeps.identity import differences
from powersweep.sweeps.spec import spec_from_dict
from powersweep.sweeps.store import ResultStore
from powersweep.sweeps.sweep import status

WARMER = {**TINY, "train": {**TINY["train"], "warmup_tokens": 256}}


def with_search(spec: dict, **search) -> dict:
    return {**spec, "search": {**spec["search"], **search}}


def test_settings_that_differ_are_named_and_grids_and_run_are_not():
    tiny = spec_from_dict(TINY)
    assert differences(tiny, spec_from_dict(WARMER)) == ["train.warmup_tokens: 128.0 -> 256.0"]
    other_data = {**TINY, "train": {**TINY["train"], "data": {"eval_tokens": 2048}, "beta2": 0.99}}
    assert differences(tiny, spec_from_dict(other_data)) == [
        "train.beta2: 0.95 -> 0.99",
        "train.data.eval_tokens: 1024 -> 2048",
    ]
    overrides = {**TINY, "train": {**TINY["train"], "model_overrides": {"n_layers": 2}}}
    assert differences(tiny, spec_from_dict(overrides)) == [
        "train.model_overrides: {'n_layers': 1} -> {'n_layers': 2}"
    ]
    grids = with_search(TINY, lr=[0.002, 0.004], tokens=[1024], seeds=[0, 1], batch_size=[2, 4])
    run = {**TINY, "run": {"max_concurrent": 1, "pack": 2, "curves": False, "max_retries": 0}}
    assert differences(tiny, spec_from_dict(grids)) == [] and differences(tiny, spec_from_dict(run)) == []


def stored_rows(storage: str) -> dict:
    table = ResultStore(storage).read(sweep_id="tiny").table
    return dict(zip(table["run_id"], zip(table["created_at"], table["warmup_tokens"])))


def submit_cli(tmp_path, spec: dict, storage: str, *extra: str) -> int:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return main(["submit", str(path), "--storage", storage, *extra])


@pytest.mark.slow
def test_a_changed_spec_is_refused_replace_sets_the_old_rows_aside_and_grids_may_grow(
    tmp_path, local_ray, capsys
):
    storage = submitted(tmp_path, TINY)
    before, spec_json = (
        stored_rows(storage),
        (tmp_path / "store" / "sweeps" / "tiny" / "spec.json").read_text(),
    )
    capsys.readouterr()

    assert submit_cli(tmp_path, WARMER, storage) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.warmup_tokens: 128.0 -> 256.0" in err[0] and "--replace" in err[0]
    assert "new name" in err[0] and "Traceback" not in err[0]
    assert stored_rows(storage) == before  # refused: nothing trained, nothing written
    assert (tmp_path / "store" / "sweeps" / "tiny" / "spec.json").read_text() == spec_json

    # a grown grid runs
    assert submit_cli(tmp_path, with_search(TINY, lr=[0.004, 0.016, 0.064]), storage) == 0
    grown = stored_rows(storage)
    assert len(grown) == 12 and all(grown[r] == v for r, v in before.items())  # old rows untouched

    assert submit_cli(tmp_path, WARMER, storage, "--replace") == 0
    assert "were moved aside, kept" in capsys.readouterr().err
    now = stored_rows(storage)
    assert len(now) == 8 and {w for _, w in now.values()} == {256} and not set(now) & set(grown)
    aside = ResultStore(storage).replaced(sweep_id="tiny")
    assert len(aside) == 1 and aside[0].endswith("(12 rows, 3 curves)")  # every earlier file, kept
    folder = aside[0].split(" (")[0]
    assert len(os.listdir(os.path.join(folder, "results"))) == 3  # a file per lineage
    assert json.loads(open(os.path.join(folder, "spec.json")).read())["train"]["warmup_tokens"] == 128
    assert status(storage)["replaced"] == aside and status(storage)["counts"].get("missing") == 0
    assert main(["status", storage]) == 0
    assert f"replaced by --replace (kept, never read): {aside[0]}" in capsys.readouterr().out

    out = tmp_path / "report"  # the store as a whole: the replaced runs stay out of the analysis
    # 2 lrs: too few for a law
    main(["analyze", storage, "--out", str(out), "--no-figures", "--bootstrap", "0"])
    assert "rows sharing a cell differ" not in capsys.readouterr().err
    cells = pd.read_csv(out / "cells.csv")
    # none averaged
    assert len(cells) == 2 and (cells["n_runs"] == 2).all() and (cells["n_points"] == 2).all()
