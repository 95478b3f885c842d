import json
import time

import numpy as np
import pytest
import torch

from powersweep.proxy_models.data import (
    MIN_TRAIN_WINDOWS,
    ByteTokenizer,
    DataConfig,
    DataError,
    TokenCorpus,
    embedded_files,
    eval_batches,
    load_corpus,
    stdlib_root,
    train_batch,
    write_token_file,
)
from powersweep.proxy_models.shapes import ConfigError

SENTENCES = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog met on the mat",
    "learning rates follow a power law in tokens and batch size",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A private cache directory for this module's embedded-corpus loads."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POWERSWEEP_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def embedded(cache_dir):
    return load_corpus(DataConfig())


def counting_corpus(n_train: int = 10_000, n_eval: int = 2_000) -> TokenCorpus:
    """Token i is the id i, so a window's first id is its offset and y must equal x + 1."""
    ids = np.arange(n_train + n_eval, dtype=np.uint32)
    return TokenCorpus(ids[:n_train], ids[n_train:], n_train + n_eval, "counting", "test")


def read_stdlib(names: list[str]) -> bytes:
    return b"".join((stdlib_root() / name).read_bytes() for name in names)


def test_embedded_corpus_is_built_identically_and_is_sizable(embedded, tmp_path, monkeypatch):
    monkeypatch.setenv("POWERSWEEP_CACHE", str(tmp_path))  # a second, independent build
    rebuilt = load_corpus(DataConfig())
    assert rebuilt.fingerprint == embedded.fingerprint
    assert np.array_equal(rebuilt.train, embedded.train) and np.array_equal(rebuilt.eval, embedded.eval)
    assert embedded.vocab_size == 256 and embedded.train.dtype == np.uint8
    assert len(embedded.train) > 2_000_000 and len(embedded.eval) > 50_000


def test_embedded_split_is_by_whole_file(embedded):
    train_files, eval_files = embedded_files()
    assert not set(train_files) & set(eval_files)
    assert train_files == sorted(train_files) and eval_files == sorted(eval_files)
    assert not any(part in {"site-packages", "test", "tests"} for f in train_files for part in f.split("/"))
    assert embedded.train.tobytes() == read_stdlib(train_files)
    assert embedded.eval.tobytes() == read_stdlib(eval_files)
    train_text = embedded.train.tobytes()
    substantial = [f for f in eval_files if len(read_stdlib([f])) >= 1000]  # a few tiny stubs recur verbatim
    assert len(substantial) > 10 and not [f for f in substantial if read_stdlib([f]) in train_text]
    assert 0.03 < len(embedded.eval) / (len(embedded.train) + len(embedded.eval)) <= 0.05


def test_embedded_cache_hit_is_fast_and_identical(embedded, cache_dir):
    start = time.perf_counter()
    again = load_corpus(DataConfig())
    assert time.perf_counter() - start < 0.5
    assert again.fingerprint == embedded.fingerprint and np.array_equal(again.train, embedded.train)
    (sidecar,) = cache_dir.glob("embedded-*.json")
    meta = json.loads(sidecar.read_text())
    assert meta["train_tokens"] == len(embedded.train) and meta["eval_files"] == embedded_files()[1]


def test_damaged_cache_is_rebuilt(embedded, cache_dir):
    (train_file,) = cache_dir.glob("embedded-*.train.npy")
    np.save(train_file, np.zeros(10, dtype=np.uint8))
    again = load_corpus(DataConfig())
    assert again.fingerprint == embedded.fingerprint and np.array_equal(again.train, embedded.train)


def test_embedded_max_bytes_keeps_a_sorted_prefix(cache_dir):
    corpus = load_corpus(DataConfig(max_bytes=300_000))
    train_files, eval_files = embedded_files(DataConfig(max_bytes=300_000))
    every = sorted(train_files + eval_files)
    assert every == sorted(embedded_files()[0] + embedded_files()[1])[: len(every)]
    assert len(corpus.train) + len(corpus.eval) <= 300_000
    with pytest.raises(DataError, match="max_bytes=10 keeps 0 of"):
        load_corpus(DataConfig(max_bytes=10))


def test_byte_tokenizer_round_trips_unicode():
    text = "héllo wörld ✓ 🚀\n\ttabs"
    ids = ByteTokenizer().encode(text)
    assert ids.dtype == np.uint8 and len(ids) == len(text.encode("utf-8"))
    assert ByteTokenizer().decode(ids) == text


