"""A byte-level BPE tokenizer trained by the tests themselves (tokenizers' own trainer), so that nothing is
downloaded. A benchmark imports it after ``sys.path.insert(0, "<repository>/tests")``."""

from __future__ import annotations

from collections.abc import Iterable


def train_bpe(texts: Iterable[str], *, vocab_size: int, path: str) -> str:
    """Train a byte-level BPE of `vocab_size` ids, with GPT-2's document separator `<|endoftext|>`, on
    `texts`; save its tokenizer.json at `path` and return the path."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    bpe.save(str(path))
    return str(path)
