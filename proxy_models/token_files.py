"""Pre-tokenized corpora on disk: the token shard formats a lab has, read in place (memory-mapped).

- llm.c / modded-nanogpt shards (``fineweb_train_000001.bin``): a header of 256 little-endian int32 (magic,
  version, token count), then the tokens. Magic 20240520 with version 1 holds uint16 GPT-2 ids (vocabulary
  50,257); magic 20240801 with version 7 holds uint32 Llama-3 ids (vocabulary 128,256), as llm.c's
  ``dev/data/data_common.py`` writes them.
- powersweep's own ``.bin``: raw uint16/uint32 ids, no header, with a ``<file>.json`` sidecar
  ``{"dtype": "uint16", "vocab_size": N}`` (``data.write_token_file`` writes the pair).
- numpy ``.npy``: a 1-D integer array; its vocabulary is its largest id plus one unless a ``<file>.json``
  sidecar gives ``vocab_size``.

A source names shards as one file, a list of files, a glob or a directory (its ``.bin`` and ``.npy`` files,
sorted by name), locally or on object storage (``s3://bucket/fineweb_train_*.bin``: an llm.c ``.bin`` or an
``.npy``; described from its first 4 KiB, fetched into the machine's cache by ``fetch`` when first read).
``read_header`` reads a shard's header only (what checks before a sweep need); ``TokenStream`` maps the
shards and reads them as one sequence of tokens, in order, without copying them.

Example::

    shards = [read_header(p) for p in shard_paths("/data/fineweb_train_*.bin")]
    stream = TokenStream.open(shards)      # len(stream): every token of every shard
    window = stream[1_000_000:1_000_257]   # a numpy array, even across a shard boundary
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import io
import json
import os
import posixpath
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from powersweep.proxy_models.files import machine_lock
from powersweep.proxy_models.filesystems import is_uri, resolve, shown
from powersweep.proxy_models.train_config import DataError

SUFFIXES = (".bin", ".npy")  # the files a directory or glob of token shards holds
HEADER_INTS = 256  # an llm.c shard's header: 256 int32
# magic -> (version, dtype, vocabulary, tokenizer) of llm.c's shard formats (dev/data/data_common.py)
LLMC_FORMATS = {
    20240520: (1, "uint16", 50_257, "gpt-2"),
    20240801: (7, "uint32", 128_256, "llama-3"),
}
TOKEN_DTYPES = ("uint16", "uint32")  # of a sidecar .bin
FETCH_CHUNK_BYTES = 8 << 20  # a shard is copied from object storage this much at a time


@dataclass(frozen=True)
class Shard:
    """One token shard as its header describes it."""

    path: str
    format: str  # "llm.c" | "sidecar" | "npy"
    dtype: str  # numpy dtype of the stored ids
    tokens: int  # ids in the shard
    offset: int  # bytes before the first id
    vocab_size: int  # the vocabulary its ids come from

    def ids(self) -> np.ndarray:
        """The shard's ids, memory-mapped read-only (a plain ndarray view); a shard on object storage is
        fetched into this machine's cache first (`fetch`)."""
        local = fetch(self.path) if is_uri(self.path) else self.path
        if self.format == "npy":
            return np.load(local, mmap_mode="r")
        mapped = np.memmap(local, dtype=self.dtype, mode="r", offset=self.offset, shape=(self.tokens,))
        return np.asarray(mapped)


def is_token_file(path: str) -> bool:
    """Whether ``path`` names a token shard by its suffix (a sidecar .bin or an llm.c one, or .npy)."""
    return path.endswith(SUFFIXES)


