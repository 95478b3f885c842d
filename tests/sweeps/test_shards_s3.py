"""Token shards on object storage (moto's S3 server on loopback, tests/s3_server.py): described from their
headers without fetching them, fetched into a machine's cache once and only when a run reads them, read as
the same stream as local shards, and trained on by a real local Ray sweep (proxy_models/token_files.py)."""

from __future__ import annotations

import os
import re

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch
import yaml
from llmc_shards import write_llmc_shard

from powersweep.cli import main
from powersweep.proxy_models.data import DataConfig, load_corpus, train_batch
from powersweep.sweeps.store import ResultStore

SHARD_TOKENS = 3000


@pytest.fixture(scope="module")
def shard_cache(tmp_path_factory):
    """This machine's cache for the module, set before its Ray starts (its workers inherit it)."""
    cache = tmp_path_factory.mktemp("cache")
    before = os.environ.get("POWERSWEEP_CACHE")
    os.environ["POWERSWEEP_CACHE"] = str(cache)
    yield cache
    if before is None:
        del os.environ["POWERSWEEP_CACHE"]
    else:
        os.environ["POWERSWEEP_CACHE"] = before


def upload(s3_server, tmp_path) -> tuple[str, str]:
    """Four llm.c train shards and a val shard, written here and uploaded; their local folder and the URI of
    their folder on the server."""
    rng = np.random.default_rng(0)
    local = tmp_path / "shards"
    local.mkdir()
    for i in range(4):
        write_llmc_shard(local / f"fineweb_train_{i:06d}.bin", rng.integers(0, 50_257, SHARD_TOKENS))
    write_llmc_shard(local / "fineweb_val_000000.bin", rng.integers(0, 50_257, SHARD_TOKENS))
    s3_server.bucket(name := f"shards-{os.urandom(4).hex()}")
    uri = s3_server.uri(name, "fineweb")
    filesystem, root = pafs.FileSystem.from_uri(uri)
    for path in sorted(local.iterdir()):
        with filesystem.open_output_stream(f"{root}/{path.name}") as out:
            out.write(path.read_bytes())
    return str(local), uri


def at(uri: str, name: str) -> str:
    """`name` in the folder of `uri`, the query kept."""
    base, _, query = uri.partition("?")
    return f"{base}/{name}?{query}"


def fetches(requests, size: int = 1024 + 2 * SHARD_TOKENS) -> dict[str, int]:
    """Object key -> GETs of the whole object of `size` bytes (a header read asks for its first 4 KiB)."""
    counted: dict[str, int] = {}
    for r in requests:
        if r.method == "GET" and r.kind == "GetObject":
            match = re.fullmatch(r"bytes=(\d+)-(\d+)", r.range or "")
            whole = match is None or (int(match[1]) == 0 and int(match[2]) + 1 >= size)
            counted[r.path.rsplit("/", 1)[1]] = counted.get(r.path.rsplit("/", 1)[1], 0) + whole
    return counted


def test_shards_on_s3_stream_like_local_ones_and_are_fetched_once_when_read(s3_server, shard_cache, tmp_path):
    local, uri = upload(s3_server, tmp_path)
    remote_config = DataConfig(
        source=at(uri, "fineweb_train_*.bin"), eval_source=at(uri, "fineweb_val_*.bin")
    )
    with s3_server.requests() as opening:
        remote = load_corpus(remote_config)
    assert sum(fetches(opening.requests).values()) == 0  # described from headers: nothing fetched
    near = load_corpus(
        DataConfig(source=f"{local}/fineweb_train_*.bin", eval_source=f"{local}/fineweb_val_*.bin")
    )
    assert len(remote.train) == len(near.train) == 4 * SHARD_TOKENS and remote.vocab_size == 50_257
    with s3_server.requests() as training:
        for step in range(3):
            for a, b in zip(
                *(train_batch(c, step=step, batch_size=4, seq_len=64, seed=0) for c in (remote, near))
            ):
                assert torch.equal(a, b)
    fetched = fetches(training.requests)
    assert 1 <= sum(fetched.values()) <= 2 and set(fetched.values()) <= {0, 1}  # the stretch read, once each
    with s3_server.requests() as again:  # another process of the machine: the cache has them
        for step in range(3):
            train_batch(load_corpus(remote_config), step=step, batch_size=4, seq_len=64, seed=0)
    assert sum(fetches(again.requests).values()) == 0


