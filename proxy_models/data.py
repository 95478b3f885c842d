"""Token corpora and batches: tokenizers, the embedded default corpus, text and token-file sources.

A corpus is two 1-D arrays of token ids, a train split and a held-out eval split, kept in their compact
storage dtype (uint8, uint16 or uint32) and widened to int64 one batch at a time. Batch `step` of a run is a
pure function of (seed, step), so resuming or forking a run needs no loader state:

    corpus = load_corpus(DataConfig())  # this Python's standard library sources, as bytes
    x, y = train_batch(corpus, step=0, batch_size=16, seq_len=256, seed=0)  # (16, 256) int64 each

Sources (`DataConfig.source`):

- "embedded": the `.py` sources of the standard library of the Python running this code, its reference
  docs included (`pydoc_data/topics.py`); test suites and site-packages are left out. Nothing is downloaded.
  Built once, then cached under $POWERSWEEP_CACHE (default ~/.cache/powersweep).
- a utf-8 text file, directory or glob: held out by file when there are >= 2 files, else the text's tail.
- a pre-tokenized `.bin` file (raw uint16/uint32 ids, no header) with a `<file>.json` sidecar
  {"dtype": "uint16", "vocab_size": N}; `write_token_file` writes the pair. The eval split is its tail.
- token shards (`proxy_models/token_files.py`): llm.c / modded-nanogpt `.bin` shards (their header read and
  checked), `.npy` arrays, or several sidecar `.bin` files; named as one file, a list, a glob or a
  directory. The held-out split is `eval_source` (e.g. llm.c's `fineweb_val_*.bin`), else a fraction of the
  shards by tokens, else one shard's tail; the two never share a shard. The shards stay on disk (mapped).
- a folder `powersweep data prepare` wrote (`proxy_models/prepared.py`): its manifest's shards and split; or
  the text dataset itself (Parquet, JSON Lines, a datasets folder) with a tokenizer, prepared once a machine
  into the cache (`prepared_cache`).

Batches. A corpus in memory (embedded, text, one sidecar `.bin`) gives each window of a batch a random
offset; token shards are read as a stream, llm.c's way: batch k of a run takes the next batch_size windows
of seq_len tokens after those of batch k - 1, from a start that the seed picks, so a run reads one stretch
of the corpus (its shards, no others) and runs of any batch size see the same tokens in the same order.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import posixpath
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from powersweep.proxy_models.files import machine_lock, write_atomically
from powersweep.proxy_models.filesystems import is_uri, shown
from powersweep.proxy_models.prepared import (
    is_prepared,
    is_text_dataset,
    prepare,
    read_manifest,
    source_fingerprint,
    within,
)
from powersweep.proxy_models.shapes import BYTE_VOCAB
from powersweep.proxy_models.token_files import (
    TokenStream,
    cache_root,
    check_token_format,
    is_token_file,
    read_header,
    shard_paths,
)
from powersweep.proxy_models.train_config import DataConfig, DataError, require_int

if TYPE_CHECKING:  # torch is imported where batches become tensors: a corpus is checked without it (`plan`)
    import torch

MIN_TRAIN_WINDOWS = 10  # a train split must hold at least this many disjoint (seq_len + 1)-token windows
CACHE_FORMAT = 2  # bump when the embedded corpus is built differently, so old cache entries are ignored
SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}
FULL_HASH_BYTES = 64 << 20  # arrays larger than this are fingerprinted from evenly spaced samples
HASH_SAMPLES = 256  # samples of a large array, 64 KiB each
SHARD_HASH_SAMPLES = 16  # of a large token shard (a corpus may have hundreds): 1 MiB read from each


ORDERS = ("random", "stream")  # how a run's batches draw their windows (see the module docstring)


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class TokenCorpus:
    """Train and held-out eval token ids in their storage dtype; every id is in [0, vocab_size)."""

    train: np.ndarray | TokenStream  # 1-D integer token ids (token shards: a stream of them, on disk)
    eval: np.ndarray | TokenStream  # held-out token ids, never seen in training
    vocab_size: int  # number of distinct token ids the tokenizer can produce
    name: str  # human-readable description for result rows
    fingerprint: str  # short hash of the content and split, recorded with results
    order: str = "random"  # of a run's batches: "random" windows, or the "stream" (module docstring)
    held_out: str = ""  # which tokens the eval split holds, for result rows: "the last 5% of the tokens"

    def __post_init__(self) -> None:
        require_int("vocab_size", self.vocab_size, minimum=1)
        if self.order not in ORDERS:
            raise DataError(f"corpus {self.name!r}: order={self.order!r}; use one of {list(ORDERS)}")
        for split in ("train", "eval"):
            ids = getattr(self, split)
            if isinstance(ids, TokenStream):  # shards: their ids are checked where they are read
                continue
            if not isinstance(ids, np.ndarray) or ids.ndim != 1 or ids.dtype.kind not in "iu":
                raise DataError(
                    f"corpus {self.name!r}: {split} must be a 1-D integer numpy array, got {ids!r:.80}"
                )
            if ids.size == 0:
                raise DataError(f"corpus {self.name!r} has 0 {split} tokens: use a larger corpus")
            _check_ids(f"the {split} split of corpus {self.name!r}", ids, self.vocab_size)


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocab 256): nothing to train or load, and every text round-trips."""

    vocab_size = BYTE_VOCAB
    name = "bytes"
    fingerprint = "bytes"  # identifies the tokenizer in cache keys

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(text) for text in texts]

    def decode(self, ids) -> str:
        return np.asarray(ids, dtype=np.uint8).tobytes().decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer.json read from disk; the package is imported only here."""

    def __init__(self, path: str):
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise DataError(
                f"tokenizer={path!r} needs the 'tokenizers' package: pip install "
                "'powersweep[tokenizers]', or drop tokenizer to use bytes"
            ) from exc
        if not os.path.isfile(path):
            raise DataError(
                f"tokenizer={path!r}: no such file; give the path to a tokenizer.json or None for bytes"
            )
        raw = Path(path).read_bytes()
        try:
            self._tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
        except Exception as exc:  # the Rust side raises a bare Exception for malformed files
            raise DataError(f"tokenizer={path!r} is not a valid tokenizer.json ({exc})") from exc
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self.name = os.path.basename(path)
        self.fingerprint = hashlib.sha256(raw).hexdigest()[:16]

    def encode(self, text: str) -> np.ndarray:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        dtype = _storage_dtype(self.vocab_size)
        return [
            np.asarray(encoding.ids, dtype=dtype) for encoding in self._tokenizer.encode_batch(list(texts))
        ]

    def decode(self, ids) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_id(self, token: str) -> int | None:
        """The id of `token` in the vocabulary; None when it has none."""
        return self._tokenizer.token_to_id(token)


def load_tokenizer(path: str | None) -> ByteTokenizer | HFTokenizer:
    """The tokenizer.json at `path`, or the byte tokenizer when `path` is None."""
    return ByteTokenizer() if path is None else HFTokenizer(path)


def load_corpus(config: DataConfig) -> TokenCorpus:
    """The corpus `config.source` names, tokenized and split into train and eval.

    >>> load_corpus(DataConfig(source="notes/**/*.md", tokenizer="tokenizer.json"))
    """
    if config.source == "embedded":
        return _load_embedded(config)
    if is_shard_source(config.source):
        return _load_shards(config)
    if is_text_dataset(config.source):
        return _load_shards(replace(config, source=prepared_cache(config), tokenizer=None))
    if config.source.endswith(".bin"):
        return _load_token_file(config)
    return _load_text(config)


def corpus_identity(config: DataConfig) -> str:
    """What `config` names as this machine reads it, cheaply, for comparing machines: the corpus's
    fingerprint (token shards: their headers and sampled ids, remote ones their names and sizes), or for a
    text dataset, which each machine prepares itself, its files' and tokenizer's hashes."""
    if not is_shard_source(config.source) and is_text_dataset(config.source):
        tokenizer = load_tokenizer(config.tokenizer).fingerprint if config.tokenizer else None
        return json.dumps(["text dataset", source_fingerprint(config.source), tokenizer, config.text_column])
    return load_corpus(config).fingerprint


def prepared_cache(config: DataConfig) -> str:
    """The folder in the cache (under $POWERSWEEP_CACHE) holding the text dataset `config.source` prepared
    with `config.tokenizer` (`proxy_models/prepared.py`): prepared here unless it is there already. One
    process of a machine prepares it, under a lock; the others wait for it, then read it."""
    if config.tokenizer is None:
        raise DataError(
            f"source={config.source!r} is a text dataset: give tokenizer (a tokenizer.json) to prepare "
            "it, or prepare it with `powersweep data prepare` and give the folder as source"
        )
    tokenizer = load_tokenizer(config.tokenizer)
    key = json.dumps(
        [source_fingerprint(config.source), tokenizer.fingerprint, config.text_column, config.eval_fraction]
    )
    folder = cache_root() / "prepared" / _digest(key.encode())
    folder.parent.mkdir(parents=True, exist_ok=True)
    with machine_lock(f"{folder}.lock"):
        if not is_prepared(str(folder)):
            prepare(
                config.source,
                tokenizer=config.tokenizer,
                out=str(folder),
                text_column=config.text_column,
                eval_fraction=config.eval_fraction,
            )
    return str(folder)


def is_shard_source(source: str | Sequence[str]) -> bool:
    """Whether `source` names token shards (`proxy_models/token_files.py`) rather than text, the embedded
    corpus or one sidecar `.bin` file (read into memory, as ever): a list, an `.npy` file, an llm.c `.bin`,
    or a glob or directory whose files are all token files."""
    if not isinstance(source, str) or is_uri(source):  # object storage: token shards only, for now
        return True
    path = os.path.expanduser(source)
    if path.endswith(".npy") or is_prepared(path):
        return True
    if os.path.isfile(path):
        return path.endswith(".bin") and not os.path.isfile(path + ".json")
    if os.path.isdir(path):
        files = [p for p in Path(path).rglob("*") if p.is_file() and not _hidden(p.relative_to(path))]
    elif any(char in path for char in "*?["):
        files = [Path(p) for p in glob.glob(path, recursive=True) if os.path.isfile(p)]
    else:
        return path.endswith(".bin")
    if not files:  # a glob that matches nothing: shards if it asks for them (refused there, by name)
        return is_token_file(path)
    return all(is_token_file(p.name) for p in files)


def train_batch(
    corpus: TokenCorpus, *, step: int, batch_size: int, seq_len: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch `step` of a run seeded `seed`: `batch_size` windows at random offsets of the train split.

    A pure function of (seed, step): the offsets come from numpy.random.default_rng([seed, step]), so steps
    can be drawn in any order (resume, fork) with no loader state. Returns int64 tensors (x, y), each
    (batch_size, seq_len), where y is x shifted left by one token.
    """
    for name, value, minimum in (
        ("step", step, 0),
        ("seed", seed, 0),
        ("batch_size", batch_size, 1),
        ("seq_len", seq_len, 1),
    ):
        require_int(name, value, minimum=minimum)
    _require_tokens(corpus, "train", seq_len, windows=MIN_TRAIN_WINDOWS)
    if corpus.order == "stream":  # shards on disk: their ids are checked as they are read
        x, y = _stream_batch(corpus.train, step=step, batch_size=batch_size, seq_len=seq_len, seed=seed)
        _check_read(corpus, f"batch {step} (seed {seed})", x, y)
        return x, y
    offsets = np.random.default_rng([seed, step]).integers(0, len(corpus.train) - seq_len, size=batch_size)
    return _windows(corpus.train, offsets, seq_len)


