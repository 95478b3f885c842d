"""The tiny sweep spec the sweep tests share: 2 lineages of a 1-layer cpu-xs, 2 budgets, seconds on a CPU.
Importable from any test folder (tests/ is on the path, as for llmc_shards.py)."""

TINY = {
    "name": "tiny",
    "search": {"models": ["cpu-xs"], "batch_size": [4], "lr": [0.004, 0.016], "tokens": [1024, 2048]},
    "train": {
        "warmup_tokens": 128,
        "seq_len": 32,
        "model_overrides": {"n_layers": 1},
        "data": {"eval_tokens": 1024},
    },
}
