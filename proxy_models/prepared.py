"""Prepared corpora: a text dataset tokenized once into token shards with a manifest, read by every trial.

A text dataset is Parquet files, JSON Lines (.jsonl or .ndjson, plain or compressed: .gz, .bz2, .zst, read by
pyarrow), or a Hugging Face `datasets` directory saved with `save_to_disk` (read by `datasets`), with a named
text column.
`prepare` tokenizes its documents in batches (the `tokenizers` library encodes a batch on every core), each
document after a separator token (llm.c's way: GPT-2's `<|endoftext|>`), and writes under `out`:

    manifest.json          # MANIFEST: dtype, vocab size, shards and token counts, tokenizer and source hashes
    tokenizer.json         # the tokenizer, so that `inspect` can decode a sample
    train_000000.npy ...   # token shards (proxy_models/token_files.py), at most `shard_tokens` ids each
    eval_000000.npy ...    # the held-out documents' shards

The held-out split is a fraction of the documents (every k-th one), never a document of training. The folder
appears whole or not at all (written beside it, then renamed), so a prepared corpus is either complete or
absent. A source given as `train.data.source` to a sweep is this folder.

Example::

    manifest = prepare("corpus/*.parquet", tokenizer="tokenizer.json", out="prepared/corpus")
    manifest["shards"]["train"][0]   # {"name": "train_000000.npy", "tokens": 100000000}
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from powersweep.proxy_models.filesystems import is_uri, resolve, shown
from powersweep.proxy_models.train_config import DataError

MANIFEST = "manifest.json"
FORMAT = "powersweep-tokens"
SEPARATORS = ("<|endoftext|>", "</s>", "<eos>", "[SEP]")  # the first in the vocabulary separates documents
TEXT_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".ndjson": "json"}
COMPRESSED = (".gz", ".bz2", ".zst")
BATCH_DOCUMENTS = 1024  # documents tokenized at once


def is_prepared(path: str) -> bool:
    """Whether `path` (a folder, or one on object storage) is a folder that `prepare` wrote."""
    if is_uri(path):
        filesystem, folder = resolve(path, what="source", error=DataError)
        return filesystem.get_file_info(posixpath.join(folder, MANIFEST)).is_file
    return os.path.isfile(os.path.join(os.path.expanduser(path), MANIFEST))


def read_manifest(path: str) -> dict:
    """The manifest of the prepared corpus at `path` (a folder, or one on object storage); DataError if it
    is missing or not one."""
    file = within(path, MANIFEST)
    try:
        if is_uri(path):
            filesystem, location = resolve(file, what="source", error=DataError)
            with filesystem.open_input_stream(location) as stream:
                manifest = json.loads(stream.read().decode("utf-8"))
        else:
            manifest = json.loads(Path(file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"{shown(path)!r} holds no {MANIFEST}: prepare it with `powersweep data prepare`"
        ) from None
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{shown(file)!r} is not a readable manifest ({exc}): prepare the corpus again"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{shown(file)!r} is not a {FORMAT} manifest: prepare the corpus again")
    return manifest


def within(folder: str, name: str) -> str:
    """The file `name` in `folder`: a local path, or a URI with `folder`'s credentials and query."""
    if not is_uri(folder):
        return os.path.join(os.path.expanduser(folder), name)
    base, question, query = folder.partition("?")
    return f"{base.rstrip('/')}/{name}{question}{query}"


def is_text_dataset(source: str) -> bool:
    """Whether `source` names a text dataset `prepare` reads: Parquet or JSON Lines files (a file, glob or
    folder of them), or a `datasets` folder saved to disk."""
    if not isinstance(source, str):
        return False
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "dataset_info.json")):
            return True
        files = [p for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith((".", "_"))]
        return bool(files) and all(_format(str(p)) is not None for p in files)
    return _format(path) is not None


