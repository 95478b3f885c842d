"""The data a sweep trains on, checked before anything is written, by `plan` and by `submit`: each refusal
is one line (SpecError) naming the setting or the file, the value and the fix.

The source and tokenizer must exist, and the corpus they make must serve the train and eval windows of every
model's seq_len, in ids each model's vocabulary holds; token shards must hold the largest budget in one pass
unless `train.data.repeat`. A budget that reads the train split more than once where repeats are allowed
(the embedded corpus, a text source, `repeat: true`) is a note, not a refusal. The corpus is loaded as a
trial would load it: the embedded corpus comes from its cache, token shards are memory-mapped, a text
dataset is prepared into the cache (once a machine), a text source is tokenized here once more than the
trials tokenize it. Nothing here imports torch, Ray, pandas or pyarrow (a text dataset's preparation
imports pyarrow): `plan` stays light.
"""

from __future__ import annotations

import glob
import os
from typing import NamedTuple

from powersweep.proxy_models.filesystems import shown
from powersweep.sweeps.spec import SpecError, SweepSpec, with_vocab


class CheckedData(NamedTuple):
    spec: SweepSpec  # with `model_overrides.vocab_size: auto` set to the corpus's vocabulary
    fingerprint: str  # the corpus's (the rows' data_fingerprint)
    notes: tuple[str, ...]  # what a person should know before the sweep runs (the plan's notes)


def check_data(spec: SweepSpec) -> CheckedData:
    """The spec's data source and tokenizer must exist where the driver runs and make a corpus that serves the
    train and eval windows of every model, in ids its vocabulary holds, and, for token shards, the largest
    budget in one pass unless `train.data.repeat`: a bad corpus would otherwise fail inside every trial."""
    from powersweep.proxy_models.data import (
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
    try:
        corpus = load_corpus(spec.data_config)
        spec = with_vocab(spec, corpus.vocab_size)
        presets = {m: get_preset(m, **spec.train.model_overrides) for m in spec.search.models}
        for seq_len in sorted({spec.train.seq_len or p.seq_len for p in presets.values()}):
            check_windows(corpus, seq_len=seq_len, eval_tokens=data.eval_tokens)
    except DataError as error:  # token shards' errors name the file, or the setting as the spec does
        text = str(error)
        named = text.startswith(("source=", "eval_source=", "tokenizer="))
        where = "train.data: " if shards else f"train.data.source={_show(data.source)}: "
        if not shards and isinstance(data.source, str):  # the line names the source once: room for the fix
            text = text.replace(f"corpus {_show(data.source)}", "the corpus", 1)
        raise SpecError(f"train.data.{text}" if named else f"{where}{text}") from None
    for model, preset in presets.items():
        if corpus.vocab_size > preset.vocab_size:
            raise SpecError(
                f"train.data: the corpus's ids come from a vocabulary of {corpus.vocab_size:,} and model "
                f"{model!r} has vocab_size {preset.vocab_size:,}: give the model that vocabulary "
                f"(train.model_overrides: {{vocab_size: auto}}) or a smaller tokenizer"
            )
    largest = max(spec.search.tokens)
    if shards and not data.repeat and passes(corpus, largest) > 1:
        raise SpecError(
            f"train.data: the train split holds {len(corpus.train):,} tokens and the largest budget, "
            f"{largest:,.0f}, would read it {passes(corpus, largest):.2f} times: add shards, lower the "
            "budget, or allow repeats with train.data.repeat: true"
        )
    return CheckedData(spec, corpus.fingerprint, _repeat_notes(corpus, largest))


def _repeat_notes(corpus, largest: float) -> tuple[str, ...]:
    """A note where the largest budget reads the train split more than once. The paper's runs read each
    token once; repeating data up to about 4 times changes the loss little (Muennighoff et al. 2023, "Scaling
    Data-Constrained Language Models")."""
    from powersweep.proxy_models.data import passes

    times = passes(corpus, largest)
    if times <= 1:
        return ()
    return (
        f"train.data: the largest budget ({largest:,.0f} tokens) reads the train split's "
        f"{len(corpus.train):,} tokens {times:,.2f} times; the paper's runs read each token once, and up to "
        "about 4 passes change the loss little (Muennighoff et al. 2023): add data or lower the budgets to "
        "read it once",
    )


def _show(source) -> str:
    return repr(shown(source)) if isinstance(source, str) else repr([shown(s) for s in source])
