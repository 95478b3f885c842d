"""What `submit` checks before it writes anything: each refusal is one line (SpecError or StoreError) naming
the field or path, the value and the fix, and leaves the store as it was.

- the data: the source and tokenizer exist, and the corpus they make holds the train and eval windows of
  every model's seq_len (checked by loading it, as a trial would: the embedded corpus comes from its cache, a
  text source is tokenized here once more than the trials tokenize it);
- the store: each directory the sweep writes takes a file (a probe, removed again);
- the disk: free space for the sweep's rows, curves and lineage checkpoints, estimated from the plan;
- memory: a CPU trial's estimated peak fits the memory of a node (GPU trials are sized against the GPU by
  the plan; see `sweeps.trials.gpu_share`).
"""

from __future__ import annotations

import glob
import os
import shutil
import uuid

from powersweep.proxy_models.budgets import trunk_tokens
from powersweep.proxy_models.memory import step_memory, trunk_copy_bytes
from powersweep.proxy_models.train_config import TrainConfig
from powersweep.sweeps.lineages import LineageJob
from powersweep.sweeps.plan import Plan
from powersweep.sweeps.spec import SpecError, SweepSpec, settings_for
from powersweep.sweeps.storage import write_failure
from powersweep.sweeps.store import StoreError
from powersweep.sweeps.trials import PackedJob

# Bytes on disk, measured on stored sweeps (cpu-quick): a result file is 10-13 KB, a lineage's curve 20-60 KB.
ROW_FILE_BYTES = 16 * 2**10
CURVE_FILE_BYTES = 96 * 2**10
TUNE_STATE_BYTES = 256 * 2**10  # Ray Tune's experiment state, per trial (the sweep's checkpoints/ray/)
SPACE_MARGIN_BYTES = 2**20  # logs, the spec, a curve's temporary copy while it is replaced
PROCESS_BYTES = 600 * 2**20  # a trial process before its model: Python, torch and Ray's worker (RSS measured)


def check_data(spec: SweepSpec) -> str:
    """The spec's data source and tokenizer must exist where the driver runs and make a corpus that serves the
    train and eval windows of every model, in ids its vocabulary holds, and, for token shards, the largest
    budget in one pass unless `train.data.repeat`: a bad corpus would otherwise fail inside every trial.
    Returns the corpus's fingerprint (the rows' data_fingerprint)."""
    from powersweep.proxy_models.data import (
        DataConfig,
        DataError,
        check_windows,
        is_shard_source,
        is_text_dataset,
        load_corpus,
        passes,
    )
    from powersweep.proxy_models.shapes import get_preset

    data = spec.train.data
    shards = is_shard_source(data.source) or is_text_dataset(data.source)  # read as token shards
    if (
        not shards
        and data.source != "embedded"
        and not glob.glob(os.path.expanduser(data.source), recursive=True)
    ):
        raise SpecError(
            f"train.data.source={data.source!r}: no such file, directory or glob match here: give an "
            "existing text file, directory, glob, token shards (.bin, .npy) or 'embedded'"
        )
    if data.tokenizer is not None and not os.path.isfile(os.path.expanduser(data.tokenizer)):
        raise SpecError(
            f"train.data.tokenizer={data.tokenizer!r}: no such file: give a tokenizer.json, or leave it "
            "out for bytes"
        )
    overrides = spec.train.model_overrides
    presets = {m: get_preset(m, **overrides) for m in spec.search.models}
    try:
        corpus = load_corpus(DataConfig(**settings_for(data, DataConfig)))
        for seq_len in sorted({spec.train.seq_len or p.seq_len for p in presets.values()}):
            check_windows(corpus, seq_len=seq_len, eval_tokens=data.eval_tokens)
    except DataError as error:  # token shards' errors name the file, or the setting as the spec does
        named = str(error).startswith(("source=", "eval_source=", "tokenizer="))
        where = "train.data: " if shards else f"train.data.source={_show(data.source)}: "
        raise SpecError(f"train.data.{error}" if named else f"{where}{error}") from None
    for model, preset in presets.items():
        if corpus.vocab_size > preset.vocab_size:
            raise SpecError(
                f"train.data: the corpus's ids come from a vocabulary of {corpus.vocab_size:,} and model "
                f"{model!r} has vocab_size {preset.vocab_size:,}: give the model that vocabulary "
                f"(train.model_overrides: {{vocab_size: {corpus.vocab_size}}}) or a smaller tokenizer"
            )
    largest = max(spec.search.tokens)
    if shards and not data.repeat and passes(corpus, largest) > 1:
        raise SpecError(
            f"train.data: the train split holds {len(corpus.train):,} tokens and the largest budget, "
            f"{largest:,.0f}, would read it {passes(corpus, largest):.2f} times: add shards, lower the "
            "budget, or allow repeats with train.data.repeat: true"
        )
    return corpus.fingerprint


