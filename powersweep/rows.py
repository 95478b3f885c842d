"""The result row, declared once: one evaluation of one run at one token budget.

Each `Column` names its Python type, who fills it in, its unit and meaning ("unit / meaning") and whether a
stored row must give it. The proxy run fills in the `RUN` columns: `RunResult`, the row a trainer returns,
is made from them (proxy_models). The sweep that stores the row adds the `SWEEP` columns: ids and provenance
(sweeps/execute.py). The store's Arrow schema (sweeps/schema.py), the columns analysis reads
(analysis/table.py) and the docs' table of columns (docs/reference/results-table.md) derive from `COLUMNS`.

Every layer imports this module, so it imports nothing of the project, nor torch, pyarrow or pandas.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

RUN, SWEEP = "run", "sweep"  # who fills a column in
NO_DEFAULT = object()  # a RUN column that every RunResult must be given
STATUSES = ("ok", "diverged", "failed")
PHASES = ("final", "trunk")


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the results table."""

    name: str
    type: type  # str, int, float or datetime (a timezone-aware UTC timestamp)
    by: str  # RUN (a field of RunResult) or SWEEP (added when the row is stored)
    doc: str  # "unit / meaning", rendered in docs/reference/results-table.md
    required: bool = False  # a stored row must give a non-null value (created_at is filled in by the store)
    default: Any = NO_DEFAULT  # RunResult's default for a RUN column