def stream_start(train_tokens: int, *, seq_len: int, seed: int) -> int:
    """Where a run seeded `seed` starts reading a stream corpus of `train_tokens` tokens."""
    return int(np.random.default_rng([seed]).integers(0, train_tokens - seq_len))


def passes(corpus: TokenCorpus, tokens: float) -> float:
    """How many times a run of `tokens` training tokens reads a stream corpus's train split (above 1: some
    tokens twice)."""
    return tokens / len(corpus.train)


def _stream_batch(
    ids: np.ndarray | TokenStream, *, step: int, batch_size: int, seq_len: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch `step` of a stream corpus: windows j = step * batch_size + i of seq_len tokens each, one after
    another from the seed's start, around the end to the beginning (passes over 1 read tokens again)."""
    span = len(ids) - seq_len  # window starts in [0, span): the last target stays in range
    first = (stream_start(len(ids), seq_len=seq_len, seed=seed) + step * batch_size * seq_len) % span
    if first + batch_size * seq_len < span:  # one stretch: read once, then viewed as windows
        import torch

        tokens = np.asarray(ids[first : first + batch_size * seq_len + 1]).astype(np.int64)
        x = torch.from_numpy(tokens[:-1].reshape(batch_size, seq_len))
        y = torch.from_numpy(tokens[1:].reshape(batch_size, seq_len))
        return x, y
    starts = (first + np.arange(batch_size, dtype=np.int64) * seq_len) % span
    return _windows(ids, starts, seq_len)


def eval_batches(
    corpus: TokenCorpus, *, seq_len: int, batch_size: int, eval_tokens: int | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed held-out set: the same windows of the eval split for every run, as (x, y) int64 batches.

    floor(eval_tokens / seq_len) non-overlapping windows (None = as many as the eval split holds), spread
    evenly over the eval split so that a small eval set still samples all of it; when the split holds just
    eval_tokens they are contiguous from its start. The windows do not depend on batch_size, so runs with
    different batch sizes score the same tokens; the last batch may hold fewer than batch_size windows.
    """
    require_int("seq_len", seq_len, minimum=1)
    require_int("batch_size", batch_size, minimum=1)
    if eval_tokens is not None:
        require_int("eval_tokens", eval_tokens, minimum=seq_len)
    _require_tokens(corpus, "eval", seq_len, windows=1)
    x, y = _windows(corpus.eval, _eval_starts(len(corpus.eval), seq_len, eval_tokens), seq_len)
    if corpus.order == "stream":
        _check_read(corpus, "the held-out set", x, y)
    return list(zip(x.split(batch_size), y.split(batch_size)))


def check_windows(corpus: TokenCorpus, *, seq_len: int, eval_tokens: int | None = None) -> None:
    """Raise DataError unless `corpus` serves what every run of seq_len needs: train batches (`train_batch`)
    and the held-out set (`eval_batches`, with `eval_tokens` of at least one window)."""
    _require_tokens(corpus, "train", seq_len, windows=MIN_TRAIN_WINDOWS)
    _require_tokens(corpus, "eval", seq_len, windows=1)
    if eval_tokens is not None and eval_tokens < seq_len:
        raise DataError(
            f"eval_tokens={eval_tokens} is less than one eval window of seq_len={seq_len} tokens: "
            f"raise train.data.eval_tokens to at least {seq_len}"
        )


def embedded_files(config: DataConfig | None = None) -> tuple[list[str], list[str]]:
    """(train, eval): the standard-library files of the embedded corpus, relative to `stdlib_root()`, sorted.

    The train split is the concatenation of the train files in this order (likewise eval).
    """
    config = config or DataConfig()
    return _split_by_name(dict(_stdlib_files(config.max_bytes)), config.eval_fraction)


def stdlib_root() -> Path:
    """The standard-library directory of the running Python (outside any virtual environment)."""
    return Path(sysconfig.get_paths()["stdlib"])


def write_token_file(path: str | os.PathLike, tokens, *, vocab_size: int, dtype: str | None = None) -> None:
    """Write `tokens` as a raw token file at `path` and its sidecar `<path>.json`, each atomically.

    dtype defaults to uint16 when vocab_size <= 65536, else uint32.

    >>> write_token_file("corpus.bin", ids, vocab_size=50257)  # then DataConfig(source="corpus.bin")
    """
    path = str(path)
    require_int("vocab_size", vocab_size, minimum=1)
    dtype = dtype or ("uint16" if vocab_size <= 1 << 16 else "uint32")
    check_token_format(f"write_token_file({path!r})", dtype, vocab_size)
    ids = np.asarray(tokens)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise DataError(
            f"tokens for {path!r} must be a 1-D integer array, got dtype {ids.dtype}, shape {ids.shape}"
        )
    _check_ids(f"tokens for {path!r}", ids, vocab_size)
    write_atomically(path, lambda stream: ids.astype(dtype, copy=False).tofile(stream))
    sidecar = json.dumps({"dtype": dtype, "vocab_size": vocab_size}).encode()
    write_atomically(path + ".json", lambda stream: stream.write(sidecar))


def _load_text(config: DataConfig) -> TokenCorpus:
    files = _text_files(config.source)
    tokenizer = load_tokenizer(config.tokenizer)
    name = _describe(config.source, tokenizer)
    if len(files) == 1:
        ids = _encode(tokenizer, [_read_text(path) for path in files.values()])
        cut = _tail_cut(len(ids), config.eval_fraction)
        return _make_corpus(ids[:cut], ids[cut:], tokenizer.vocab_size, name, _tail(config.eval_fraction))
    train_names, eval_names = _split_by_name(
        {key: os.path.getsize(path) for key, path in files.items()}, config.eval_fraction
    )
    train = _encode(tokenizer, [_read_text(files[key]) for key in train_names])
    held_out = _encode(tokenizer, [_read_text(files[key]) for key in eval_names])
    return _make_corpus(train, held_out, tokenizer.vocab_size, name, _files(eval_names, len(files)))


def _text_files(source: str) -> dict[str, str]:
    """{key: path} of the files `source` names, sorted by key (the path relative to a directory source)."""
    if os.path.isfile(source):
        return {os.path.basename(source): source}
    if os.path.isdir(source):
        root = Path(source)
        paths = [p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root))]
        files = {p.relative_to(root).as_posix(): str(p) for p in paths}
    elif any(char in source for char in "*?["):
        files = {p: p for p in glob.glob(source, recursive=True) if os.path.isfile(p)}
    else:
        raise DataError(
            f"source={source!r}: no such file or directory; give 'embedded', a text file/dir/glob "
            "or a .bin token file"
        )
    if not files:
        raise DataError(f"source={source!r} holds no files: point it at utf-8 text files")
    return dict(sorted(files.items()))


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path!r} is not utf-8 text (bad byte at offset {exc.start}): convert it, leave it out "
            "with a glob such as 'dir/**/*.txt', or pre-tokenize it into a .bin token file"
        ) from exc


def _load_shards(config: DataConfig) -> TokenCorpus:
    """Token shards as a stream corpus: the held-out split from `eval_source`, else by shards, else one
    shard's tail (see the module docstring)."""
    if config.tokenizer is not None:
        raise DataError(
            f"tokenizer={config.tokenizer!r} with the token shards source={_show(config.source)}: their ids "
            "are tokenized already; drop tokenizer"
        )
    prepared = isinstance(config.source, str) and is_prepared(config.source)
    if prepared:  # `powersweep data prepare`'s folder: its manifest lists the shards of each split
        manifest = read_manifest(config.source)
        split = {
            name: [
                read_header(within(config.source, s["name"]), vocab_size=manifest["vocab_size"])
                for s in manifest["shards"][name]
            ]
            for name in ("train", "eval")
        }
        shards = split["train"]
    else:
        shards = [read_header(path) for path in shard_paths(config.source)]
    if config.eval_source is not None:
        held_out = [read_header(path) for path in shard_paths(config.eval_source)]
        shared = sorted(
            {os.path.realpath(s.path) for s in shards} & {os.path.realpath(s.path) for s in held_out}
        )
        if shared:
            raise DataError(
                f"eval_source names {len(shared)} of the training shards ({shared[0]!r}"
                f"{', ...' if len(shared) > 1 else ''}): the held-out split never overlaps training; name "
                "shards that source does not"
            )
        train, held = TokenStream.open(shards), TokenStream.open(held_out)
        description = f"eval_source {_show(config.eval_source)}"
    elif prepared:
        train, held = TokenStream.open(shards), TokenStream.open(split["eval"])
        description = f"{manifest['held_out']} of {shown(config.source)}"
    elif len(shards) >= 2:
        by_path = {s.path: s for s in shards}
        train_paths, eval_paths = _split_by_name(
            {path: s.tokens for path, s in by_path.items()}, config.eval_fraction
        )
        train = TokenStream.open([by_path[p] for p in train_paths])
        held = TokenStream.open([by_path[p] for p in eval_paths])
        description = _files([os.path.basename(p) for p in eval_paths], len(shards), what="shards")
    else:
        ids = shards[0].ids()
        cut = _tail_cut(len(ids), config.eval_fraction)
        train, held = TokenStream([ids[:cut]], shards), TokenStream([ids[cut:]], shards)
        description = _tail(config.eval_fraction)
    vocab_size = max(s.vocab_size for s in (*train.shards, *held.shards))
    first = shown(config.source if isinstance(config.source, str) else config.source[0])
    name = first if isinstance(config.source, str) else f"{first} (+{len(shards) - 1} shards)"
    fingerprint = _stream_fingerprint(train, held, vocab_size)
    return TokenCorpus(train, held, vocab_size, name, fingerprint, "stream", description)


def _tail(eval_fraction: float) -> str:
    return f"the last {eval_fraction:.0%} of the tokens"


def _files(names: Sequence[str], total: int, *, what: str = "files") -> str:
    """The held-out files, named (the first few) and counted."""
    shown = ", ".join(names[:3]) + (f", ... ({len(names)})" if len(names) > 3 else "")
    return f"{len(names)} of {total} {what}: {shown}"


def _show(source: str | Sequence[str]) -> str:
    """A source as a person reads it in a message or a row (a URI without its credentials)."""
    if isinstance(source, str):
        return repr(shown(source))
    names = [shown(s) for s in source]
    return repr(names) if len(names) <= 2 else f"[{names[0]!r}, ... {len(names)} files]"


def _load_token_file(config: DataConfig) -> TokenCorpus:
    """One sidecar `.bin` file, read into a corpus in memory (random windows) with its tail held out."""
    path = config.source
    if config.tokenizer is not None:
        raise DataError(
            f"tokenizer={config.tokenizer!r} with the pre-tokenized source={path!r}: its sidecar "
            "already fixes the vocabulary; drop tokenizer"
        )
    shard = read_header(path)
    ids = shard.ids()
    cut = _tail_cut(len(ids), config.eval_fraction)
    return _make_corpus(ids[:cut], ids[cut:], shard.vocab_size, path, _tail(config.eval_fraction))


def _load_embedded(config: DataConfig) -> TokenCorpus:
    tokenizer = load_tokenizer(config.tokenizer)
    files = _stdlib_files(config.max_bytes)
    key = _cache_key(config, tokenizer, files)
    stem = cache_root() / f"embedded-{_digest(json.dumps(key, sort_keys=True).encode())}"
    cached = _read_cache(stem, key)
    if cached is not None:
        return cached
    train_names, eval_names = _split_by_name(dict(files), config.eval_fraction)
    corpus = _make_corpus(
        _encode_stdlib(tokenizer, train_names),
        _encode_stdlib(tokenizer, eval_names),
        tokenizer.vocab_size,
        _describe(f"embedded python-{platform.python_version()} stdlib", tokenizer),
        _files(eval_names, len(files)),
    )
    _write_cache(stem, key, corpus, train_names, eval_names)
    return corpus


def _stdlib_files(max_bytes: int) -> list[tuple[str, int]]:
    """(relative path, bytes) of the non-empty stdlib .py files, sorted, up to `max_bytes` in total."""
    found = sorted(_walk_sources(stdlib_root()))
    kept, total = [], 0
    for name, size in found:
        if total + size > max_bytes:
            break
        kept.append((name, size))
        total += size
    if not found:
        raise DataError(
            f"no Python source files under {str(stdlib_root())!r}: this Python ships without its "
            "standard-library sources; use a text or .bin token file as source"
        )
    if len(kept) < 2:
        raise DataError(
            f"max_bytes={max_bytes} keeps {len(kept)} of {len(found)} standard-library files, and a "
            f"train/eval split by file needs 2: raise max_bytes (the default is 16_000_000)"
        )
    return kept


def _walk_sources(root: Path):
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in SKIPPED_DIRS and not d.startswith(".")]
        for name in names:
            path = Path(directory, name)
            if name.endswith(".py") and path.is_file() and path.stat().st_size > 0:
                yield path.relative_to(root).as_posix(), path.stat().st_size


def _encode_stdlib(tokenizer, names: list[str]) -> np.ndarray:
    root = stdlib_root()
    return _encode(
        tokenizer, [(root / name).read_bytes().decode("utf-8", errors="replace") for name in names]
    )


def _cache_key(config: DataConfig, tokenizer, files: list[tuple[str, int]]) -> dict:
    """Everything the embedded corpus depends on; a changed stdlib file list or size gives a new key."""
    listing = "\n".join(f"{name}\t{size}" for name, size in files).encode()
    return {
        "format": CACHE_FORMAT,
        "python": sys.version,
        "stdlib": str(stdlib_root()),
        "max_bytes": config.max_bytes,
        "eval_fraction": config.eval_fraction,
        "tokenizer": tokenizer.fingerprint,
        "files": _digest(listing),
    }


def _read_cache(stem: Path, key: dict) -> TokenCorpus | None:
    """The cached corpus under `stem`, or None when it is missing, stale or damaged."""
    try:
        meta = json.loads(Path(f"{stem}.json").read_text(encoding="utf-8"))
        train, held_out = np.load(f"{stem}.train.npy"), np.load(f"{stem}.eval.npy")
        if meta["key"] != key or _fingerprint(train, held_out, meta["vocab_size"]) != meta["fingerprint"]:
            return None
        held = _files(meta["eval_files"], len(meta["train_files"]) + len(meta["eval_files"]))
        return TokenCorpus(
            train, held_out, meta["vocab_size"], meta["name"], meta["fingerprint"], held_out=held
        )
    except (OSError, EOFError, ValueError, KeyError, TypeError):  # DataError is a ValueError
        return None


def _write_cache(
    stem: Path, key: dict, corpus: TokenCorpus, train_names: list[str], eval_names: list[str]
) -> None:
    """Store `corpus` under `stem`; the JSON sidecar goes last, so its presence marks a complete entry."""
    meta = {
        "key": key,
        "name": corpus.name,
        "vocab_size": corpus.vocab_size,
        "fingerprint": corpus.fingerprint,
        "train_tokens": len(corpus.train),
        "eval_tokens": len(corpus.eval),
        "train_files": train_names,
        "eval_files": eval_names,
    }
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(f"{stem}.train.npy", lambda stream: np.save(stream, corpus.train))
        write_atomically(f"{stem}.eval.npy", lambda stream: np.save(stream, corpus.eval))
        write_atomically(f"{stem}.json", lambda stream: stream.write(json.dumps(meta, indent=1).encode()))
    except OSError:
        pass  # the cache only saves time: an unwritable cache directory must not stop a run


def _split_by_name(sizes: dict[str, int], eval_fraction: float) -> tuple[list[str], list[str]]:
    """(train, eval) file names, each sorted; the eval files hold about eval_fraction of all bytes.

    Files are taken in the order of their names' sha256 hashes while they fit in the eval budget, so the
    split is fixed, and a file larger than the budget (pydoc_data/topics.py, say) always stays in train.
    """
    assert len(sizes) >= 2, sizes
    budget, used, held_out = eval_fraction * sum(sizes.values()), 0, []
    for name in sorted(sizes, key=lambda name: hashlib.sha256(name.encode()).hexdigest()):
        if used + sizes[name] <= budget:
            held_out.append(name)
            used += sizes[name]
    held_out = held_out or [min(sizes, key=lambda name: (sizes[name], name))]  # no file fits: the smallest
    return sorted(set(sizes) - set(held_out)), sorted(held_out)


def _tail_cut(length: int, eval_fraction: float) -> int:
    """Index where the eval tail of a `length`-token stream starts (at least one eval token)."""
    return length - max(1, round(length * eval_fraction))


def _encode(tokenizer, texts: list[str]) -> np.ndarray:
    pieces = tokenizer.encode_batch(texts)
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=_storage_dtype(tokenizer.vocab_size))


