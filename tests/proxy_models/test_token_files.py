"""Token shard files as labs have them: llm.c's header format, sidecar .bin, .npy; read in place as one
stream (proxy_models/token_files.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from llmc_shards import write_llmc_shard

from powersweep.proxy_models.data import write_token_file
from powersweep.proxy_models.token_files import TokenStream, read_header, shard_paths
from powersweep.proxy_models.train_config import DataError


def test_an_llmc_shard_is_read_from_its_header(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 50_257, 1000)
    write_llmc_shard(tmp_path / "fineweb_train_000001.bin", tokens)
    shard = read_header(str(tmp_path / "fineweb_train_000001.bin"))
    assert (shard.format, shard.dtype, shard.tokens, shard.offset, shard.vocab_size) == (
        "llm.c",
        "uint16",
        1000,
        1024,
        50_257,
    )
    np.testing.assert_array_equal(shard.ids(), tokens)
    write_llmc_shard(tmp_path / "llama.bin", [5, 128_000], magic=20240801, version=7, dtype="uint32")
    llama = read_header(str(tmp_path / "llama.bin"))
    assert (llama.dtype, llama.vocab_size, list(llama.ids())) == ("uint32", 128_256, [5, 128_000])


def test_sidecar_bin_and_npy_shards(tmp_path):
    write_token_file(tmp_path / "a.bin", np.arange(300), vocab_size=300)
    np.save(tmp_path / "b.npy", np.arange(7, dtype=np.uint16))
    a, b = read_header(str(tmp_path / "a.bin")), read_header(str(tmp_path / "b.npy"))
    assert (a.format, a.tokens, a.vocab_size) == ("sidecar", 300, 300)
    assert (b.format, b.dtype, b.tokens, b.vocab_size) == ("npy", "uint16", 7, 7)  # largest id + 1
    (tmp_path / "b.npy.json").write_text(json.dumps({"vocab_size": 50_257}))
    assert read_header(str(tmp_path / "b.npy")).vocab_size == 50_257


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: write_llmc_shard(p, [1, 2, 3], version=2), "version 2, expected 1"),
        (lambda p: p.write_bytes(p.read_bytes()[:-2]), "header says 3 uint16 tokens"),
        (lambda p: p.write_bytes(b"\x00" * 10), "no llm.c header .* and no sidecar"),
        (lambda p: p.write_bytes(np.zeros(256, "<i4").tobytes()), "no llm.c header"),
    ],
    ids=["version", "truncated", "unknown", "zero-magic"],
)
def test_a_bad_shard_is_refused_naming_the_file(tmp_path, damage, message):
    path = tmp_path / "shard.bin"
    write_llmc_shard(path, [1, 2, 3])
    damage(path)
    with pytest.raises(DataError, match=message) as error:
        read_header(str(path))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_two_dimensional_npy_is_no_shard(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(DataError, match="non-empty 1-D integer array"):
        read_header(str(tmp_path / "x.npy"))


def test_a_source_names_shards_as_a_file_list_glob_or_directory(tmp_path):
    for name in ("train_002.bin", "train_001.bin", "val_000.bin", "notes.txt", ".hidden.bin"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.npy").write_bytes(b"")
    names = lambda paths: [p.rsplit("/", 1)[1] for p in paths]  # noqa: E731
    assert names(shard_paths(str(tmp_path / "train_*.bin"))) == ["train_001.bin", "train_002.bin"]
    assert names(shard_paths(str(tmp_path))) == ["more.npy", "train_001.bin", "train_002.bin", "val_000.bin"]
    listed = [str(tmp_path / "val_000.bin"), str(tmp_path / "train_00[12].bin")]
    assert names(shard_paths(listed)) == ["val_000.bin", "train_001.bin", "train_002.bin"]
    with pytest.raises(DataError, match="the glob matches no file"):
        shard_paths(str(tmp_path / "fineweb_*.bin"))
    with pytest.raises(DataError, match="no such token file"):
        shard_paths(str(tmp_path / "missing.bin"))


def test_a_stream_of_shards_reads_like_their_concatenation(tmp_path):
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 50_257, n) for n in (100, 1, 257, 40)]
    for i, part in enumerate(parts):
        write_llmc_shard(tmp_path / f"s{i}.bin", part)
    stream = TokenStream.open([read_header(str(tmp_path / f"s{i}.bin")) for i in range(len(parts))])
    whole = np.concatenate(parts).astype(np.uint16)
    assert len(stream) == len(whole) == 398 and stream.dtype == np.uint16
    for start, stop in [(0, 398), (99, 102), (100, 101), (0, 0), (350, 500), *rng.integers(0, 398, (50, 2))]:
        got = stream[start:stop]
        np.testing.assert_array_equal(got, whole[start:stop])
        assert got.dtype == np.uint16
