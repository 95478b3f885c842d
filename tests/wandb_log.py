"""Reads an offline W&B run file (`run-<id>.wandb`) back into W&B's own protobuf records.

wandb ships the record schema (`wandb.proto.wandb_internal_pb2.Record`) but, since its core moved out of
Python, no reader of the file. The file is a LevelDB-style log (github.com/google/leveldb,
doc/log_format.md): a 7-byte header (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each
with a 7-byte header (CRC-32 of its type byte and data, length, type: full, first, middle or last). Every
chunk's CRC is checked, so a misread file fails here rather than passing a substring test by chance.
Importable from any test folder (tests/ is on the path, as for llmc_shards.py)."""

import json
import struct
import zlib
from pathlib import Path

BLOCK_BYTES = 32768
HEADER = struct.Struct("<IHB")  # CRC-32, data length, chunk type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), (
        f"{path}: not a W&B run file ({ident!r}, {magic:#x})"
    )
    records, pending, at = [], b"", 7
    while at + HEADER.size <= len(data):
        left_in_block = BLOCK_BYTES - at % BLOCK_BYTES
        crc, length, kind = HEADER.unpack_from(data, at)
        if left_in_block < HEADER.size or (crc, length, kind) == (0, 0, 0):  # the block's padding
            at += left_in_block
            continue
        chunk = data[at + HEADER.size : at + HEADER.size + length]
        assert zlib.crc32(bytes([kind]) + chunk) == crc, f"{path}: chunk at byte {at} fails its CRC"
        at += HEADER.size + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            records.append(wandb_internal_pb2.Record.FromString(pending))
    return records


def read_run(path: str | Path) -> dict:
    """The run as a W&B page shows it: its run record, config, metric definitions and history rows."""
    records = read_records(path)
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    history = [
        {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    metrics = {
        m.metric.name or m.metric.glob_name: m.metric.step_metric
        for m in records
        if m.WhichOneof("record_type") == "metric"
    }
    return {
        "run": run,
        "config": {u.key: json.loads(u.value_json) for u in run.config.update if u.key != "_wandb"},
        "metrics": metrics,
        "history": history,
        "exited": any(r.WhichOneof("record_type") == "exit" for r in records),
    }
