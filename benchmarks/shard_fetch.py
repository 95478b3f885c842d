"""The first trial's fetch of token shards from object storage: how long a run's first batch waits when its
shard is not in the machine's cache yet, and when it is (moto's S3 server on loopback: the copy and the
bookkeeping, not a network).

Four llm.c shards of `--shard-tokens` GPT-2 ids are written and uploaded; then, in fresh processes with an
empty cache and again with the cache filled: the corpus described from the shards' headers (`load_corpus`),
and the run's first batch (which fetches the shard its stretch starts in).

    python benchmarks/shard_fetch.py                  # shards of 50M tokens (100 MB each)
    python benchmarks/shard_fetch.py --quick          # shards of 1M tokens
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from llmc_shards import write_llmc_shard  # noqa: E402 - llm.c's layout, as the tests write it
from s3_server import S3Server  # noqa: E402 - moto's server on loopback, counting requests

ONE_RUN = """
import json, sys, time
import torch  # imported by the first batch otherwise: not the fetch's time
from powersweep.proxy_models.data import DataConfig, load_corpus, train_batch
imported = time.perf_counter()
corpus = load_corpus(DataConfig(source=sys.argv[1], eval_source=sys.argv[2]))
described = time.perf_counter()
train_batch(corpus, step=0, batch_size=16, seq_len=4096, seed=0)
batch = time.perf_counter()
print(json.dumps({"describe_s": described - imported, "first_batch_s": batch - described}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shard-tokens", type=float, default=50e6)
    parser.add_argument("--quick", action="store_true", help="shards of 1M tokens")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    tokens = int(1e6 if args.quick else args.shard_tokens)
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as root, S3Server() as server:
        server.bucket("shards")
        uri = server.uri("shards", "fineweb")
        filesystem, prefix = pafs.FileSystem.from_uri(uri)
        for name in [f"fineweb_train_{i:06d}.bin" for i in range(4)] + ["fineweb_val_000000.bin"]:
            write_llmc_shard(
                Path(root) / name, rng.integers(0, 50_257, tokens if "train" in name else 100_000)
            )
            with filesystem.open_output_stream(f"{prefix}/{name}") as out:
                out.write((Path(root) / name).read_bytes())
            os.remove(Path(root) / name)
        base, _, query = uri.partition("?")
        source, held = f"{base}/fineweb_train_*.bin?{query}", f"{base}/fineweb_val_*.bin?{query}"
        script = Path(root, "run.py")
        script.write_text(ONE_RUN)
        env = {**os.environ, "POWERSWEEP_CACHE": f"{root}/cache"}
        for cache in ("empty", "filled"):
            with server.requests() as counted:
                done = subprocess.run(
                    [sys.executable, str(script), source, held],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
            run = {
                **json.loads(done.stdout.strip().splitlines()[-1]),
                "cache": cache,
                "requests": counted.total,
            }
            results.append(run)
            print(
                f"cache {cache:6s}: corpus described in {run['describe_s']:.3f} s, first batch of 16 x 4096 "
                f"in {run['first_batch_s']:.3f} s ({counted.total} requests; shards of {tokens:,} tokens, "
                f"{(1024 + 2 * tokens) / 1e6:.0f} MB)"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
