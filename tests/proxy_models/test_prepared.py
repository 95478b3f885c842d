"""Text datasets prepared once into token shards: Parquet, JSON Lines and a datasets folder give the same
shards, `inspect` reads them back, and a corpus loads from them (proxy_models/prepared.py)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from bpe import train_bpe

from powersweep.cli import main
from powersweep.proxy_models.data import (
    DataConfig,
    HFTokenizer,
    embedded_files,
    load_corpus,
    stdlib_root,
    train_batch,
)
from powersweep.proxy_models.prepared import is_text_dataset, prepare, read_manifest
from powersweep.proxy_models.train_config import DataError

DOCUMENTS = 240


@pytest.fixture(scope="module")
def documents() -> list[str]:
    """Documents of the embedded corpus: the standard library's held-out files, in pieces."""
    _, held_out = embedded_files()
    text = "".join((stdlib_root() / name).read_text(errors="replace") for name in held_out[:40])
    return [text[i * 800 : (i + 1) * 800] for i in range(DOCUMENTS)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, documents) -> str:
    """A byte-level BPE of 512 ids trained here, with GPT-2's document separator."""
    return train_bpe(documents, vocab_size=512, path=tmp_path_factory.mktemp("tokenizer") / "tokenizer.json")


@pytest.fixture(scope="module")
def datasets_of(tmp_path_factory, documents) -> dict[str, str]:
    """The documents as Parquet (two files), gzipped JSON Lines, and a datasets folder saved to disk."""
    from datasets import Dataset

    root = tmp_path_factory.mktemp("text")
    (root / "parquet").mkdir()
    half = DOCUMENTS // 2
    for i, part in enumerate((documents[:half], documents[half:])):
        pq.write_table(
            pa.table({"id": range(len(part)), "text": part}), root / "parquet" / f"part-{i}.parquet"
        )
    with gzip.open(root / "corpus.jsonl.gz", "wt") as f:
        for i, doc in enumerate(documents):
            f.write(json.dumps({"text": doc, "id": i}) + "\n")
    Dataset.from_dict({"text": documents}).save_to_disk(str(root / "saved"))
    return {
        "parquet": str(root / "parquet" / "*.parquet"),
        "jsonl": str(root / "corpus.jsonl.gz"),
        "datasets": str(root / "saved"),
    }


def test_each_format_prepares_the_same_shards(tmp_path, tokenizer, documents, datasets_of):
    encoder = HFTokenizer(tokenizer)
    separator = encoder.token_id("<|endoftext|>")
    expected = [np.concatenate([[separator], ids]) for ids in encoder.encode_batch(documents)]
    train = np.concatenate([ids for i, ids in enumerate(expected) if i % 20 != 19])
    held_out = np.concatenate([ids for i, ids in enumerate(expected) if i % 20 == 19])
    for name, source in datasets_of.items():
        assert is_text_dataset(source), name
        out = tmp_path / name
        manifest = prepare(source, tokenizer=tokenizer, out=str(out), eval_fraction=0.05, shard_tokens=20_000)
        assert manifest["documents"] == DOCUMENTS and manifest["held_out"] == "every 20th document"
        assert manifest["vocab_size"] == 512 and manifest["dtype"] == "uint16"
        assert manifest["separator"] == "<|endoftext|>"
        assert all(
            s["tokens"] == 20_000 for s in manifest["shards"]["train"][:-1]
        )  # full shards, then the rest
        corpus = load_corpus(DataConfig(source=str(out)))
        np.testing.assert_array_equal(corpus.train[0 : len(corpus.train)], train)
        np.testing.assert_array_equal(corpus.eval[0 : len(corpus.eval)], held_out)
        assert corpus.order == "stream" and corpus.vocab_size == 512
        assert corpus.held_out == f"every 20th document of {out}"
    parquet, jsonl = (load_corpus(DataConfig(source=str(tmp_path / n))) for n in ("parquet", "jsonl"))
    assert parquet.fingerprint == jsonl.fingerprint  # the same tokens, the same split
    for a, b in zip(*(train_batch(c, step=3, batch_size=4, seq_len=64, seed=1) for c in (parquet, jsonl))):
        assert torch.equal(a, b)


def test_inspect_prints_the_manifest_the_splits_and_a_decoded_sample(
    tmp_path, tokenizer, documents, datasets_of, capsys
):
    out = tmp_path / "prepared"
    assert main(["data", "prepare", datasets_of["jsonl"], "--tokenizer", tokenizer, "--out", str(out)]) == 0
    manifest = read_manifest(str(out))
    capsys.readouterr()
    assert main(["data", "inspect", str(out), "--sample-tokens", "40"]) == 0
    printed = capsys.readouterr().out
    train = sum(s["tokens"] for s in manifest["shards"]["train"])
    assert f"train:      {train:,} tokens in 1 shards" in printed and "documents:  240" in printed
    sample = printed.split("sample (40 ids of train_000000.npy): ")[1].strip()
    assert eval(sample).startswith("<|endoftext|>" + documents[0][:20])  # noqa: S307 - the repr printed


