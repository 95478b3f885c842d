"""What submit refuses before it writes anything: data that cannot serve a run (token shards: `plan` too), a
CPU trial too large for the machine's memory, a store without room or a directory that takes no file,
resources no node has, a lock on a full disk. Each refusal is one line, exit code 2, and leaves the store as
it was (here: not created)."""

import errno
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from test_failures import ROOT, fill
from test_sweep import TINY

from powersweep.cli import main
from powersweep.sweeps.lock import SweepLock
from powersweep.sweeps.plan import plan
from powersweep.sweeps.preflight import host_bytes, sweep_bytes
from powersweep.sweeps.spec import spec_from_dict
from powersweep.sweeps.store import StoreError


def refused(tmp_path, capsys, spec: dict, storage=None) -> str:
    """Submit `spec` into `storage` (default: a new folder):
    exit code 2 and one stderr line, which it returns."""
    spec_file, storage = tmp_path / "spec.yaml", storage or tmp_path / "store"
    spec_file.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert main(["submit", str(spec_file), "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def with_data(tmp_path, source) -> dict:
    return {**TINY, "train": {**TINY["train"], "data": {"source": str(source), "eval_tokens": 1024}}}


@pytest.mark.parametrize("kind", ["empty file", "empty directory", "11 bytes"])
def test_data_that_cannot_serve_a_run_is_refused_before_anything_is_written(tmp_path, capsys, kind):
    source = tmp_path / "corpus"
    if kind == "empty directory":
        source.mkdir()
    else:
        source.write_text("" if kind == "empty file" else "hello world")
    line = refused(tmp_path, capsys, with_data(tmp_path, source))
    assert f"train.data.source='{source}'" in line
    assert ("holds no files" if kind == "empty directory" else "use a larger corpus") in line
    assert not (tmp_path / "store").exists()


def test_a_corpus_too_small_in_a_deep_folder_is_named_once_so_the_fix_fits(tmp_path, capsys):
    # a source path of 130 characters: named twice, the line would pass 300 characters and lose its fix
    deep = tmp_path / (
        "a-long-folder-name" + "-" * (130 - len(str(tmp_path)) - len("/a-long-folder-name/corpus"))
    )
    deep.mkdir(parents=True)
    (deep / "corpus").write_text("hello world")
    assert len(str(deep / "corpus")) == 130
    line = refused(tmp_path, capsys, with_data(tmp_path, deep / "corpus"))
    assert line.count(str(deep)) == 1 and f"train.data.source='{deep / 'corpus'}': the corpus has" in line
    assert line.endswith("use a larger corpus, or a shorter seq_len")


def test_a_cpu_trial_larger_than_the_machines_memory_is_refused(tmp_path, capsys):
    huge = {**TINY, "train": {**TINY["train"], "model_overrides": {"n_layers": 1, "d_model": 10_000_000}}}
    line = refused(tmp_path, capsys, huge)
    assert "of host memory per trial" in line and "this machine" in line and "model_overrides" in line
    assert not (tmp_path / "store").exists()


def test_the_estimates_grow_with_the_model_and_the_plan():
    small, wide = (
        plan(spec_from_dict(TINY)),
        plan(
            spec_from_dict(
                {**TINY, "train": {**TINY["train"], "model_overrides": {"n_layers": 1, "d_model": 1024}}}
            )
        ),
    )
    assert host_bytes(wide.trials[0]) > host_bytes(small.trials[0])
    assert sweep_bytes(wide) > sweep_bytes(small)
    more = plan(spec_from_dict({**TINY, "search": {**TINY["search"], "lr": [0.001, 0.002, 0.004, 0.016]}}))
    assert sweep_bytes(more) > sweep_bytes(small)


def test_a_store_without_room_for_the_sweep_is_refused(tmp_path, capsys, small_disk):
    disk = small_disk("256k")
    line = refused(tmp_path, capsys, TINY, storage=disk / "store")
    assert "free space there, or give another --storage" in line and "needs about" in line
    assert os.listdir(disk) == []


def test_a_directory_that_takes_no_file_is_refused_before_training(tmp_path, capsys):
    results = tmp_path / "store" / "results" / "sweep_id=tiny"
    results.mkdir(parents=True)
    if subprocess.run(["chattr", "+i", str(results)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        line = refused(tmp_path, capsys, TINY)
    finally:
        subprocess.run(["chattr", "-i", str(results)], check=True)
    assert f"{results}: cannot write" in line and "Operation not permitted" in line
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["results"]  # nothing else written


@pytest.mark.slow
@pytest.mark.parametrize("field, value", [("cpus_per_trial", 100), ("gpus_per_trial", 1)])
def test_resources_no_node_has_are_refused_before_anything_is_written(tmp_path, field, value):
    spec_file, storage = tmp_path / "spec.yaml", tmp_path / "store"
    spec_file.write_text(yaml.safe_dump({**TINY, "run": {field: value}}))
    done = subprocess.run(
        [sys.executable, "-m", "powersweep.cli", "submit", str(spec_file), "--storage", str(storage)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=300,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and f"run.{field}={value}" in lines[0], done.stderr
    assert not storage.exists()


def test_a_lock_on_a_full_disk_is_one_line_and_leaves_nothing(small_disk):
    disk = small_disk("64k")
    fill(disk)
    with pytest.raises(
        StoreError,
        match=r"cannot take the sweep's lock .*\[errno 28\] No space left on device: "
        "free space there or give another --storage",
    ):
        SweepLock(str(disk / "store"), "tiny").__enter__()
    assert sorted(os.listdir(disk)) == ["filler"]  # no sweep directory, no empty lock


def test_a_lock_write_that_fails_leaves_nothing(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)  # the same failure where no filesystem can be mounted
    with pytest.raises(StoreError, match="No space left on device"):
        SweepLock(str(tmp_path / "store"), "tiny").__enter__()
    assert not (tmp_path / "store").exists()


def shard_spec(tmp_path, val_tokens: int = 1500, **data) -> dict:
    """TINY on llm.c shards written here: three train shards of 2,000 GPT-2 ids and a val shard."""
    from llmc_shards import write_llmc_shard

    rng = np.random.default_rng(0)
    for i in range(3):
        write_llmc_shard(tmp_path / f"fineweb_train_{i:06d}.bin", rng.integers(0, 50_257, 2000))
    write_llmc_shard(tmp_path / "fineweb_val_000000.bin", rng.integers(0, 50_257, val_tokens))
    train = {
        **TINY["train"],
        "model_overrides": {"n_layers": 1, "vocab_size": 50_304},
        "data": {
            "source": str(tmp_path / "fineweb_train_*.bin"),
            "eval_source": str(tmp_path / "fineweb_val_*.bin"),
            "eval_tokens": 1024,
            **data,
        },
    }
    return {**TINY, "train": train}


def refused_by_plan_and_submit(tmp_path, capsys, spec: dict) -> str:
    """`plan` and `submit` of `spec` both refuse it in the same one line, exit code 2, writing nothing."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert main(["plan", str(spec_file)]) == 2
    planned = capsys.readouterr().err.strip().splitlines()
    submitted = refused(tmp_path, capsys, spec)
    assert len(planned) == 1 and planned[0].partition(" error: ")[2] == submitted.partition(" error: ")[2]
    assert not submitted.endswith("..."), submitted  # the whole message fits the line
    assert not (tmp_path / "store").exists()
    return submitted


def damaged_header(tmp_path) -> dict:
    spec = shard_spec(tmp_path)
    path = tmp_path / "fineweb_train_000001.bin"
    path.write_bytes(path.read_bytes()[:-100])
    return spec


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: shard_spec(t, source=str(t / "none.bin")), "none.bin': no such token file"),
        (lambda t: shard_spec(t, source=str(t / "fine_*.bin")), "the glob matches no file here"),
        (damaged_header, r"header says 2000 uint16 tokens \(4000 bytes\) and 3900 bytes follow"),
        (
            lambda t: shard_spec(t, eval_source=str(t / "fineweb_*_000000.bin")),
            "eval_source names 1 of the training shards .* the held-out split never overlaps training",
        ),
        (
            lambda t: {
                **shard_spec(t),
                "train": {**shard_spec(t)["train"], "model_overrides": {"n_layers": 1}},
            },
            "ids come from a vocabulary of 50,257 and model 'cpu-xs' has vocab_size 256",
        ),
        (
            lambda t: {**shard_spec(t), "search": {**TINY["search"], "tokens": [1024, 12_000]}},
            "the train split holds 6,000 tokens and the largest budget, 12,000, would read it 2.00 times",
        ),
        (lambda t: shard_spec(t, val_tokens=20), "has 20 eval tokens; seq_len=32 needs at least 33"),
    ],
    ids=["missing", "empty glob", "header", "overlap", "vocab", "passes", "eval windows"],
)
def test_token_shards_that_cannot_serve_the_sweep_are_refused_by_plan_and_submit(
    tmp_path, capsys, make, message
):
    line = refused_by_plan_and_submit(tmp_path, capsys, make(tmp_path))
    assert line.startswith("powersweep submit: error: train.data") and re.search(message, line), line


def test_shards_read_more_than_once_are_planned_and_run_when_the_spec_allows_repeats_with_a_note(
    tmp_path, capsys, local_ray
):
    from powersweep.sweeps.sweep import submit

    spec = shard_spec(tmp_path, repeat=True)
    spec["search"] = {**TINY["search"], "tokens": [1024, 12_000]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["plan", str(tmp_path / "spec.yaml")]) == 0
    note = "train.data: the largest budget (12,000 tokens) reads the train split's 6,000 tokens 2.00 times"
    assert f"note: {note}" in capsys.readouterr().out
    result = submit(spec_from_dict(spec), storage=str(tmp_path / "store"))
    assert result.failed_trials == 0 and [n for n in result.plan.notes if n.startswith(note)]
    spec["search"]["tokens"] = [1024, 6_000]  # one pass: nothing to say
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["plan", str(tmp_path / "spec.yaml"), "--json"]) == 0
    assert not [n for n in json.loads(capsys.readouterr().out)["notes"] if n.startswith("train.data")]


def test_the_embedded_corpus_read_more_than_once_is_a_note(tmp_path, capsys):
    # its train split, 11.5M tokens, read 2.17 times by a budget of 25M (planned, not run)
    spec = spec_from_dict({**TINY, "search": {**TINY["search"], "tokens": [25_000_000]}})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict()))
    assert main(["plan", str(tmp_path / "spec.yaml")]) == 0
    assert "tokens 2.17 times; the paper's runs read each token once" in capsys.readouterr().out


def test_vocab_size_auto_is_the_corpus_vocabulary_before_any_id_is_made(tmp_path, capsys):
    from powersweep.sweeps.data_check import check_data
    from powersweep.sweeps.spec import SpecError

    given = shard_spec(tmp_path)
    given["train"]["model_overrides"] = {"n_layers": 1, "vocab_size": "auto"}
    auto, fingerprint, _ = check_data(spec_from_dict(given))
    given["train"]["model_overrides"]["vocab_size"] = 50_257  # what the llm.c header's version implies
    explicit, same, _ = check_data(spec_from_dict(given))
    assert auto == explicit and fingerprint == same
    assert [j.run_ids for j in plan(auto).jobs] == [j.run_ids for j in plan(explicit).jobs]
    assert {j.config.proxy.vocab_size for j in plan(auto).jobs} == {50_257}
    with pytest.raises(SpecError, match="vocab_size is 'auto': set it from the corpus first"):
        given["train"]["model_overrides"]["vocab_size"] = "auto"
        plan(spec_from_dict(given))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(given))
    assert main(["plan", str(tmp_path / "spec.yaml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == plan(explicit).summary()["runs"]


def test_rows_record_their_data_and_resume_refuses_rows_of_other_data(tmp_path, capsys, local_ray):
    """A sweep on shards stores each row's data_fingerprint and held-out split; shards rewritten with other
    tokens under the same names make `submit` refuse to resume (one line, exit 2, the store untouched), and
    `--replace` starts the sweep afresh on them."""
    from llmc_shards import write_llmc_shard

    from powersweep.sweeps.store import ResultStore

    spec_file, storage = tmp_path / "spec.yaml", str(tmp_path / "store")
    spec_file.write_text(yaml.safe_dump(shard_spec(tmp_path)))
    assert main(["submit", str(spec_file), "--storage", storage]) == 0
    rows = ResultStore(storage).read(sweep_id="tiny").table
    assert len(rows) and rows["data_fingerprint"].nunique() == 1 and len(rows["data_fingerprint"][0]) == 16
    assert set(rows["data_held_out"]) == {f"eval_source '{tmp_path / 'fineweb_val_*.bin'}'"}

    write_llmc_shard(tmp_path / "fineweb_train_000001.bin", np.arange(2000) % 50_257)  # re-sharded
    files = sorted(p.relative_to(storage) for p in (tmp_path / "store").rglob("*") if p.is_file())
    capsys.readouterr()
    assert main(["submit", str(spec_file), "--storage", storage]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert f"holds {len(rows)} rows trained on other data" in line and "--replace" in line, line
    assert sorted(p.relative_to(storage) for p in (tmp_path / "store").rglob("*") if p.is_file()) == files

    assert main(["submit", str(spec_file), "--storage", storage, "--replace"]) == 0
    again = ResultStore(storage).read(sweep_id="tiny").table
    assert len(again) == len(rows) and again["data_fingerprint"].nunique() == 1
    assert again["data_fingerprint"][0] != rows["data_fingerprint"][0]
