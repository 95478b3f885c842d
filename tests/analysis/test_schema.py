"""The analysis table reads the store's schema
(sweeps/schema.py), the one definition of the results columns."""

import datetime as dt
import math

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from powersweep.analysis import table as analysis_table
from powersweep.analysis.table import load_table
from powersweep.sweeps.schema import PHASES, SCHEMA, STATUSES
from powersweep.sweeps.store import ResultStore

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_the_analysis_vocabulary_is_the_schemas():
    assert set(analysis_table.KNOWN) <= set(SCHEMA.names)
    assert analysis_table.STATUSES == STATUSES and analysis_table.PHASES == PHASES
    numeric = {
        name
        for name in analysis_table.KNOWN
        if pa.types.is_integer(SCHEMA.field(name).type) or pa.types.is_floating(SCHEMA.field(name).type)
    }
    assert set(analysis_table.NUMERIC) == numeric


def stored_row(
    i: int, *, lr: float, batch_size: int, tokens: int, loss: float, status: str, phase: str, schedule: str
) -> dict:
    """A row as a sweep stores it: every column a lineage writes."""
    power = schedule == "power"
    return {
        "run_id": f"run-{i}",
        "lineage_id": f"lin-{i // 2}",
        "schedule": schedule,
        "model": "cpu-xxs",
        "n_params": 40_000,
        "n_params_non_embedding": 30_000,
        "d_model": 32,
        "m_width": 1.0,
        "lr": lr,
        "lr_max": 0.02 if power else None,
        "power_a": 4.0 if power else None,
        "power_b": -0.5 if power else None,
        "batch_size": batch_size,
        "seq_len": 64,
        "tokens": tokens,
        "warmup_tokens": 0,
        "decay_fraction": 0.1,
        "decay_shape": "linear",
        "seed": i % 3,
        "loss_eval": loss,
        "ppl_eval": math.exp(loss),
        "loss_train": loss,
        "status": status,
        "diverged_at_tokens": tokens // 2 if status == "diverged" else None,
        "wall_s": 1.5,
        "tokens_per_s": 1e5,
        "mfu": 0.01,
        "mfu_attention": 0.012,
        "parametrisation": "mup",
        "device": "cpu",
        "phase": phase,
        "git_sha": "abc123",
        "versions": '{"torch": "2.13.0"}',
        "created_at": T0,
        "settings_id": "0123456789abcdef",
    }


rows_strategy = st.lists(
    st.builds(
        dict,
        lr=st.floats(1e-5, 1.0),
        batch_size=st.integers(1, 4096),
        tokens=st.integers(64, 10**12),
        loss=st.floats(0.5, 12.0),
        status=st.sampled_from(("ok", "diverged")),
        phase=st.sampled_from(PHASES),
        schedule=st.sampled_from(("wsd", "cosine", "power")),
    ),
    min_size=1,
    max_size=12,
).filter(lambda rows: any(r["phase"] == "final" for r in rows))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=rows_strategy)
def test_a_stored_row_round_trips_into_the_analysis_table(tmp_path_factory, values):
    rows = [stored_row(i, **v) for i, v in enumerate(values)]
    store = ResultStore(str(tmp_path_factory.mktemp("store")))
    store.write(rows, sweep_id="sweep-a", name="lin-0")
    from_files = load_table(store.results_dir)
    from_store = load_table(store.read(sweep_id="sweep-a").table)

    final = [r for r in rows if r["phase"] == "final"]
    for frame in (from_files, from_store):
        assert frame.attrs["trunk_rows_dropped"] == len(rows) - len(final)
        frame = frame.set_index("run_id").loc[[r["run_id"] for r in final]]
        assert list(frame["sweep_id"]) == ["sweep-a"] * len(final)
        for name in analysis_table.KNOWN:
            if name in ("run_id", "sweep_id"):
                continue
            expected = [r[name] for r in final]
            if name in analysis_table.NUMERIC:
                np.testing.assert_allclose(
                    frame[name].to_numpy(float), np.array(expected, dtype=float), rtol=1e-12
                )
            else:
                assert list(frame[name]) == expected, name
    columns = list(analysis_table.KNOWN)
    by_id = [
        frame[columns].sort_values("run_id").reset_index(drop=True) for frame in (from_files, from_store)
    ]
    pd.testing.assert_frame_equal(*by_id, check_dtype=False)