datetime = dt.datetime
COLUMNS: tuple[Column, ...] = (
    Column(
        "sweep_id",
        str,
        SWEEP,
        "id / the sweep; the partition key, stored as the directory name sweep_id=<id>",
        required=True,
    ),
    Column(
        "run_id",
        str,
        SWEEP,
        "id / one evaluation of one run at one token budget; unique within a sweep",
        required=True,
    ),
    Column(
        "lineage_id",
        str,
        SWEEP,
        "id / the training trajectory; evaluations of one run at several token budgets share it",
        required=True,
    ),
    Column(
        "schedule",
        str,
        RUN,
        "name / learning-rate schedule, e.g. 'wsd', 'power', 'cosine', 'constant'",
        required=True,
    ),
    Column("model", str, RUN, "name / proxy model configuration", required=True),
    Column("n_params", int, RUN, "parameters / all trainable parameters, embeddings included"),
    Column("n_params_non_embedding", int, RUN, "parameters / trainable parameters excluding embeddings"),
    Column(
        "d_model",
        int,
        RUN,
        "width / the model's embedding size, the width muP scales (m_width = d_model / d_base under muP); "
        "null in rows from before it",
    ),
    Column(
        "m_width",
        float,
        RUN,
        "dimensionless / muP width multiplier, d_model / d_model of the base model",
    ),
    Column(
        "lr",
        float,
        RUN,
        "learning rate / peak learning rate of the muP base model (hidden matrices train at lr / m_width)",
        required=True,
    ),
    Column(
        "lr_max",
        float,
        RUN,
        "learning rate / upper cap of the schedule (Power scheduler); null where the schedule has none",
    ),
    Column(
        "power_a",
        float,
        RUN,
        "coefficient / a in the Power schedule lr(n) = min(lr_max, batch_size * a * n^b), batch_size in "
        "sequences, n in tokens seen; null for other schedules",
    ),
    Column(
        "power_b",
        float,
        RUN,
        "dimensionless / exponent b (negative) of the same Power schedule; null for other schedules",
    ),
    Column("batch_size", int, RUN, "sequences / sequences per optimizer step", required=True),
    Column("seq_len", int, RUN, "tokens / tokens per sequence", required=True),
    Column(
        "tokens",
        int,
        RUN,
        "tokens / training tokens seen at this evaluation: the token budget (phase 'final') or the tokens"
        " seen at the fork (phase 'trunk')",
        required=True,
    ),
    Column("warmup_tokens", int, RUN, "tokens / length of the warmup phase"),
    Column(
        "decay_fraction",
        float,
        RUN,
        "fraction 0-1 / share of `tokens` spent in the final decay phase; null without one",
    ),
    Column("decay_shape", str, RUN, "name / shape of the decay phase, e.g. 'linear', '1-sqrt', 'exp'"),
    Column("seed", int, RUN, "integer / random seed for initialisation and data order", required=True),
    Column("loss_eval", float, RUN, "nats/token / mean held-out cross-entropy at `tokens`"),
    Column("ppl_eval", float, RUN, "dimensionless / held-out perplexity, exp(loss_eval)"),
    Column(
        "loss_train",
        float,
        RUN,
        "nats/token / mean training loss over the last logging window before `tokens`",
    ),
    Column(
        "status",
        str,
        RUN,
        "label / 'ok' or 'diverged' (loss blew up, see diverged_at_tokens); 'failed' is accepted from "
        "other writers but never written by a sweep: a crashed trial is retried and writes its rows only "
        "once they are final",
        required=True,
    ),
    Column(
        "diverged_at_tokens",
        int,
        RUN,
        "tokens / tokens seen when divergence was detected; null unless status is 'diverged'",
    ),
    Column("wall_s", float, RUN, "seconds / wall-clock training time up to `tokens`"),
    Column(
        "tokens_per_s",
        float,
        RUN,
        "tokens/second / training throughput; in a packed trial (run.pack > 1) this variant's share: its "
        "tokens over the trial's wall time, so the trial's throughput is the sum over its variants",
    ),
    Column(
        "mfu",
        float,
        RUN,
        "fraction 0-1 / model FLOPs utilisation: 6 * n_params * tokens_per_s over the matmul peak of the "
        "run's precision (bf16 on CUDA: data sheet or measured; fp32 measured on CPU), at most 1; in a "
        "packed trial this variant's share, summing to the trial's MFU",
    ),
    Column(
        "mfu_attention",
        float,
        RUN,
        "fraction 0-1 / mfu with attention: (6 * n_params + 12 * n_layers * n_heads * d_head * seq_len) *"
        " tokens_per_s over the peak of the run's precision (bf16 on CUDA); null in rows from before it",
        default=math.nan,
    ),
    Column(
        "parametrisation",
        str,
        RUN,
        "name / 'mup' or 'sp' (standard parametrisation: search.parametrisation or model_overrides "
        "use_mup: false; proxy_models/model.py); null in rows from before it",
        default="mup",
    ),
    Column(
        "settings_id",
        str,
        SWEEP,
        "id / hash of the run's training settings other than its cell (model, batch_size, tokens) and its"
        " searched values (seed, lr, power_a, power_b, lr_max): warmup, decay, optimizer, data, model "
        "overrides; rows of one cell and lr with different settings_id were trained differently and are "
        "never averaged; null in rows from before it",
    ),
    Column(
        "data_fingerprint",
        str,
        RUN,
        "hash / the corpus the run trained and was evaluated on: its tokens (large token shards sampled),"
        " their split into train and held-out, and the vocabulary (proxy_models/data.py); rows of different"
        " data_fingerprint saw different data, and a sweep never mixes them; null in rows from before it",
        default="",
    ),
    Column(
        "data_held_out",
        str,
        RUN,
        "text / which tokens loss_eval was measured on, e.g. 'eval_source /data/fineweb_val_*.bin' or 'the"
        " last 5% of the tokens'; null in rows from before it",
        default="",
    ),
    Column(
        "device",
        str,
        RUN,
        "name / accelerator that trained the run, e.g. 'NVIDIA H100 80GB HBM3' or 'cpu'",
    ),
    Column(
        "phase",
        str,
        RUN,
        "label / 'final': a budget's result at the end of its decay (what analysis uses); 'trunk': the "
        "lineage's trunk evaluated at a fork point (stable-phase loss, not a budget result); null (files "
        "written before the column existed) reads as 'final'",
        default="final",
    ),
    Column("git_sha", str, SWEEP, "hex / git commit of the code that produced the row"),
    Column(
        "versions",
        str,
        SWEEP,
        "JSON text / object {package: version} of the packages that produced the row",
    ),
    Column(
        "execution",
        str,
        RUN,
        "JSON text / how the row's run executed: variants packed with it (`pack`), `micro_batch_size`, "
        "`activation_checkpointing`, whether the blocks were `compiled` (and `compile_error`, why not, "
        "where compiling failed and the run fell back to eager), CUDA out-of-memory errors absorbed by "
        "halving the micro-batch (`out_of_memory_shrinks`) and `pack_split` when an out-of-memory pack "
        "was retrained in smaller packs; null in rows from before it",
        default="",
    ),
    Column(
        "created_at",
        datetime,
        SWEEP,
        "UTC timestamp, microseconds / when the row was written (filled in on write if absent); the "
        "newest row wins when a run_id is stored twice",
        required=True,
    ),
)
del datetime

_RUN_NAMES = tuple(c.name for c in COLUMNS if c.by == RUN)
RunResult = dataclasses.make_dataclass(
    "RunResult",
    [
        (
            c.name,
            c.type,
            dataclasses.field() if c.default is NO_DEFAULT else dataclasses.field(default=c.default),
        )
        for c in COLUMNS
        if c.by == RUN
    ],
    kw_only=True,
    namespace={
        "__module__": __name__,
        "__doc__": "The outcome of one proxy run at one token budget: the RUN columns of its row. Counts may "
        "be whole floats and missing values NaN, as the store converts them (`tokens=2e6`, `lr_max=nan`).",
        # every field is a plain value: a shallow copy is the deep one, without asdict's recursion
        "to_row": lambda self: {name: getattr(self, name) for name in _RUN_NAMES},
    },
)
