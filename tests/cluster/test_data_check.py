"""The data check on a real (one-node, local) Ray: the corpus is described in a worker process and compared
with the driver's description. A node that reads other data is shown on a real cluster in test_multinode."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest
from llmc_shards import write_llmc_shard

from powersweep.cluster.data_check import check_data_on_nodes
from powersweep.cluster.jobs import ClusterError
from powersweep.proxy_models.data import DataConfig, corpus_identity


def shards(folder, count: int = 2) -> str:
    rng = np.random.default_rng(0)
    for i in range(count):
        write_llmc_shard(folder / f"train_{i:06d}.bin", rng.integers(0, 50_257, 3000))
    return str(folder / "train_*.bin")


def test_shards_every_node_reads_pass(local_ray, tmp_path):
    assert check_data_on_nodes(DataConfig(source=shards(tmp_path), eval_tokens=512)) == 1


def test_the_embedded_corpus_passes(local_ray):
    assert check_data_on_nodes(DataConfig(eval_tokens=512)) == 1


def test_shards_only_the_driver_sees_are_refused_naming_the_source_and_the_node(local_ray, tmp_path):
    # memory:// lives in each process: the worker finds no shards there, as a node without the driver's disk.
    memory = fsspec.filesystem("memory")
    local = shards(tmp_path)
    for i, path in enumerate(sorted(tmp_path.glob("train_*.bin"))):
        memory.pipe(f"/psdata/train_{i:06d}.bin", path.read_bytes())
    data = DataConfig(source="memory://psdata/train_*.bin", eval_tokens=512)
    assert corpus_identity(data) != corpus_identity(DataConfig(source=local, eval_tokens=512))  # by name
    with pytest.raises(
        ClusterError,
        match=r"train.data.source 'memory://psdata/train_\*.bin' is not readable from node \S+ "
        r"\(node id \w+\): DataError: .*: put the corpus at a path every node mounts",
    ):
        check_data_on_nodes(data)
    memory.rm("/psdata", recursive=True)


def test_a_text_dataset_is_described_by_its_files_not_prepared(tmp_path, monkeypatch):
    # Each node prepares a text dataset itself, in its trials: the check hashes its files and tokenizer only.
    monkeypatch.setenv("POWERSWEEP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "corpus.jsonl").write_text('{"text": "a document"}\n' * 50)
    data = DataConfig(source=str(tmp_path / "corpus.jsonl"), tokenizer=None, eval_tokens=64)
    before = corpus_identity(data)
    assert not (tmp_path / "cache").exists() and corpus_identity(data) == before
    (tmp_path / "corpus.jsonl").write_text('{"text": "another document"}\n' * 50)
    assert corpus_identity(data) != before
