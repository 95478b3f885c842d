"""Token shards in llm.c's layout, written by the tests themselves (nothing is downloaded): the header as
llm.c's dev/data/data_common.py writes it. A benchmark imports it after
``sys.path.insert(0, "<repository>/tests")``."""

from __future__ import annotations

import numpy as np


def write_llmc_shard(path, tokens, *, magic: int = 20240520, version: int = 1, dtype: str = "uint16") -> None:
    """A shard as llm.c writes one: 256 little-endian int32 (magic, version, the token count, zeros), then
    the tokens (uint16 GPT-2 ids with magic 20240520 and version 1)."""
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, len(tokens)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype=dtype).tobytes())