def test_a_dataset_without_the_text_column_is_one_line_naming_it(tmp_path, tokenizer, datasets_of, capsys):
    with pytest.raises(DataError, match=r"has no column 'body' \(its columns: \['id', 'text'\]\)"):
        prepare(datasets_of["parquet"], tokenizer=tokenizer, out=str(tmp_path / "x"), text_column="body")
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []  # nothing written, not even part
    code = main(
        [
            "data",
            "prepare",
            str(tmp_path / "none.parquet"),
            "--tokenizer",
            tokenizer,
            "--out",
            str(tmp_path / "y"),
        ]
    )
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "no Parquet or JSON Lines file here" in line


def test_a_sweep_trains_on_a_prepared_corpus(tmp_path, tokenizer, datasets_of, local_ray):
    import yaml

    from powersweep.sweeps.store import ResultStore

    out = tmp_path / "prepared"
    prepare(datasets_of["parquet"], tokenizer=tokenizer, out=str(out), eval_fraction=0.05)
    spec = {
        "name": "prepared",
        "search": {"models": ["cpu-xs"], "batch_size": [4], "lr": [0.004, 0.016], "tokens": [1024, 2048]},
        "train": {
            "warmup_tokens": 128,
            "seq_len": 32,
            "model_overrides": {"n_layers": 1, "vocab_size": 512},
            "data": {"source": str(out), "eval_tokens": 1024},
        },
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["submit", str(tmp_path / "spec.yaml"), "--storage", str(tmp_path / "store")]) == 0
    rows = ResultStore(str(tmp_path / "store")).read(sweep_id="prepared").table
    final = rows[rows["phase"].eq("final")]
    assert len(final) == 4 and final["status"].eq("ok").all() and np.isfinite(final["loss_eval"]).all()
    assert final["loss_eval"].min() < np.log(512)  # below a uniform guess over the vocabulary: it learned
    assert set(rows["data_fingerprint"]) == {load_corpus(DataConfig(source=str(out))).fingerprint}
    assert set(rows["data_held_out"]) == {f"every 20th document of {out}"}


PREPARE_IN_A_PROCESS = """
import sys
import powersweep.proxy_models.data as data

real = data.prepare

def counted(*args, **kwargs):
    with open(sys.argv[2], "a") as log:
        log.write("prepared\\n")
    return real(*args, **kwargs)

data.prepare = counted
corpus = data.load_corpus(data.DataConfig(source=sys.argv[1], tokenizer=sys.argv[3], eval_fraction=0.05))
print(corpus.fingerprint)
"""


def test_a_text_dataset_given_as_source_is_prepared_once_a_machine(tmp_path, tokenizer, datasets_of):
    """Two processes (a machine's trials) load the same Parquet source at once: one prepares it into the cache
    under a lock, the other waits and reads it; later loads read it too."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "POWERSWEEP_CACHE": str(tmp_path / "cache")}
    log, script = tmp_path / "prepared.log", tmp_path / "load.py"
    script.write_text(PREPARE_IN_A_PROCESS)
    command = [sys.executable, str(script), datasets_of["parquet"], str(log), tokenizer]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    prints = [p.communicate(timeout=300)[0].strip() for p in processes]
    assert [p.returncode for p in processes] == [0, 0] and len(set(prints)) == 1
    assert log.read_text() == "prepared\n"  # once, not once a process
    [folder] = [p for p in (tmp_path / "cache" / "prepared").iterdir() if p.is_dir()]
    assert read_manifest(str(folder))["documents"] == DOCUMENTS
    assert subprocess.run(command, env=env, capture_output=True, text=True).stdout.strip() == prints[0]
    assert log.read_text() == "prepared\n"
    direct = tmp_path / "direct"
    prepare(datasets_of["parquet"], tokenizer=tokenizer, out=str(direct), eval_fraction=0.05)
    assert load_corpus(DataConfig(source=str(direct))).fingerprint == prints[0]  # the same corpus


def test_prepare_replaces_only_a_prepared_corpus(tmp_path, tokenizer, datasets_of):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="exists and is not a prepared corpus: give a new folder"):
        prepare(datasets_of["jsonl"], tokenizer=tokenizer, out=str(mine))
    assert [p.name for p in tmp_path.iterdir()] == ["mine"] and (mine / "notes.txt").read_text() == "keep me"
    prepared = tmp_path / "prepared"
    first = prepare(datasets_of["jsonl"], tokenizer=tokenizer, out=str(prepared), eval_fraction=0.05)
    again = prepare(datasets_of["parquet"], tokenizer=tokenizer, out=str(prepared), eval_fraction=0.1)
    assert read_manifest(str(prepared)) == again != first  # replaced whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "prepared"]  # no staging folder left
