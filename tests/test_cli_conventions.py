"""The command line follows Ray's and Optuna's conventions: `--version`, the cluster address from RAY_ADDRESS,
sizes such as 16M, `--json` for one JSON document on stdout, and shell completion (powersweep/cli/options.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from tiny_sweep import TINY

from powersweep.cli import build_parser, cluster_commands, main
from powersweep.cli.sweep_commands import SPECS_DIR

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("powersweep")  # the console script the install wrote
JOBS = "http://10.0.0.1:8265"


@pytest.fixture
def no_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


@pytest.fixture
def jobs_api(monkeypatch):
    """The Jobs API client calls, recorded instead of sent: (call, job id, address)."""
    calls = []

    def record(name, answer):
        def call(job_id, *, address, **_):
            calls.append((name, job_id, address))
            return answer

        return call

    info = {"job_id": "j1", "status": "RUNNING", "message": "", "metadata": {"sweep_id": "tiny"}}
    monkeypatch.setattr(cluster_commands, "job_status", record("status", info))
    monkeypatch.setattr(cluster_commands, "job_logs", record("logs", "line\n"))
    monkeypatch.setattr(cluster_commands, "stop_job", record("stop", True))

    def submit_job(spec, *, address, **_):
        calls.append(("submit", spec.name, address))
        return "powersweep-cpu-quick-1"

    monkeypatch.setattr(cluster_commands, "submit_job", submit_job)
    return calls


def test_version_prints_the_installed_version():
    done = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout == f"powersweep {version('powersweep')}\n" and done.stderr == ""


@pytest.mark.parametrize("command", ["logs", "stop"])
def test_logs_and_stop_without_an_address_say_how_to_give_one(command, no_ray_address, jobs_api, capsys):
    assert main([command, "j1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--address" in err and "RAY_ADDRESS" in err
    assert jobs_api == []


@pytest.mark.parametrize("command", ["logs", "stop"])
def test_logs_and_stop_take_ray_address_and_address_wins(command, monkeypatch, jobs_api, capsys):
    monkeypatch.setenv("RAY_ADDRESS", JOBS)
    assert main([command, "j1"]) == 0
    assert main([command, "j1", "--address", "http://other:8265"]) == 0
    assert [call[2] for call in jobs_api] == [JOBS, "http://other:8265"]


def test_status_asks_the_jobs_api_of_ray_address_about_a_job_but_reads_a_store(
    tmp_path, monkeypatch, jobs_api, capsys
):
    monkeypatch.setenv("RAY_ADDRESS", JOBS)
    assert main(["status", "j1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "RUNNING"
    assert (
        main(["status", str(tmp_path)]) == 2
    )  # an existing directory is a store, wherever RAY_ADDRESS points
    assert "holds no sweep" in capsys.readouterr().err
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # a driver's address: no Jobs API to ask
    assert main(["status", "j1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["status", "j1", "--address", "http://other:8265"]) == 0
    assert jobs_api == [("status", "j1", JOBS), ("status", "j1", "http://other:8265")]


def test_submit_submits_a_job_to_ray_address_and_prints_it_as_json(monkeypatch, jobs_api, capsys):
    monkeypatch.setenv("RAY_ADDRESS", JOBS)
    spec = os.path.join(SPECS_DIR, "cpu-quick.yaml")
    assert main(["submit", spec, "--storage", "s3://bucket/runs", "--json"]) == 0
    assert jobs_api == [("submit", "cpu-quick", JOBS)]
    out, err = capsys.readouterr()
    assert json.loads(out) == {"job_id": "powersweep-cpu-quick-1", "address": JOBS}
    assert f"--address {JOBS}" in err  # how to follow it, on stderr


@pytest.mark.parametrize(
    ("env", "argv", "address"),
    [
        (None, [], None),  # neither: Ray starts in this process
        ("ray://head:10001", [], "ray://head:10001"),
        ("ray://head:10001", ["--address", "other:6379"], "other:6379"),
    ],
)
def test_submit_runs_the_driver_here_on_ray_address(tmp_path, monkeypatch, capsys, env, argv, address):
    from powersweep.sweeps import spec as spec_module
    from powersweep.sweeps import sweep

    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    seen = []

    def submit(spec, *, address, **_):
        seen.append(address)
        raise spec_module.SpecError("stopped before the sweep")

    monkeypatch.setattr(sweep, "submit", submit)
    spec = os.path.join(SPECS_DIR, "cpu-quick.yaml")
    assert main(["submit", spec, "--storage", str(tmp_path), *argv]) == 2
    assert seen == [address]


def test_token_counts_take_sizes_and_name_the_option_when_wrong(capsys):
    cases = [
        (["train-one", "--tokens", "2M", "--warmup-tokens", "500K"], {"tokens": 2e6, "warmup_tokens": 5e5}),
        (
            ["predict", "--coefficients", "c.json", "--tokens", "16M", "--n-params", "50M"],
            {"tokens": 16e6, "n_params": 50e6},
        ),
        (["predict", "--coefficients", "c.json", "--tokens", "2B"], {"tokens": 2e9, "n_params": None}),
        (["data", "inspect", "corpus", "--sample-tokens", "1K"], {"sample_tokens": 1000}),
        (["data", "prepare", "x", "--tokenizer", "t", "--out", "o", "--shard-tokens", "100M"], {}),
    ]
    for argv, wanted in cases:
        args = build_parser(argv).parse_args(argv)
        assert {key: getattr(args, key) for key in wanted} == wanted, argv
    for argv, option in (
        (["train-one", "--tokens", "2Q"], "--tokens"),
        (["predict", "--coefficients", "c.json", "--tokens", "lots"], "--tokens"),
        (["predict", "--coefficients", "c.json", "--tokens", "1B", "--n-params", "big"], "--n-params"),
        (["data", "inspect", "corpus", "--sample-tokens", "1.5"], "--sample-tokens"),
    ):
        with pytest.raises(SystemExit) as done:
            build_parser(argv).parse_args(argv)
        assert done.value.code == 2
        assert f"error: argument {option}: " in capsys.readouterr().err.splitlines()[-1]


def test_presets_json_holds_every_preset_with_its_counts(capsys):
    from powersweep.proxy_models.shapes import PRESETS

    assert main(["presets", "--json"]) == 0
    presets = {p["preset"]: p for p in json.loads(capsys.readouterr().out)}
    assert list(presets) == list(PRESETS)
    assert presets["cpu-xs"]["params"] == PRESETS["cpu-xs"].num_params() and presets["cpu-xs"]["d_model"] > 0


@pytest.mark.slow
def test_submit_and_resume_json_report_the_sweep(tmp_path, local_ray, no_ray_address, capsys):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    storage = str(tmp_path / "store")
    assert main(["submit", str(spec), "--storage", storage, "--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["lineages_run"] == 2 and report["failed_trials"] == 0 and report["storage"] == storage
    assert report["plan"]["runs"] == 4 and report["execution"]["rows_stored"] == 4
    assert "tokens planned:" in err  # the plan stays on stderr
    assert main(["resume", storage, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["lineages_run"] == 0 and again["execution"] is None
    assert main(["compact", storage, "--json"]) == 0
    [compacted] = json.loads(capsys.readouterr().out)
    assert compacted["sweep"] == "tiny" and compacted["rows"] == 8 and len(compacted["result_files"]) == 2


def test_demo_json_holds_the_sweep_and_the_analysis(tmp_path, monkeypatch, capsys):
    # The main job's own test runs its sweep: here its store gets a planted table, so the analysis is real.
    from powersweep.analysis.synthetic import PlantedLaw, SweepGrid, synthetic_table
    from powersweep.sweeps import sweep
    from powersweep.sweeps.plan import plan

    def submit(spec, *, storage, checkpoints=None):
        grid = SweepGrid(models=(("36M", 36e6),), tokens=(2e9, 8e9, 32e9), batch_sizes=(32, 64, 128))
        os.makedirs(f"{storage}/results")
        synthetic_table(PlantedLaw(), grid, seed=1).to_csv(f"{storage}/results/rows.csv", index=False)
        return sweep.SubmitResult(
            plan(spec), lineages_run=0, failed_trials=0, storage=storage, execution=None
        )

    monkeypatch.setattr(sweep, "submit", submit)
    runs, out = tmp_path / "runs", tmp_path / "out"
    assert main(["demo", "--storage", str(runs), "--out", str(out), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["sweep"]["storage"] == str(runs) and document["sweep"]["plan"]["sweep_id"] == "cpu-quick"
    analysis = document["analysis"]
    assert analysis["coefficients"] == str(out / "coefficients.json") and (out / "coefficients.json").exists()
    [pooled] = analysis["fits"]
    assert pooled["a_ci"][0] < pooled["a"] < pooled["a_ci"][1] and -0.6 < pooled["b"] < -0.4


def test_data_prepare_and_inspect_json(tmp_path, capsys):
    from bpe import train_bpe

    documents = [
        f"document {i}: " + "the quick brown fox jumps over the lazy dog " * (i % 5 + 1) for i in range(60)
    ]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    tokenizer = train_bpe(documents, vocab_size=300, path=tmp_path / "tokenizer.json")
    out = str(tmp_path / "prepared")
    argv = ["data", "prepare", str(tmp_path / "corpus.jsonl"), "--tokenizer", tokenizer, "--out", out]
    argv += ["--eval-fraction", "0.1", "--json"]
    assert main(argv) == 0
    prepared = json.loads(capsys.readouterr().out)
    assert prepared["manifest"]["documents"] == 60 and prepared["train_tokens"] > 0
    assert main(["data", "inspect", out, "--sample-tokens", "1K", "--json"]) == 0
    inspected = json.loads(capsys.readouterr().out)
    assert {k: inspected[k] for k in prepared} == prepared
    first = prepared["manifest"]["shards"]["train"][0]
    assert inspected["sample"] == {
        "shard": first["name"],
        "ids": min(1000, first["tokens"]),
        "text": inspected["sample"]["text"],
    }
    assert inspected["sample"]["text"].startswith("<|endoftext|>" + documents[0][:20])


def test_completion_answers_with_the_subcommands_and_the_deferred_options(tmp_path):
    answers = tmp_path / "completions"

    def complete(line: str) -> list[str]:
        env = {
            **os.environ,
            "_ARGCOMPLETE": "1",
            "_ARGCOMPLETE_IFS": "\n",
            "COMP_LINE": line,
            "COMP_POINT": str(len(line)),
            "_ARGCOMPLETE_STDOUT_FILENAME": str(answers),  # else argcomplete writes to file descriptor 8
        }
        subprocess.run([str(SCRIPT)], env=env, cwd=ROOT, check=True, capture_output=True, timeout=120)
        return [word.strip() for word in answers.read_text().split("\n")]

    assert complete("powersweep su") == ["submit"]
    assert {"plan", "presets", "predict", "analyze", "data"} <= set(complete("powersweep "))
    assert complete("powersweep predict --tok") == ["--tokens"]  # a deferred parser, built for completion


def test_argcomplete_is_imported_only_to_complete():
    code = (
        "import sys\nfrom powersweep.cli import main\nmain(['presets'])\nprint('argcomplete' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines()[-1] == "False"