@pytest.fixture
def hf_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(SENTENCES, tokenizers.trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    return tokenizer, str(path)


def test_text_through_a_tokenizer_json(hf_tokenizer, tmp_path):
    tokenizer, path = hf_tokenizer
    text = "\n".join(SENTENCES * 50)
    (tmp_path / "corpus.txt").write_text(text)
    corpus = load_corpus(DataConfig(source=str(tmp_path / "corpus.txt"), tokenizer=path))
    assert corpus.vocab_size == tokenizer.get_vocab_size()
    assert np.concatenate([corpus.train, corpus.eval]).tolist() == tokenizer.encode(text).ids
    assert corpus.name.endswith("via tokenizer.json")


def test_embedded_corpus_through_a_tokenizer_json_is_cached_apart(hf_tokenizer, cache_dir):
    tokenizer, path = hf_tokenizer
    config = DataConfig(tokenizer=path, max_bytes=200_000)
    first, second = load_corpus(config), load_corpus(config)
    assert first.vocab_size == tokenizer.get_vocab_size() != 256
    assert first.fingerprint == second.fingerprint != load_corpus(DataConfig(max_bytes=200_000)).fingerprint
    assert np.array_equal(first.train, second.train)


def test_missing_tokenizer_names_the_path(tmp_path):
    with pytest.raises(DataError, match="nope.json"):
        load_corpus(DataConfig(tokenizer=str(tmp_path / "nope.json")))


def write_files(root, count: int, suffix: str = ".txt") -> dict[str, str]:
    texts = {f"doc{i:02d}{suffix}": f"<document {i}> " + "lorem ipsum " * (20 + i) for i in range(count)}
    for name, text in texts.items():
        (root / name).write_text(text)
    return texts


def test_text_directory_is_split_by_file(tmp_path):
    texts = write_files(tmp_path, 20)
    (tmp_path / ".hidden").write_text("never read")
    corpus = load_corpus(DataConfig(source=str(tmp_path), eval_fraction=0.2))
    train, held_out = corpus.train.tobytes().decode(), corpus.eval.tobytes().decode()
    in_eval = [name for name, text in texts.items() if text in held_out]
    assert 1 <= len(in_eval) < len(texts)
    assert held_out == "".join(texts[name] for name in in_eval)
    assert train == "".join(text for name, text in texts.items() if name not in in_eval)


def test_single_text_file_holds_out_its_tail(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("x" * 900 + "y" * 100)
    corpus = load_corpus(DataConfig(source=str(path), eval_fraction=0.1))
    assert corpus.eval.tobytes() == b"y" * 100 and corpus.train.tobytes() == b"x" * 900


def test_glob_source_reads_only_matching_files(tmp_path):
    (tmp_path / "sub").mkdir()
    texts = {**write_files(tmp_path, 3), **write_files(tmp_path / "sub", 3, ".text.txt")}
    write_files(tmp_path, 2, ".md")
    corpus = load_corpus(DataConfig(source=str(tmp_path / "**" / "*.txt")))
    assert len(corpus.train) + len(corpus.eval) == sum(len(text) for text in texts.values())


def test_non_utf8_text_names_the_file(tmp_path):
    write_files(tmp_path, 2)
    (tmp_path / "image.png").write_bytes(b"\x89PNG\xff\xfe")
    with pytest.raises(DataError, match="image.png.*not utf-8"):
        load_corpus(DataConfig(source=str(tmp_path)))


@pytest.mark.parametrize("vocab_size, dtype", [(1000, np.uint16), (70_000, np.uint32)])
def test_token_file_round_trip(tmp_path, vocab_size, dtype):
    tokens = np.random.default_rng(0).integers(0, vocab_size, size=5_000)
    path = tmp_path / "tokens.bin"
    write_token_file(path, tokens, vocab_size=vocab_size)
    assert json.loads((tmp_path / "tokens.bin.json").read_text()) == {
        "dtype": dtype.__name__,
        "vocab_size": vocab_size,
    }
    corpus = load_corpus(DataConfig(source=str(path)))
    assert corpus.train.dtype == dtype and corpus.vocab_size == vocab_size
    assert len(corpus.eval) == 250 and np.array_equal(np.concatenate([corpus.train, corpus.eval]), tokens)


def test_token_file_sidecar_with_wrong_dtype_is_rejected(tmp_path):
    path = tmp_path / "tokens.bin"
    write_token_file(path, np.arange(100), vocab_size=100)
    (tmp_path / "tokens.bin.json").write_text(json.dumps({"dtype": "int8", "vocab_size": 100}))
    with pytest.raises(DataError, match=r"dtype='int8' is not supported; use one of \['uint16', 'uint32'\]"):
        load_corpus(DataConfig(source=str(path)))


def test_token_file_with_ids_beyond_its_vocab_is_rejected(tmp_path):
    path = tmp_path / "tokens.bin"
    write_token_file(path, np.arange(100), vocab_size=100)
    (tmp_path / "tokens.bin.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": 50}))
    with pytest.raises(DataError, match=r"token id 9\d, outside \[0, vocab_size=50\)"):
        load_corpus(DataConfig(source=str(path)))
    with pytest.raises(DataError, match=r"token id 100, outside \[0, vocab_size=100\)"):
        write_token_file(path, np.arange(101), vocab_size=100)


