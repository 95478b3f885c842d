"""The result row's one declaration (powersweep.rows): a trainer's result and the sweep's columns are
exactly a stored row, with the store's schema in the same order."""

import dataclasses
import datetime as dt
import math

from powersweep.proxy_models.train_config import DataConfig, TrainConfig
from powersweep.proxy_models.trainer import Trainer
from powersweep.rows import COLUMNS, SWEEP, RunResult
from powersweep.sweeps.schema import SCHEMA, rows_to_table, table_to_frame


def test_a_trainers_result_and_the_sweeps_columns_are_a_whole_stored_row():
    config = TrainConfig(model="cpu-xxs", batch_size=2, tokens=2 * 64 * 4, data=DataConfig(eval_tokens=256))
    result = Trainer(config).run()
    assert isinstance(result, RunResult)
    sweep = {c.name: f"{c.name}-value" for c in COLUMNS if c.by == SWEEP and c.type is str}
    row = {**result.to_row(), **sweep, "created_at": dt.datetime.now(dt.UTC)}
    assert set(row) == {c.name for c in COLUMNS}  # every column, from one side or the other, and no other
    stored = table_to_frame(rows_to_table([row], defaults={})).iloc[0]
    assert list(SCHEMA.names) == [c.name for c in COLUMNS]
    assert (
        stored["loss_eval"] == result.loss_eval and stored["tokens"] == config.steps * config.tokens_per_step
    )
    assert stored["phase"] == "final" and stored["parametrisation"] == "mup" and math.isfinite(stored["mfu"])


def test_run_result_defaults_only_the_columns_rows_from_before_them_lack():
    fields = dataclasses.fields(RunResult)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    assert defaults.keys() == {
        "mfu_attention",
        "parametrisation",
        "phase",
        "execution",
        "data_fingerprint",
        "data_held_out",
    }
    assert defaults["data_fingerprint"] == defaults["data_held_out"] == ""  # unknown in older rows
    assert math.isnan(defaults["mfu_attention"]) and defaults["phase"] == "final"
