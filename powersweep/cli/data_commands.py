"""`powersweep data prepare` and `powersweep data inspect`: a text dataset tokenized once into token shards,
and what a prepared corpus holds (proxy_models/prepared.py)."""

from __future__ import annotations

import sys
import time

from powersweep.cli.options import add_json_option, print_json, whole_count


def add_data_parser(sub) -> None:
    data = sub.add_parser("data", help="prepare a text dataset as token shards, or inspect a prepared corpus")
    verbs = data.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser(
        "prepare", help="tokenize a Parquet, JSON Lines or datasets corpus into token shards"
    )
    p.add_argument(
        "source", help="Parquet or JSON Lines files (a file, glob or folder), or a datasets folder"
    )
    p.add_argument("--tokenizer", required=True, help="a tokenizer.json (Hugging Face tokenizers)")
    p.add_argument(
        "--out",
        required=True,
        help="the folder to write (a prepared corpus there is replaced whole; anything else is refused)",
    )
    p.add_argument("--text-column", default="text", help="the column holding each document's text")
    p.add_argument("--shard-tokens", type=whole_count, default=100_000_000, help="ids per shard, e.g. 100M")
    p.add_argument("--eval-fraction", type=float, default=0.005, help="share of documents held out")
    add_json_option(p, "what the prepared corpus holds")
    p.set_defaults(func=prepare_command)
    i = verbs.add_parser(
        "inspect", help="print a prepared corpus's manifest, split sizes and a decoded sample"
    )
    i.add_argument("corpus", help="a folder written by `powersweep data prepare`")
    i.add_argument(
        "--sample-tokens",
        type=whole_count,
        default=64,
        help="ids of the first train shard to decode, e.g. 64",
    )
    add_json_option(i, "the manifest, the split sizes and the decoded sample")
    i.set_defaults(func=inspect_command)


def prepare_command(args) -> int:
    from powersweep.proxy_models.prepared import prepare

    start = time.perf_counter()

    def progress(documents: int, tokens: int) -> None:
        rate = tokens / max(time.perf_counter() - start, 1e-9)
        print(
            f"\r  {documents:,} documents, {tokens:,} tokens ({rate:,.0f} tokens/s)", end="", file=sys.stderr
        )

    manifest = prepare(
        args.source,
        tokenizer=args.tokenizer,
        out=args.out,
        text_column=args.text_column,
        shard_tokens=args.shard_tokens,
        eval_fraction=args.eval_fraction,
        on_progress=progress,
    )
    print(file=sys.stderr)
    if args.json:
        print_json(corpus_summary(manifest, args.out))
    else:
        print(summary(manifest, args.out))
    return 0


def inspect_command(args) -> int:
    from powersweep.proxy_models.data import HFTokenizer
    from powersweep.proxy_models.prepared import read_manifest
    from powersweep.proxy_models.token_files import read_header

    manifest = read_manifest(args.corpus)
    if not args.json:
        print(summary(manifest, args.corpus))
    first = manifest["shards"]["train"][0]["name"]
    ids = read_header(f"{args.corpus}/{first}", vocab_size=manifest["vocab_size"]).ids()[: args.sample_tokens]
    text = HFTokenizer(f"{args.corpus}/tokenizer.json").decode(ids)
    if args.json:
        sample = {"shard": first, "ids": len(ids), "text": text}
        print_json({**corpus_summary(manifest, args.corpus), "sample": sample})
    else:
        print(f"sample ({len(ids)} ids of {first}): {text!r}")
    return 0


def corpus_summary(manifest: dict, where: str) -> dict:
    """What `summary` says, as `--json` prints it: the tokens of each split and the whole manifest."""
    shards = manifest["shards"]
    tokens = {split: sum(s["tokens"] for s in shards[split]) for split in ("train", "eval")}
    return {
        "corpus": where,
        "train_tokens": tokens["train"],
        "eval_tokens": tokens["eval"],
        "train_shards": len(shards["train"]),
        "eval_shards": len(shards["eval"]),
        "manifest": manifest,
    }


def summary(manifest: dict, where: str) -> str:
    """What a prepared corpus holds, a line per fact."""
    shards, source, tokenizer = manifest["shards"], manifest["source"], manifest["tokenizer"]
    counts = {split: sum(s["tokens"] for s in shards[split]) for split in ("train", "eval")}
    return "\n".join(
        [
            f"prepared corpus {where}",
            f"  source:     {source['path']} (column {source['text_column']!r}, "
            f"fingerprint {source['fingerprint']})",
            f"  tokenizer:  {tokenizer['name']} (sha256 {tokenizer['sha256']}), vocab "
            f"{manifest['vocab_size']:,}, ids as {manifest['dtype']}, "
            f"each document after {manifest['separator']!r}",
            f"  documents:  {manifest['documents']:,}, held out: {manifest['held_out']}",
            f"  train:      {counts['train']:,} tokens in {len(shards['train'])} shards",
            f"  held out:   {counts['eval']:,} tokens in {len(shards['eval'])} shards",
        ]
    )