def shard_paths(source: str | Sequence[str]) -> list[str]:
    """The shard files ``source`` names: a file, a list of files, a glob or a directory (its .bin and .npy
    files, sorted). DataError if it names none."""
    if not isinstance(source, str):
        paths = [path for item in source for path in shard_paths(item)]
        if not paths:
            raise DataError("source=[]: an empty list names no token shards; give at least one file")
        return paths
    if is_uri(source):
        return _remote_paths(source)
    expanded = os.path.expanduser(source)
    if os.path.isdir(expanded):
        paths = sorted(str(p) for p in Path(expanded).rglob("*") if p.is_file() and is_token_file(p.name))
        hidden = [
            p for p in paths if any(part.startswith(".") for part in Path(p).relative_to(expanded).parts)
        ]
        paths = [p for p in paths if p not in hidden]
        if not paths:
            raise DataError(f"source={source!r}: a directory with no .bin or .npy token shards in it")
        return paths
    if any(char in expanded for char in "*?["):
        paths = sorted(p for p in glob.glob(expanded, recursive=True) if os.path.isfile(p))
        if not paths:
            raise DataError(f"source={source!r}: the glob matches no file here: check the pattern and path")
        return paths
    if not os.path.isfile(expanded):
        raise DataError(f"source={source!r}: no such token file: give an existing .bin or .npy shard")
    return [expanded]


def read_header(path: str, *, vocab_size: int | None = None) -> Shard:
    """The shard at ``path`` as its header describes it (nothing else is read; an .npy file's ids are read
    for their largest unless ``vocab_size`` gives the vocabulary). DataError, naming the file and what is
    wrong, for a file that is none of the formats or whose header disagrees with its size."""
    if is_uri(path):
        return _remote_header(path, vocab_size)
    if path.endswith(".npy"):
        return _npy_header(path, vocab_size)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(4 * HEADER_INTS)
    head = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<i4")
    if len(head) and int(head[0]) in LLMC_FORMATS:
        return _llmc_header(path, head, size)
    if os.path.isfile(path + ".json"):
        return _sidecar_header(path, size)
    raise DataError(
        f"token file {path!r}: no llm.c header (magic {' or '.join(map(str, LLMC_FORMATS))}) and no sidecar "
        f"{path + '.json'!r}: write it with llm.c's write_datafile or powersweep's write_token_file"
    )


class TokenStream:
    """Token arrays (shards) read as one sequence, in the order given, without copying: ``len()``, ``dtype``
    and slices (``stream[a:b]``, a numpy array even where it crosses a shard boundary). ``open`` maps shards
    on their first read (a shard on object storage is fetched then: a run fetches only the shards its stretch
    of the stream crosses); ``shards`` names them (empty for arrays given directly)."""

    def __init__(self, arrays: Sequence[np.ndarray | None], shards: Sequence[Shard] = ()):
        if not arrays:
            raise DataError("a token stream needs at least one shard")
        self._arrays, self.shards = list(arrays), tuple(shards)
        dtypes = {a.dtype.name for a in arrays if a is not None} | {s.dtype for s in shards}
        if len(dtypes) > 1:
            raise DataError(f"token shards of different dtypes {sorted(dtypes)}: give shards of one format")
        self.dtype = np.dtype(dtypes.pop())
        lengths = [len(a) if a is not None else self.shards[i].tokens for i, a in enumerate(arrays)]
        self._starts = np.cumsum([0, *lengths])  # where each array begins

    @classmethod
    def open(cls, shards: Sequence[Shard]) -> TokenStream:
        """The shards as one stream, each mapped (or fetched) when it is first read."""
        return cls([None] * len(shards), shards)

    def array(self, i: int) -> np.ndarray:
        """The ids of part `i`, mapped (or fetched) now if they were not."""
        if self._arrays[i] is None:
            self._arrays[i] = self.shards[i].ids()
        return self._arrays[i]

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def parts(self) -> int:
        return len(self._arrays)

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError(f"a token stream takes slices with step 1, not {index!r}")
        start, stop, _ = index.indices(len(self))
        stop = max(start, stop)
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        pieces = []
        while start < stop:
            array, begins = self.array(first), int(self._starts[first])
            end = min(stop, begins + len(array))
            pieces.append(array[start - begins : end - begins])
            start, first = end, first + 1
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=self.dtype)