def test_a_sweep_of_two_trials_fetches_each_shard_once(s3_server, shard_cache, local_ray, tmp_path):
    _, uri = upload(s3_server, tmp_path)
    spec = {
        "name": "s3-shards",
        "search": {"models": ["cpu-xs"], "batch_size": [4], "lr": [0.004, 0.016], "tokens": [1024, 2048]},
        "train": {
            "warmup_tokens": 128,
            "seq_len": 32,
            "model_overrides": {"n_layers": 1, "vocab_size": 50_304},
            "data": {
                "source": at(uri, "fineweb_train_*.bin"),
                "eval_source": at(uri, "fineweb_val_*.bin"),
                "eval_tokens": 1024,
            },
        },
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    with s3_server.requests() as sweep:
        assert main(["submit", str(tmp_path / "spec.yaml"), "--storage", str(tmp_path / "store")]) == 0
    rows = ResultStore(str(tmp_path / "store")).read(sweep_id="s3-shards").table
    assert len(rows[rows["phase"].eq("final")]) == 4 and rows["status"].eq("ok").all()
    counted = fetches(sweep.requests)
    assert counted and set(counted.values()) <= {0, 1}, counted  # 2 trials, one machine: each shard once
    assert counted.get("fineweb_val_000000.bin") == 1  # both trials evaluate on it
    held_out = set(rows["data_held_out"])  # which split, without the URI's credentials and endpoint
    assert len(held_out) == 1 and "testing" not in held_out.pop() and "endpoint" not in str(held_out)


def test_a_missing_shard_on_s3_is_one_line_without_the_credentials(s3_server, shard_cache, tmp_path, capsys):
    _, uri = upload(s3_server, tmp_path)
    spec = {
        "name": "s3-missing",
        "search": {"models": ["cpu-xs"], "batch_size": [4], "lr": [0.004], "tokens": [1024]},
        "train": {"seq_len": 32, "data": {"source": at(uri, "fineweb_test_*.bin")}},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert main(["plan", str(tmp_path / "spec.yaml")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "the glob matches no object there" in line and "fineweb_test_*.bin" in line
    assert "testing:" not in line and "endpoint_override" not in line, line


def test_a_prepared_corpus_on_s3_reads_as_its_local_folder(s3_server, shard_cache, tmp_path):
    """A Parquet dataset prepared here (a BPE trained here), uploaded as it is: the same corpus from S3,
    its manifest read there and its shards fetched as they are read."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from bpe import train_bpe

    from powersweep.proxy_models.data import embedded_files, stdlib_root
    from powersweep.proxy_models.prepared import prepare

    _, held_out = embedded_files()
    text = "".join((stdlib_root() / name).read_text(errors="replace") for name in held_out[:20])
    documents = [text[i : i + 800] for i in range(0, 160_000, 800)]
    pq.write_table(pa.table({"text": documents}), tmp_path / "corpus.parquet")
    tokenizer = train_bpe(documents, vocab_size=512, path=tmp_path / "tokenizer.json")
    prepare(
        str(tmp_path / "corpus.parquet"),
        tokenizer=tokenizer,
        out=str(tmp_path / "prepared"),
        shard_tokens=8000,
    )
    s3_server.bucket(name := f"prepared-{os.urandom(4).hex()}")
    uri = s3_server.uri(name, "corpus")
    filesystem, root = pafs.FileSystem.from_uri(uri)
    for path in sorted((tmp_path / "prepared").iterdir()):
        with filesystem.open_output_stream(f"{root}/{path.name}") as out:
            out.write(path.read_bytes())
    near, far = (
        load_corpus(DataConfig(source=str(tmp_path / "prepared"))),
        load_corpus(DataConfig(source=uri)),
    )
    assert far.vocab_size == near.vocab_size == 512 and len(far.train) == len(near.train) > 3 * 8000
    assert far.held_out == f"every 200th document of s3://{name}/corpus"  # no credentials in a row
    for a, b in zip(*(train_batch(c, step=1, batch_size=4, seq_len=64, seed=2) for c in (far, near))):
        assert torch.equal(a, b)
