"""The ids of every shipped spec stay what they were: a changed id orphans the rows stored under the old one.

`shipped_spec_ids.json` holds, per spec, the count and sha256 of every id its plan makes (lineage, budget
row, trunk row, study and settings ids; for an Optuna search also two trials' lineages), computed before the
code that makes them was restructured.
"""

import hashlib
import json
from pathlib import Path

import pytest

from powersweep.sweeps.data_check import check_data
from powersweep.sweeps.lineages import settings_id
from powersweep.sweeps.optuna_mode import trial_job
from powersweep.sweeps.plan import plan
from powersweep.sweeps.spec import load_spec, spec_from_dict

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = json.loads((Path(__file__).parent / "shipped_spec_ids.json").read_text())["specs"]
OPTUNA = "paper-power.yaml, search.mode optuna"


def shipped_specs() -> dict:
    """Each shipped spec as `plan` and `submit` plan it (a vocab_size of 'auto' set from its corpus)."""
    paths = sorted((ROOT / "sweeps" / "specs").glob("*.yaml"))
    specs = {p.name: check_data(load_spec(str(p))).spec for p in paths}
    power = specs["paper-power.yaml"].to_dict()
    power["search"].update(mode="optuna", power_a=[], power_b=[], n_trials=4)
    return {**specs, OPTUNA: spec_from_dict(power)}


def planned_ids(spec) -> list[str]:
    p = plan(spec)
    studies = getattr(p.mode, "studies", ())
    jobs = [*p.jobs, *(s.template for s in studies)]
    jobs += [trial_job(s, a, b) for s in studies for a, b in ((3.1, -0.41), (4.6, -0.51))]
    found = [s.study_id for s in studies]
    for job in jobs:
        found += [job.lineage_id, *job.row_ids, settings_id(job.config)]
    return sorted(found)


def test_every_shipped_spec_is_checked():
    assert sorted(shipped_specs()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_ids_of_a_shipped_spec_are_unchanged(name):
    found = planned_ids(shipped_specs()[name])
    assert len(found) == EXPECTED[name]["ids"]
    assert hashlib.sha256("\n".join(found).encode()).hexdigest() == EXPECTED[name]["sha256"]