def prepare(
    source: str,
    *,
    tokenizer: str,
    out: str,
    text_column: str = "text",
    shard_tokens: int = 100_000_000,
    eval_fraction: float = 0.005,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Tokenize the text dataset `source` with the tokenizer.json `tokenizer` into a prepared corpus at
    `out` (see the module docstring); returns its manifest. `on_progress(documents, tokens)` follows each
    batch. DataError, naming the source, for a dataset without `text_column` or with no documents."""
    from powersweep.proxy_models.data import HFTokenizer  # the tokenizers package, with a clear error

    encoder = HFTokenizer(tokenizer)
    if not 0 < eval_fraction < 1:
        raise DataError(f"eval_fraction={eval_fraction}: give a number in (0, 1), e.g. 0.005")
    every = max(2, round(1 / eval_fraction))  # document i is held out when i % every == every - 1
    separator = next((t for t in SEPARATORS if encoder.token_id(t) is not None), None)
    dtype = np.uint16 if encoder.vocab_size <= 1 << 16 else np.uint32
    out = os.path.expanduser(out)
    if os.path.exists(out) and not (os.path.isdir(out) and (is_prepared(out) or not os.listdir(out))):
        raise DataError(
            f"out={out!r} exists and is not a prepared corpus: give a new folder (a prepared one is replaced "
            "whole, nothing else is)"
        )
    staging = f"{out}.{uuid.uuid4().hex[:8]}.tmp"
    os.makedirs(staging)
    try:
        writers = {split: _ShardWriter(staging, split, dtype, shard_tokens) for split in ("train", "eval")}
        documents = tokens = 0
        for texts in text_batches(source, text_column):
            for ids in encoder.encode_batch(texts):
                if separator is not None:
                    ids = np.concatenate([[encoder.token_id(separator)], ids]).astype(dtype)
                writers["eval" if documents % every == every - 1 else "train"].add(ids)
                documents, tokens = documents + 1, tokens + len(ids)
            if on_progress is not None:
                on_progress(documents, tokens)
        shards = {split: writer.close() for split, writer in writers.items()}
        if not shards["train"] or not shards["eval"]:
            raise DataError(
                f"source={source!r} holds {documents} documents: too few for a train and a held-out split "
                f"(every {every}th document is held out); give more text or a larger eval_fraction"
            )
        shutil.copyfile(tokenizer, os.path.join(staging, "tokenizer.json"))
        manifest = {
            "format": FORMAT,
            "version": 1,
            "dtype": np.dtype(dtype).name,
            "vocab_size": encoder.vocab_size,
            "tokenizer": {"name": encoder.name, "sha256": encoder.fingerprint},
            "source": {"path": source, "fingerprint": source_fingerprint(source), "text_column": text_column},
            "separator": separator,
            "documents": documents,
            "held_out": f"every {every}th document",
            "shards": shards,
        }
        Path(staging, MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if os.path.isdir(out):  # prepared again: the new folder replaces the old one whole
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def text_batches(source: str, text_column: str) -> Iterator[list[str]]:
    """The documents of the text dataset `source`, BATCH_DOCUMENTS at a time, in file order."""
    path = os.path.expanduser(source)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "dataset_info.json")):
        yield from _saved_dataset(path, text_column)
        return
    files = _files(path) if os.path.isdir(path) else sorted(glob.glob(path, recursive=True))
    files = [f for f in files if os.path.isfile(f)]
    if not files:
        raise DataError(f"source={source!r}: no Parquet or JSON Lines file here: check the path or glob")
    formats = {_format(f) for f in files}
    if None in formats or len(formats) > 1:
        raise DataError(
            f"source={source!r} mixes formats or holds files that are not Parquet or JSON Lines "
            f"({sorted(map(str, formats))}): give files of one format"
        )
    import pyarrow.dataset as ds

    dataset = ds.dataset(files, format=formats.pop())
    if text_column not in dataset.schema.names:
        raise DataError(
            f"source={source!r} has no column {text_column!r} (its columns: {dataset.schema.names}): name "
            "the text column with --text-column"
        )
    for batch in dataset.to_batches(columns=[text_column], batch_size=BATCH_DOCUMENTS):
        yield [text for text in batch.column(0).to_pylist() if text]


def source_fingerprint(source: str) -> str:
    """A short hash of a text dataset's files: their names relative to the source, sizes, and the first and
    last MiB of each (a dataset is often too large to read whole for a hash)."""
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        files = sorted(str(p) for p in Path(path).rglob("*") if p.is_file())
    else:
        files = sorted(glob.glob(path, recursive=True))
    digest = hashlib.sha256()
    for file in files:
        size = os.path.getsize(file)
        digest.update(f"{os.path.basename(file)}|{size}|".encode())
        with open(file, "rb") as f:
            digest.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(size - (1 << 20))
                digest.update(f.read())
    return digest.hexdigest()[:16]


class _ShardWriter:
    """Documents' ids into shards of at most `shard_tokens` ids (a document may span two), as .npy files."""

    def __init__(self, folder: str, split: str, dtype, shard_tokens: int):
        self.folder, self.split, self.dtype, self.limit = folder, split, dtype, shard_tokens
        self.pending: list[np.ndarray] = []
        self.count = 0
        self.shards: list[dict] = []

    def add(self, ids: np.ndarray) -> None:
        while len(ids):
            room = self.limit - self.count
            self.pending.append(ids[:room])
            self.count += len(ids[:room])
            ids = ids[room:]
            if self.count == self.limit:
                self._flush()

    def close(self) -> list[dict]:
        if self.count:
            self._flush()
        return self.shards

    def _flush(self) -> None:
        name = f"{self.split}_{len(self.shards):06d}.npy"
        np.save(os.path.join(self.folder, name), np.concatenate(self.pending).astype(self.dtype))
        self.shards.append({"name": name, "tokens": self.count})
        self.pending, self.count = [], 0


def _saved_dataset(path: str, text_column: str) -> Iterator[list[str]]:
    try:
        from datasets import load_from_disk
    except ImportError:
        raise DataError(
            f"source={path!r} is a Hugging Face datasets folder: reading it needs the 'datasets' package: "
            "pip install 'powersweep[data]'"
        ) from None
    dataset = load_from_disk(path)
    if text_column not in dataset.column_names:
        raise DataError(
            f"source={path!r} has no column {text_column!r} (its columns: {dataset.column_names}): name the "
            "text column with --text-column"
        )
    for batch in dataset.iter(batch_size=BATCH_DOCUMENTS):
        yield [text for text in batch[text_column] if text]


def _files(folder: str) -> list[str]:
    return sorted(
        str(p)
        for p in Path(folder).rglob("*")
        if p.is_file() and not p.name.startswith((".", "_")) and _format(str(p)) is not None
    )


def _format(path: str) -> str | None:
    """pyarrow.dataset's format of a text dataset file, by its suffix (a compressed one's inner suffix)."""
    name = path.lower()
    for suffix in COMPRESSED:
        name = name.removesuffix(suffix)
    return next((fmt for suffix, fmt in TEXT_SUFFIXES.items() if name.endswith(suffix)), None)