def _storage_dtype(vocab_size: int) -> type:
    return np.uint8 if vocab_size <= 1 << 8 else np.uint16 if vocab_size <= 1 << 16 else np.uint32


def _describe(source: str, tokenizer) -> str:
    return source if isinstance(tokenizer, ByteTokenizer) else f"{source} via {tokenizer.name}"


def _make_corpus(
    train: np.ndarray, held_out: np.ndarray, vocab_size: int, name: str, description: str
) -> TokenCorpus:
    if len(train) == 0 or len(held_out) == 0:
        raise DataError(
            f"corpus {name!r} has {len(train)} train and {len(held_out)} eval tokens: both splits "
            "need tokens; use a larger corpus or a larger eval_fraction"
        )
    fingerprint = _fingerprint(train, held_out, vocab_size)
    return TokenCorpus(train, held_out, vocab_size, name, fingerprint, held_out=description)


def _stream_fingerprint(train: TokenStream, held_out: TokenStream, vocab_size: int) -> str:
    """Hash of both splits of token shards, in order, and the vocab size: of each local shard its size and
    SHARD_HASH_SAMPLES slices of it (a shard may hold 10^8 tokens); of a shard on object storage, not
    fetched for a hash, its name and size."""
    digest = hashlib.sha256(f"{vocab_size}|{train.dtype.str}|{len(train)}|{len(held_out)}".encode())
    for stream in (train, held_out):
        for i in range(stream.parts):
            shard = stream.shards[i] if i < len(stream.shards) else None
            if shard is not None and is_uri(shard.path):
                name = posixpath.basename(shard.path.partition("?")[0])
                digest.update(f"|{name}|{shard.tokens}".encode())
                continue
            ids = stream.array(i)
            digest.update(f"|{len(ids)}".encode())
            for chunk in _hash_chunks(ids, samples=SHARD_HASH_SAMPLES):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _fingerprint(train: np.ndarray, held_out: np.ndarray, vocab_size: int) -> str:
    """Hash of both splits (so also of where the split falls), their dtype and the vocab size."""
    digest = hashlib.sha256(f"{vocab_size}|{train.dtype.str}|{len(train)}|{len(held_out)}".encode())
    for ids in (train, held_out):
        for chunk in _hash_chunks(ids):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _hash_chunks(ids: np.ndarray, *, samples: int = HASH_SAMPLES):
    """All of `ids`, or `samples` evenly spaced 64 KiB slices of it when larger than FULL_HASH_BYTES."""
    if ids.nbytes <= FULL_HASH_BYTES:
        yield np.ascontiguousarray(ids).data
        return
    width = (64 << 10) // ids.itemsize
    for start in np.linspace(0, len(ids) - width, samples).astype(np.int64):
        yield np.ascontiguousarray(ids[start : start + width]).data


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _windows(
    ids: np.ndarray | TokenStream, starts: np.ndarray, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) int64 tensors (len(starts), seq_len):
    the windows ids[s : s + seq_len + 1], y = x shifted by one."""
    import torch

    if isinstance(ids, np.ndarray):
        tokens = ids[starts[:, None] + np.arange(seq_len + 1)]  # (B, T + 1) in the storage dtype
    else:  # shards on disk: a slice each
        tokens = np.stack([ids[int(s) : int(s) + seq_len + 1] for s in starts])
    return torch.from_numpy(tokens[:, :-1].astype(np.int64)), torch.from_numpy(tokens[:, 1:].astype(np.int64))


def _eval_starts(length: int, seq_len: int, eval_tokens: int | None) -> np.ndarray:
    """Start offsets of the eval windows: evenly spread, non-overlapping inputs, last target in range."""
    usable = length - 1  # the last token is only ever a target
    count = min(eval_tokens or usable, usable) // seq_len
    # >= seq_len, since count * seq_len <= usable
    stride = (usable - seq_len) // (count - 1) if count > 1 else 0
    return np.arange(count, dtype=np.int64) * stride


def _require_tokens(corpus: TokenCorpus, split: str, seq_len: int, *, windows: int) -> None:
    """Raise unless the split holds `windows` disjoint windows of seq_len + 1 tokens (inputs and targets)."""
    have, need = len(getattr(corpus, split)), windows * (seq_len + 1)
    if have < need:
        fix = "a larger eval_fraction, " if split == "eval" else ""
        raise DataError(
            f"corpus {corpus.name!r} has {have} {split} tokens; seq_len={seq_len} needs at least "
            f"{need} ({windows} window{'s' * (windows > 1)}): use a larger corpus, {fix}"
            "or a shorter seq_len"
        )


def _check_read(corpus: TokenCorpus, what: str, x: torch.Tensor, y: torch.Tensor) -> None:
    """Raise unless the ids of `what`, read from token shards, are in the corpus's vocabulary."""
    high = max(int(x.max()), int(y.max()))
    if high >= corpus.vocab_size:
        raise DataError(
            f"corpus {corpus.name!r}: {what} holds token id {high}, outside [0, vocab_size="
            f"{corpus.vocab_size}): a shard holds ids of a larger vocabulary than its header or sidecar says"
        )


def _check_ids(what: str, ids: np.ndarray, vocab_size: int) -> None:
    """Raise unless every id is in [0, vocab_size); free when the dtype cannot hold anything else."""
    info = np.iinfo(ids.dtype)
    if ids.size == 0 or (info.min == 0 and info.max < vocab_size):
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        raise DataError(
            f"{what} holds token id {low if low < 0 else high}, outside [0, vocab_size={vocab_size}): "
            "the ids come from a larger vocabulary; fix vocab_size (e.g. in the token-file sidecar) "
            "or re-tokenize with the matching tokenizer"
        )
