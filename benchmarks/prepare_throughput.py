"""Tokenization throughput of `powersweep data prepare`: a Parquet text dataset tokenized into token shards,
on 1 core and on every core (the `tokenizers` library encodes a batch on RAYON_NUM_THREADS threads).

The text is the embedded corpus's (this Python's standard library sources), cut into documents of 4,000
characters and written as Parquet; the tokenizer is a byte-level BPE trained on the same text here, so
nothing is downloaded. Each thread count runs `prepare` in its own process, timed end to end (reading the
Parquet files, tokenizing, writing the shards and the manifest).

    python benchmarks/prepare_throughput.py             # 16 MB of text, BPE of 8,192 ids
    python benchmarks/prepare_throughput.py --quick     # 2 MB, 1,024 ids
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bpe import train_bpe  # noqa: E402 - the tests' own tokenizer trainer

from powersweep.proxy_models.data import embedded_files, stdlib_root  # noqa: E402

ONE_RUN = """
import json, sys, time
from powersweep.proxy_models.prepared import prepare
start = time.perf_counter()
manifest = prepare(sys.argv[1], tokenizer=sys.argv[2], out=sys.argv[3])
seconds = time.perf_counter() - start
tokens = sum(s["tokens"] for split in manifest["shards"].values() for s in split)
print(json.dumps({"seconds": seconds, "tokens": tokens, "documents": manifest["documents"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, default=16)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--quick", action="store_true", help="2 MB of text, a BPE of 1,024 ids")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.megabytes, args.vocab = 2, 1024
    train_names, eval_names = embedded_files()
    text, budget = [], args.megabytes * 1e6
    for name in train_names + eval_names:
        if budget <= 0:
            break
        piece = (stdlib_root() / name).read_text(errors="replace")
        text.append(piece)
        budget -= len(piece)
    joined = "".join(text)[: int(args.megabytes * 1e6)]
    documents = [joined[i : i + 4000] for i in range(0, len(joined), 4000)]
    cores = os.cpu_count() or 1
    results = []
    with tempfile.TemporaryDirectory() as root:
        train_bpe(documents, vocab_size=args.vocab, path=f"{root}/tokenizer.json")
        pq.write_table(pa.table({"text": documents}), f"{root}/corpus.parquet")
        script = Path(root, "run.py")
        script.write_text(ONE_RUN)
        for threads in sorted({1, cores}):
            env = {**os.environ, "RAYON_NUM_THREADS": str(threads)}
            start = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    str(script),
                    f"{root}/corpus.parquet",
                    f"{root}/tokenizer.json",
                    f"{root}/out{threads}",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            run = json.loads(done.stdout.strip().splitlines()[-1])
            run.update(threads=threads, megabytes=len(joined) / 1e6, process_s=time.perf_counter() - start)
            results.append(run)
            print(
                f"{threads} thread(s): {run['tokens']:,} tokens of {run['megabytes']:.1f} MB text in "
                f"{run['seconds']:.2f} s: {run['tokens'] / run['seconds']:,.0f} tokens/s, "
                f"{run['tokens'] / run['seconds'] / threads:,.0f} tokens/s per core "
                f"({run['megabytes'] / run['seconds']:.2f} MB/s)"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