def cache_root() -> Path:
    """This machine's cache: $POWERSWEEP_CACHE, else ~/.cache/powersweep."""
    return Path(os.environ.get("POWERSWEEP_CACHE") or Path.home() / ".cache" / "powersweep")


def fetch(uri: str) -> str:
    """The local copy of the shard at `uri` in this machine's cache (`cache_root()/shards/`), fetched now
    unless it is there: once a machine, under a lock its other processes wait on, into a temporary file
    renamed into place (a copy is whole or absent)."""
    filesystem, path = resolve(uri, what="token shard", error=DataError)
    size = filesystem.get_file_info(path).size
    key = hashlib.sha256(f"{uri.split('://', 1)[0]}://{path}|{size}".encode()).hexdigest()[:16]
    local = cache_root() / "shards" / key / posixpath.basename(path)
    local.parent.mkdir(parents=True, exist_ok=True)
    with machine_lock(f"{local}.lock"):
        if not local.is_file() or local.stat().st_size != size:
            temporary = f"{local}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                with filesystem.open_input_stream(path) as remote, open(temporary, "wb") as copy:
                    while chunk := remote.read(FETCH_CHUNK_BYTES):
                        copy.write(chunk)
                os.replace(temporary, local)
            finally:
                if os.path.exists(temporary):
                    os.remove(temporary)
    return str(local)


def _remote_paths(uri: str) -> list[str]:
    """The shard URIs that `uri` names on its filesystem: one object, a glob of one folder's objects, or a
    folder's token files. Each keeps `uri`'s credentials and query (an endpoint, a region)."""
    import pyarrow.fs as pafs

    filesystem, path = resolve(uri, what="source", error=DataError)
    if any(char in path for char in "*?["):
        folder, pattern = posixpath.split(path)
        infos = filesystem.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        paths = sorted(i.path for i in infos if i.is_file and fnmatch.fnmatchcase(i.base_name, pattern))
        if not paths:
            raise DataError(
                f"source={shown(uri)!r}: the glob matches no object there: check the pattern and path"
            )
    else:
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise DataError(f"source={shown(uri)!r}: no such token file: give an existing .bin or .npy shard")
        if info.type == pafs.FileType.Directory:
            infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
            paths = sorted(i.path for i in infos if i.is_file and is_token_file(i.base_name))
        else:
            paths = [path]
    return [_child(uri, p) for p in paths]


def _child(uri: str, path: str) -> str:
    """The URI of `path` on `uri`'s filesystem, with `uri`'s credentials and query."""
    scheme, rest = uri.split("://", 1)
    authority, _, query = rest.partition("?")
    user = authority.split("/", 1)[0].rpartition("@")[0]
    return f"{scheme}://{user + '@' if user else ''}{path}{'?' + query if query else ''}"


def _remote_header(uri: str, vocab_size: int | None) -> Shard:
    """A shard on object storage described from its first bytes (a ranged read), without fetching it; an
    .npy shard's vocabulary comes from `vocab_size` or its sidecar, else from its ids (fetched)."""
    import pyarrow.fs as pafs

    filesystem, path = resolve(uri, what="token shard", error=DataError)
    info = filesystem.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise DataError(f"token file {shown(uri)!r}: no such object: give an existing .bin or .npy shard")
    with filesystem.open_input_file(path) as f:
        head = f.read_at(min(info.size, 4096), 0)
    if path.endswith(".npy"):
        stream = io.BytesIO(head)
        version = np.lib.format.read_magic(stream)
        read = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read(stream)
        if len(shape) != 1 or dtype.kind not in "iu" or not shape[0]:
            raise DataError(
                f"token file {shown(uri)!r} holds a {dtype} array of shape {shape}: a token shard is a "
                "non-empty 1-D integer array"
            )
        shard = Shard(uri, "npy", dtype.name, int(shape[0]), stream.tell(), vocab_size or 0)
        return (
            shard
            if vocab_size
            else Shard(uri, "npy", dtype.name, int(shape[0]), stream.tell(), int(shard.ids().max()) + 1)
        )
    ints = np.frombuffer(head[: 4 * HEADER_INTS], dtype="<i4")
    if len(ints) and int(ints[0]) in LLMC_FORMATS:
        return _llmc_header(uri, ints, info.size)
    raise DataError(
        f"token file {shown(uri)!r}: no llm.c header (magic {' or '.join(map(str, LLMC_FORMATS))}): on "
        "object storage a shard is an llm.c .bin or an .npy array"
    )