def _show(source) -> str:
    return repr(source) if isinstance(source, str) else repr(list(source))


def check_writable(paths: list[str]) -> None:
    """Each local directory in `paths` (or, where it does not exist yet, its nearest existing parent) must
    take a new file: a probe file is created and removed. StoreError naming the directory, why and the fix."""
    for path in paths:
        directory = _existing(path)
        probe = os.path.join(directory, f".powersweep-probe-{uuid.uuid4().hex}")
        try:
            with open(probe, "wb"):
                pass
            os.remove(probe)
        except OSError as error:
            where = "" if directory == path else f" in {directory}, the nearest folder that exists,"
            raise StoreError(
                f"{path}: cannot write{where} before the sweep starts: {write_failure(error)}"
            ) from None


def check_free_space(p: Plan, *, directory: str, stored_rows: int = 0) -> None:
    """The filesystem of `directory` must have room for what the plan writes there (`sweep_bytes`), less the
    rows already stored. StoreError with both numbers and the fix."""
    need = sweep_bytes(p) - stored_rows * ROW_FILE_BYTES
    free = shutil.disk_usage(_existing(directory)).free
    if need > free:
        raise StoreError(
            f"storage {directory!r}: the sweep needs about {_mib(need)} for its rows, curves and "
            f"checkpoints and its filesystem has {_mib(free)} free: free space there, or give another "
            "--storage"
        )


def sweep_bytes(p: Plan) -> int:
    """Estimated bytes a sweep writes beside its store: a file per row, a curve per lineage, and per trial two
    trunk checkpoints (the file and its replacement while it is written) and Tune's state."""
    trials = _trials(p)
    rows = sum(n * len(job.row_ids) for job, n in p.mode.lineages())
    checkpoints = sum(2 * trunk_copy_bytes(t.config.proxy, variants=_variants(t)) for t in trials)
    return (
        rows * ROW_FILE_BYTES
        + p.lineages * CURVE_FILE_BYTES
        + checkpoints
        + len(trials) * TUNE_STATE_BYTES
        + SPACE_MARGIN_BYTES
    )


def check_host_memory(p: Plan, *, node_bytes: float, where: str) -> None:
    """A CPU trial's estimated peak (`host_bytes`) must fit a node of `node_bytes` (`where` names it)."""
    need, trial = max(((host_bytes(t), t) for t in _trials(p)), key=lambda pair: pair[0], default=(0, None))
    if trial is not None and need > node_bytes:
        raise SpecError(
            f"model {trial.config.model!r} at batch_size {trial.config.batch_size} needs about "
            f"{_mib(need)} of host memory per trial and {where} has {_mib(node_bytes)}: train a smaller "
            "model (train.model_overrides) or batch_size, or run on a larger node"
        )


def host_bytes(trial: LineageJob | PackedJob) -> int:
    """Estimated peak bytes of a trial training on the CPU: its step at the whole batch (fp32, the chunked
    head), the trunk copy its lineage keeps while a branch decays, and the process itself."""
    config: TrainConfig = trial.config
    width = 8 if config.dtype == "float64" else 4
    step = step_memory(
        config.proxy,
        micro_batch_size=config.batch_size,
        compute_bytes=width,
        param_bytes=width,
        head="chunked",
        variants=_variants(trial),
    ).peak
    trunk = trunk_copy_bytes(config.proxy, variants=_variants(trial), param_bytes=width)
    return step + (trunk if trunk_tokens(config, trial.budgets) else 0) + PROCESS_BYTES


def _trials(p: Plan) -> list[LineageJob | PackedJob]:
    """The plan's trials, each study's template standing for its trials
    and each adaptive search's first round."""
    return p.sized_trials


def _variants(trial: LineageJob | PackedJob) -> int:
    return len(trial.members) if isinstance(trial, PackedJob) else 1


def _existing(path: str) -> str:
    """`path`, or its nearest existing parent."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _mib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
