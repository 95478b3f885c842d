"""Batch assembly from token shards: the host time `train_batch` takes for one step of paper-12m's shape
(16 x 4096) on llm.c shards read as a stream (memory-mapped, across shard boundaries), against the same step
on a corpus in memory (random windows), and against the H100 step of paper-12m at 16 x 4096 in
benchmarks/RESULTS.md (577,930 tokens/s: 113 ms a step; target: assembly under 2% of it).

The shards are written here, in llm.c's layout (random GPT-2 ids), so nothing is downloaded. Each timing is
the median over the steps of one run; the page cache is warm after the first pass over a shard, as it is
for a run that reads its stretch of the corpus.

    python benchmarks/data_batches.py              # 4 shards of 16M tokens, 400 steps
    python benchmarks/data_batches.py --quick      # 2 shards of 1M tokens, 50 steps
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from llmc_shards import write_llmc_shard  # noqa: E402 - llm.c's layout, as the tests write it

from powersweep.proxy_models.data import DataConfig, TokenCorpus, load_corpus, train_batch  # noqa: E402

GPU_STEP_S = 16 * 4096 / 577_930  # paper-12m at 16 x 4096 on an H100 (benchmarks/RESULTS.md, call 1)
TARGET_SHARE = 0.02


def step_times(corpus: TokenCorpus, *, steps: int, batch_size: int, seq_len: int) -> list[float]:
    times = []
    for step in range(steps):
        start = time.perf_counter()
        x, y = train_batch(corpus, step=step, batch_size=batch_size, seq_len=seq_len, seed=0)
        times.append(time.perf_counter() - start)
        assert x.shape == (batch_size, seq_len)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--shard-tokens", type=float, default=16e6)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--quick", action="store_true", help="2 shards of 1M tokens, 50 steps")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.shards, args.shard_tokens, args.steps = 2, 1e6, 50
    batch_size, seq_len = 16, 4096
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as root:
        parts = [rng.integers(0, 50_257, int(args.shard_tokens)) for _ in range(args.shards)]
        for i, part in enumerate(parts):
            write_llmc_shard(Path(root) / f"fineweb_train_{i:06d}.bin", part)
        write_llmc_shard(Path(root) / "fineweb_val_000000.bin", parts[0][:100_000])
        shards = load_corpus(
            DataConfig(
                source=f"{root}/fineweb_train_*.bin", eval_source=f"{root}/fineweb_val_*.bin", repeat=True
            )
        )
        ids = np.concatenate(parts).astype(np.uint16)
        memory = TokenCorpus(ids, ids[:100_000], 50_257, "in memory", "bench")
        results = {}
        for name, corpus in (("shards, stream", shards), ("in memory, random", memory)):
            times = step_times(corpus, steps=args.steps, batch_size=batch_size, seq_len=seq_len)
            median = statistics.median(times)
            results[name] = {"median_ms": median * 1e3, "p90_ms": np.percentile(times, 90) * 1e3}
            share = median / GPU_STEP_S
            print(
                f"{name:18s} median {median * 1e3:.3f} ms, p90 {results[name]['p90_ms']:.3f} ms a step of "
                f"{batch_size} x {seq_len}: {share:.2%} of the H100 step ({GPU_STEP_S * 1e3:.0f} ms; target "
                f"under {TARGET_SHARE:.0%})"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
