"""Token shards as a corpus: llm.c shards read as a stream, held out by name or by share, batches that are a
pure function of (seed, step) across shard boundaries (proxy_models/data.py, proxy_models/token_files.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from llmc_shards import write_llmc_shard

from powersweep.proxy_models.data import (
    DataConfig,
    eval_batches,
    is_shard_source,
    load_corpus,
    stream_start,
    train_batch,
)
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.train_config import DataError, TrainConfig
from powersweep.proxy_models.trainer import Trainer

GPT2_VOCAB = 50_257


@pytest.fixture
def llmc(tmp_path):
    """Four training shards and a val shard in llm.c's layout, and the same tokens as plain arrays."""
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, GPT2_VOCAB, n) for n in (3000, 1, 2500, 4000)]
    val = rng.integers(0, GPT2_VOCAB, 1500)
    for i, part in enumerate(parts):
        write_llmc_shard(tmp_path / f"fineweb_train_{i:06d}.bin", part)
    write_llmc_shard(tmp_path / "fineweb_val_000000.bin", val)
    np.save(tmp_path / "train.npy", np.concatenate(parts).astype(np.uint16))
    np.save(tmp_path / "val.npy", val.astype(np.uint16))
    for name in ("train.npy", "val.npy"):
        (tmp_path / f"{name}.json").write_text(f'{{"vocab_size": {GPT2_VOCAB}}}')
    return tmp_path


def shards(root) -> DataConfig:
    return DataConfig(source=str(root / "fineweb_train_*.bin"), eval_source=str(root / "fineweb_val_*.bin"))


def plain(root) -> DataConfig:
    return DataConfig(source=str(root / "train.npy"), eval_source=str(root / "val.npy"))


def test_llmc_shards_give_the_batches_of_the_same_tokens_as_one_array(llmc):
    a, b = load_corpus(shards(llmc)), load_corpus(plain(llmc))
    assert a.order == b.order == "stream" and a.vocab_size == b.vocab_size == GPT2_VOCAB
    assert len(a.train) == len(b.train) == 9501 and len(a.eval) == 1500
    for seed in (0, 1, 7):
        for step in (0, 1, 5, 40, 300):  # 300: past the end, around to the beginning
            for one, other in zip(
                train_batch(a, step=step, batch_size=4, seq_len=64, seed=seed),
                train_batch(b, step=step, batch_size=4, seq_len=64, seed=seed),
            ):
                assert torch.equal(one, other)
    for (xa, ya), (xb, yb) in zip(
        eval_batches(a, seq_len=64, batch_size=8), eval_batches(b, seq_len=64, batch_size=8)
    ):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_a_stream_batch_is_the_next_stretch_of_tokens(llmc):
    corpus = load_corpus(plain(llmc))
    tokens = np.load(llmc / "train.npy").astype(np.int64)
    start = stream_start(len(tokens), seq_len=32, seed=3)
    x, y = train_batch(corpus, step=2, batch_size=4, seq_len=32, seed=3)
    first = (start + 2 * 4 * 32) % (len(tokens) - 32)
    expected = torch.from_numpy(tokens[first : first + 4 * 32 + 1])
    assert torch.equal(x.reshape(-1), expected[:-1]) and torch.equal(y.reshape(-1), expected[1:])
    # a run of batch size 8 reads the same tokens as one of 4, in the same order
    wide = train_batch(corpus, step=1, batch_size=8, seq_len=32, seed=3)[0]
    narrow = torch.cat([train_batch(corpus, step=s, batch_size=4, seq_len=32, seed=3)[0] for s in (2, 3)])
    assert torch.equal(wide, narrow)


def test_a_run_on_shards_trains_as_on_the_plain_array(llmc):
    def losses(data: DataConfig) -> list[float]:
        config = TrainConfig(
            model="cpu-xxs",
            model_overrides={"vocab_size": GPT2_VOCAB, "seq_len": 32},
            schedule=ScheduleConfig(name="constant", lr=3e-3, warmup_tokens=0),
            batch_size=2,
            tokens=2 * 32 * 6,
            data=data,
            eval_batch_size=8,
        )
        trainer = Trainer(config, corpus=None)
        result = trainer.run()
        return [result.loss_train, result.loss_eval]

    assert losses(shards(llmc)) == losses(plain(llmc))


def test_shards_hold_out_a_share_or_a_tail_and_never_overlap_training(llmc):
    by_share = load_corpus(DataConfig(source=str(llmc / "fineweb_train_*.bin"), eval_fraction=0.2))
    train_paths = {s.path for s in by_share.train.shards}
    eval_paths = {s.path for s in by_share.eval.shards}
    assert train_paths and eval_paths and not train_paths & eval_paths and len(train_paths | eval_paths) == 4
    one = load_corpus(DataConfig(source=str(llmc / "fineweb_train_000000.bin")))
    assert len(one.train) + len(one.eval) == 3000 and len(one.eval) == 150
    with pytest.raises(DataError, match="eval_source names 1 of the training shards .*never overlaps"):
        load_corpus(
            DataConfig(source=str(llmc / "fineweb_*.bin"), eval_source=str(llmc / "fineweb_val_*.bin"))
        )


def test_which_sources_are_token_shards(llmc, tmp_path):
    from powersweep.proxy_models.data import write_token_file

    write_token_file(tmp_path / "mine.bin", np.arange(10), vocab_size=10)
    (tmp_path / "notes.txt").write_text("hello")
    assert is_shard_source(str(llmc / "fineweb_train_*.bin")) and is_shard_source(str(llmc / "train.npy"))
    assert is_shard_source([str(tmp_path / "mine.bin")])  # a list: shards, even of one sidecar file
    assert not is_shard_source(str(tmp_path / "mine.bin"))  # one sidecar .bin: in memory, as ever
    assert not is_shard_source(str(tmp_path / "*.txt")) and not is_shard_source("embedded")


def test_an_id_beyond_the_vocabulary_stops_the_batch_that_reads_it(tmp_path):
    write_llmc_shard(tmp_path / "bad.bin", [1, 2, 60_000] * 400)  # 60,000: no GPT-2 id
    corpus = load_corpus(DataConfig(source=str(tmp_path / "bad.bin")))
    with pytest.raises(DataError, match=r"holds token id 60000, outside \[0, vocab_size=50257\)"):
        train_batch(corpus, step=0, batch_size=2, seq_len=8, seed=0)


def test_a_run_longer_than_the_train_split_needs_repeats(llmc):
    config = TrainConfig(
        model="cpu-xxs",
        model_overrides={"vocab_size": GPT2_VOCAB, "seq_len": 32},
        batch_size=4,
        tokens=20_000,  # the split holds 9,501
        data=plain(llmc),
    )
    with pytest.raises(DataError, match=r"holds 9,501 tokens and tokens=20,000 would read it 2\.11 times"):
        Trainer(config)
    Trainer(replace(config, data=replace(config.data, repeat=True)))  # allowed: it reads them again