def test_token_file_without_sidecar_or_with_truncated_data(tmp_path):
    path = tmp_path / "tokens.bin"
    path.write_bytes(b"\x00" * 7)
    with pytest.raises(DataError, match="no sidecar .*tokens.bin.json"):
        load_corpus(DataConfig(source=str(path)))
    (tmp_path / "tokens.bin.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": 50}))
    with pytest.raises(DataError, match="has 7 bytes, not a positive multiple of 2"):
        load_corpus(DataConfig(source=str(path)))


def test_train_batch_is_a_pure_function_of_seed_and_step(embedded):
    def batch(step, seed=0):
        return train_batch(embedded, step=step, batch_size=8, seq_len=64, seed=seed)

    later_first = [batch(5), batch(2)]
    earlier_first = [batch(2), batch(5)]
    for a, b in zip(later_first, reversed(earlier_first)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(batch(2)[0], batch(3)[0]) and not torch.equal(batch(2)[0], batch(2, seed=1)[0])
    x, y = batch(7)
    assert x.shape == y.shape == (8, 64) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and int(x.max()) < embedded.vocab_size


def test_train_batch_draws_documented_windows():
    corpus = counting_corpus()
    x, y = train_batch(corpus, step=3, batch_size=16, seq_len=32, seed=7)
    offsets = np.random.default_rng([7, 3]).integers(0, len(corpus.train) - 32, size=16)
    assert x[:, 0].tolist() == offsets.tolist()
    assert torch.equal(x, torch.from_numpy(offsets)[:, None] + torch.arange(32)) and torch.equal(y, x + 1)
    assert int(y.max()) < len(corpus.train)  # windows never reach into the eval split


def test_eval_batches_are_fixed_disjoint_and_independent_of_batch_size():
    corpus = counting_corpus()
    batches = eval_batches(corpus, seq_len=64, batch_size=4, eval_tokens=640)
    x = torch.cat([bx for bx, _ in batches])
    assert len(x) == 10 and [len(bx) for bx, _ in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([by for _, by in batches]), x + 1)
    starts = x[:, 0]
    assert bool((starts.diff() >= 64).all()) and int(x.max()) + 1 < 12_000  # disjoint, inside the eval split
    again = eval_batches(corpus, seq_len=64, batch_size=16, eval_tokens=640)
    assert torch.equal(torch.cat([bx for bx, _ in again]), x)


def test_eval_windows_are_contiguous_when_the_split_holds_just_eval_tokens():
    corpus = counting_corpus(n_eval=641)
    ((x, _),) = eval_batches(corpus, seq_len=64, batch_size=16, eval_tokens=640)
    assert x[:, 0].tolist() == [10_000 + 64 * i for i in range(10)]


def test_too_small_corpus_says_what_was_needed_and_found(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("a" * 855)  # 812 train tokens, 43 eval tokens
    corpus = load_corpus(DataConfig(source=str(path)))
    need = MIN_TRAIN_WINDOWS * 257
    with pytest.raises(DataError, match=f"has 812 train tokens; seq_len=256 needs at least {need} "):
        train_batch(corpus, step=0, batch_size=4, seq_len=256, seed=0)
    with pytest.raises(DataError, match="has 43 eval tokens; seq_len=256 needs at least 257 "):
        eval_batches(corpus, seq_len=256, batch_size=4)


def test_empty_and_missing_sources_name_the_path(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty.txt' has 0 train and 0 eval tokens"):
        load_corpus(DataConfig(source=str(tmp_path / "empty.txt")))
    for name in ("missing.txt", "missing.bin"):
        with pytest.raises(DataError, match=name):
            load_corpus(DataConfig(source=str(tmp_path / name)))
    with pytest.raises(DataError, match="holds no files"):
        load_corpus(DataConfig(source=str(tmp_path / "*.none")))


def test_corpus_rejects_ids_beyond_its_vocab():
    with pytest.raises(DataError, match=r"eval split of corpus 'bad' holds token id 300"):
        TokenCorpus(np.arange(10, dtype=np.uint16), np.array([300], dtype=np.uint16), 256, "bad", "x")


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"eval_fraction": 0.0}, "eval_fraction=0.0"),
        ({"eval_fraction": 1.5}, "eval_fraction=1.5"),
        ({"eval_tokens": 0}, "eval_tokens=0"),
        ({"max_bytes": -1}, "max_bytes=-1"),
        ({"source": ""}, "source=''"),
    ],
)
def test_invalid_data_config_names_field_and_value(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        DataConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [{"step": -1}, {"seed": -2}, {"batch_size": 0}, {"seq_len": 0}])
def test_train_batch_rejects_bad_arguments(kwargs):
    arguments = {"step": 0, "batch_size": 2, "seq_len": 8, "seed": 0, **kwargs}
    ((name, value),) = kwargs.items()
    with pytest.raises(DataError, match=f"{name}={value}"):
        train_batch(counting_corpus(), **arguments)