def _llmc_header(path: str, head: np.ndarray, size: int) -> Shard:
    name = shown(path)
    magic, version, count = (int(v) for v in head[:3]) if len(head) >= 3 else (int(head[0]), -1, -1)
    want_version, dtype, vocab, tokenizer = LLMC_FORMATS[magic]
    if len(head) < HEADER_INTS:
        raise DataError(f"token file {name!r}: {size} bytes, shorter than llm.c's 1024-byte header")
    if version != want_version:
        raise DataError(
            f"token file {name!r}: llm.c magic {magic} ({tokenizer}) with version {version}, expected "
            f"{want_version}: the header is damaged or from another writer"
        )
    itemsize = np.dtype(dtype).itemsize
    body = size - 4 * HEADER_INTS
    if count <= 0 or body != count * itemsize:
        raise DataError(
            f"token file {name!r}: its header says {count} {dtype} tokens ({count * itemsize} bytes) and "
            f"{body} bytes follow it: the file is truncated or its header is wrong"
        )
    return Shard(path, "llm.c", dtype, count, 4 * HEADER_INTS, vocab)


def _sidecar_header(path: str, size: int) -> Shard:
    sidecar = path + ".json"
    try:
        meta = json.loads(Path(sidecar).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"sidecar {sidecar!r} is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or set(meta) != {"dtype", "vocab_size"}:
        raise DataError(
            f"sidecar {sidecar!r} holds {meta!r:.200}: it must be an object with exactly the keys "
            "'dtype' and 'vocab_size'"
        )
    dtype, vocab_size = meta["dtype"], meta["vocab_size"]
    check_token_format(f"sidecar {sidecar!r}", dtype, vocab_size)
    itemsize = np.dtype(dtype).itemsize
    if size == 0 or size % itemsize:
        raise DataError(
            f"token file {path!r} has {size} bytes, not a positive multiple of {itemsize} "
            f"({dtype}, from its sidecar): the file is empty or truncated, or the sidecar dtype is wrong"
        )
    return Shard(path, "sidecar", dtype, size // itemsize, 0, vocab_size)


def _npy_header(path: str, vocab_size: int | None) -> Shard:
    try:
        ids = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"token file {path!r} is not a readable .npy array ({exc})") from exc
    if ids.ndim != 1 or ids.dtype.kind not in "iu" or ids.size == 0:
        raise DataError(
            f"token file {path!r} holds a {ids.dtype} array of shape {ids.shape}: a token shard is a "
            "non-empty 1-D integer array"
        )
    sidecar = path + ".json"
    if vocab_size is None and os.path.isfile(sidecar):
        vocab_size = json.loads(Path(sidecar).read_text(encoding="utf-8")).get("vocab_size")
    elif vocab_size is None:
        vocab_size = int(ids.max()) + 1
    if ids.dtype.kind == "i" and int(ids.min()) < 0:
        raise DataError(f"token file {path!r} holds negative token ids: they are not a tokenizer's ids")
    return Shard(path, "npy", ids.dtype.name, int(ids.size), 0, int(vocab_size))


def check_token_format(where: str, dtype, vocab_size) -> None:
    """A sidecar's dtype must be one of TOKEN_DTYPES, and its vocab_size fit it."""
    if dtype not in TOKEN_DTYPES:
        raise DataError(f"{where}: dtype={dtype!r} is not supported; use one of {list(TOKEN_DTYPES)}")
    limit = np.iinfo(dtype).max + 1
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not 0 < vocab_size <= limit:
        raise DataError(
            f"{where}: vocab_size={vocab_size!r} must be an integer in [1, {limit}] for dtype {dtype}"
        )
