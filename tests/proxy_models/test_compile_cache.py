import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from powersweep.proxy_models.compile_cache import (
    compile_cache_dir,
    resolve_compile,
    resolve_compile_mode,
    use_compile_cache,
)
from powersweep.proxy_models.perf import layer_seconds, table_peak_flops
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.shapes import PRESETS, ConfigError
from powersweep.proxy_models.train_config import DataConfig
from powersweep.proxy_models.trainer import TrainConfig, Trainer

TINY = dict(model="cpu-xxs", model_overrides={"seq_len": 64}, batch_size=2, tokens=2 * 64 * 3)

# A fresh process: train TINY (argv[1]) compiled for 3 steps; print its losses, whether it compiled and
# inductor's cache counters.
CHILD = """
import json, sys
from torch._dynamo.utils import counters
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.trainer import TrainConfig, Trainer
trainer = Trainer(TrainConfig(**json.loads(sys.argv[1]), schedule=ScheduleConfig(name="constant", lr=1e-3),
                              compile=True))
trainer.train_to(3, total_tokens=None)
print(json.dumps({"losses": trainer.recent_losses, "compiled": trainer.compiled,
                  "compile_error": trainer.compile_error, "inductor": dict(counters["inductor"]),
                  "aot_autograd": dict(counters["aot_autograd"])}))
"""


def test_auto_compiles_dense_models_on_cuda_only_and_a_boolean_is_kept():
    assert resolve_compile("auto", torch.device("cuda")) and not resolve_compile("auto", torch.device("cpu"))
    assert not resolve_compile("auto", torch.device("cuda"), moe=True)
    assert resolve_compile(True, torch.device("cpu"), moe=True) and not resolve_compile(
        False, torch.device("cuda")
    )


def test_auto_mode_replays_a_solo_dense_trunk_as_cuda_graphs_on_cuda_only():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_compile_mode("auto", "auto", cuda) == "reduce-overhead"
    assert resolve_compile_mode("auto", "trunk", cuda) == "reduce-overhead"
    # graphs cannot chain one block's replays
    assert resolve_compile_mode("auto", "blocks", cuda) == "default"
    assert resolve_compile_mode("auto", "auto", cuda, packed=True) == "default"  # large kernels: no host wait
    assert resolve_compile_mode("auto", "auto", cuda, moe=True) == "default"  # expert sizes read on the host
    assert resolve_compile_mode("auto", "auto", cpu) == "default"
    for mode in ("default", "reduce-overhead", "max-autotune"):  # a mode asked for is kept
        assert resolve_compile_mode(mode, "auto", cpu, packed=True) == mode
        assert resolve_compile_mode(mode, "auto", cuda, layer_seconds=1.0) == mode


@pytest.mark.parametrize(
    ("preset", "micro_batch_size", "graphs"),
    [
        ("paper-12m", 16, True),  # 1.5-1.6x faster as CUDA graphs on one H100 (benchmarks/RESULTS.md)
        ("paper-12m", 64, False),  # the largest Table 2 batch's micro-batch: no faster there
        ("paper-36m", 16, False),  # no faster
        ("paper-121m", 16, False),  # no faster, and 0.55 GiB more
    ],
)
def test_auto_mode_uses_cuda_graphs_only_where_a_layer_waits_on_the_host(preset, micro_batch_size, graphs):
    proxy, h100_bf16 = PRESETS[preset], table_peak_flops("NVIDIA H100 80GB HBM3")
    seconds = layer_seconds(proxy, micro_batch_size * proxy.seq_len, h100_bf16)
    mode = resolve_compile_mode("auto", "auto", torch.device("cuda"), layer_seconds=seconds)
    assert mode == ("reduce-overhead" if graphs else "default")


def test_layer_seconds_is_a_layers_share_of_the_step_flops_at_peak():
    proxy = PRESETS["paper-12m"]
    # paper-12m at seq 4096 costs about 275 MFLOP per token, 6N plus attention; the layers are all but the
    # (tied) embedding's 6 FLOPs per parameter.
    layers_per_token = layer_seconds(proxy, 1, 1.0) * proxy.n_layers
    embedding = proxy.num_params() - proxy.num_params(embedding=False)
    assert layers_per_token + 6 * embedding == pytest.approx(275e6, rel=0.01)
    assert layer_seconds(proxy, 4096, 2.0) == pytest.approx(4096 * layer_seconds(proxy, 1, 1.0) / 2)


@pytest.mark.parametrize("value", [1, 0, "yes", "true", None])
def test_compile_is_auto_or_a_boolean(value):
    with pytest.raises(ConfigError, match=r"^compile=.*choose 'auto'"):
        TrainConfig(compile=value)


def test_cache_dir_is_ours_then_torchs_then_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("POWERSWEEP_COMPILE_CACHE", str(tmp_path / "ours"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "torch"))
    assert compile_cache_dir() == str(tmp_path / "ours")
    monkeypatch.delenv("POWERSWEEP_COMPILE_CACHE")
    assert compile_cache_dir() == str(tmp_path / "torch")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache_dir() == str(tmp_path / "xdg" / "powersweep" / "compile")


def test_compiling_sets_inductors_cache_dir_and_survives_one_that_cannot_be_made(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "before"))
    monkeypatch.setenv("POWERSWEEP_COMPILE_CACHE", str(tmp_path / "cache"))
    assert use_compile_cache() == str(tmp_path / "cache") == os.environ["TORCHINDUCTOR_CACHE_DIR"]
    assert (tmp_path / "cache").is_dir()
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("POWERSWEEP_COMPILE_CACHE", str(tmp_path / "file" / "cache"))  # under a file: no dir
    assert use_compile_cache() is None
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache")  # left as it was


def test_a_cpu_run_is_eager_by_default_and_its_row_says_so(corpus):
    trainer = Trainer(TrainConfig(**TINY, data=DataConfig(eval_tokens=256)), corpus=corpus)
    assert trainer.cfg.compile == "auto" and not trainer.compiled
    assert json.loads(trainer.run().execution)["compiled"] is False


def _child(cache: str, script: str = CHILD, **env_vars: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(TINY)],
        capture_output=True,
        text=True,
        env={**env, "POWERSWEEP_COMPILE_CACHE": cache, **env_vars},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
def test_a_second_process_loads_the_compiled_code_from_disk_and_trains_the_same(tmp_path):
    first, second = _child(str(tmp_path / "cache")), _child(str(tmp_path / "cache"))
    assert first["compiled"] and second["compiled"]
    assert first["inductor"].get("fxgraph_cache_miss", 0) >= 2  # forward and backward graphs compiled...
    assert first["inductor"].get("fxgraph_cache_hit", 0) == 0
    # ...and loaded, not compiled, the second time
    assert second["inductor"].get("fxgraph_cache_miss", 0) == 0
    assert second["inductor"]["fxgraph_cache_hit"] == first["inductor"]["fxgraph_cache_miss"]
    assert second["aot_autograd"].get("autograd_cache_hit", 0) >= 1
    assert second["losses"] == first["losses"] and len(first["losses"]) == 3


def traced_trunk(traced, preset: str, n_layers: int) -> tuple[list[str], set[str]]:
    """`traced` (conftest.py) of a ProxyLM's trunk."""
    from powersweep.proxy_models.model import ProxyLM
    from powersweep.proxy_models.shapes import get_preset

    model = ProxyLM(get_preset(preset, n_layers=n_layers, seq_len=16))
    return traced(
        model.trunk, torch.randn(2, 16, model.cfg.d_model), model.rope_cos[:16], model.rope_sin[:16]
    )


def test_a_compiled_dense_trunk_traces_one_block_for_every_layer(traced):
    # Hierarchical compilation: the cold compile of a trunk no longer grows with its 32 layers (RESULTS.md).
    calls, subgraphs = traced_trunk(traced, "cpu-xxs", n_layers=3)
    assert calls.count("invoke_subgraph") == 3 and len(subgraphs) == 1  # one body, called by every layer
    assert "scaled_dot_product_attention" not in calls  # the attention is inside it, not inlined
    # host-read split sizes break the graph: inline
    calls, subgraphs = traced_trunk(traced, "cpu-moe", n_layers=2)
    assert "invoke_subgraph" not in calls and not subgraphs and "scaled_dot_product_attention" in calls


def test_every_compiled_graph_is_static_across_shapes_and_the_evaluation(corpus, monkeypatch):
    # Two runs of other sequence lengths in one process and an evaluation (batch 32, not the training's 2):
    # each shape gets a graph of its own with its sizes fixed, none with symbolic sizes its kernels cannot
    # specialise to.
    from powersweep.proxy_models import loop

    graphs = []  # each graph's example inputs

    def record(graph, example_inputs):
        graphs.append(example_inputs)
        return graph.forward

    compile = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda fn, mode=None, **kwargs: compile(fn, backend=record, **kwargs)
    )
    monkeypatch.setattr(loop, "resolve_compile", lambda compile, device, moe=False: bool(compile))
    torch._dynamo.reset()
    for seq_len in (32, 64):
        config = TrainConfig(
            **{**TINY, "model_overrides": {"seq_len": seq_len}, "tokens": 2 * seq_len * 2},
            compile=True,
            data=DataConfig(eval_tokens=32 * seq_len),
        )
        Trainer(config, corpus=corpus).run()
    torch._dynamo.reset()
    assert len(graphs) == 4  # (training, evaluation) x 2 sequence lengths
    tensors = [x for g in graphs for x in g if isinstance(x, torch.Tensor)]
    sizes = [s for t in tensors for s in t.shape] + [
        x for g in graphs for x in g if not isinstance(x, torch.Tensor)
    ]
    assert not any(isinstance(s, torch.SymInt) for s in sizes)
    assert {tuple(t.shape[:2]) for t in tensors if t.dim() == 3} == {
        (2, 32),
        (32, 32),
        (2, 64),
        (32, 64),
    }  # (B, T, d)


def test_a_compiled_trunk_trains_under_bf16_autocast_like_eager(corpus):
    # The CUDA default precision, here on CPU: the reused block is traced under autocast, solo and packed.
    from powersweep.proxy_models.packed import PackedTrainer
    from powersweep.proxy_models.schedules import ScheduleConfig

    config = dict(
        model="cpu-xs",
        model_overrides={"seq_len": 32, "n_layers": 3},
        batch_size=4,
        tokens=4 * 32 * 4,
        dtype="bfloat16",
        schedule=ScheduleConfig(name="constant", lr=1e-3),
    )
    schedules = [ScheduleConfig(name="constant", lr=lr) for lr in (1e-3, 2e-3)]
    losses = {}
    for compile in (False, True):
        cfg = TrainConfig(**config, compile=compile, compile_scope="trunk")
        solo, packed = Trainer(cfg, corpus=corpus), PackedTrainer(cfg, schedules, corpus=corpus)
        solo.train(), packed.train()  # training only: an evaluation would compile a graph of its own
        assert solo.compiled == packed.compiled == compile
        losses[compile] = [solo.recent_losses, *packed.loss_windows]
    for compiled, eager in zip(losses[True], losses[False], strict=True):
        # every step's loss, to bf16 rounding in another order
        assert len(eager) == 4 and compiled == pytest.approx(eager, rel=2e-3)


FAILS = "no working C compiler (injected)"


@pytest.fixture
def compile_backend(monkeypatch):
    """`compile_backend(backend)`: torch.compile compiles with `backend` for the rest of the test. Nothing
    compiled by earlier tests with another backend is used, nor anything compiled here kept for later ones."""
    from powersweep.proxy_models import packed

    compile = torch.compile

    def use(backend) -> None:
        monkeypatch.setattr(
            torch, "compile", lambda fn, mode=None, **kwargs: compile(fn, backend=backend, **kwargs)
        )
        torch._dynamo.reset()
        packed.compiled_trunk.cache_clear()

    yield use
    torch._dynamo.reset()
    packed.compiled_trunk.cache_clear()


@pytest.fixture
def auto_compiles_and_fails(monkeypatch, compile_backend):
    """`compile: auto` compiles here, as on CUDA, with a backend that fails when `fails()` says so."""
    from powersweep.proxy_models import compile_cache, loop

    state = {"fails": lambda: True, "compiles": 0}

    def backend(graph, example_inputs):
        state["compiles"] += 1
        if state["fails"]():
            raise RuntimeError(FAILS)
        return graph.forward

    compile_backend(backend)
    monkeypatch.setattr(loop, "resolve_compile", lambda compile, device, moe=False: bool(compile))
    monkeypatch.setattr(compile_cache, "_failure", None)  # and forgotten after the test
    return state


def _eager_and_falling_back(corpus, config: TrainConfig, pack: int):
    from powersweep.proxy_models.packed import PackedTrainer

    schedules = [ScheduleConfig(name="constant", lr=lr) for lr in (1e-3, 3e-3)][:pack]
    runs = []
    for compile in (False, "auto"):
        cfg = replace(config, compile=compile)
        trainer = Trainer(cfg, corpus=corpus) if pack == 1 else PackedTrainer(cfg, schedules, corpus=corpus)
        trainer.train()
        runs.append((trainer, trainer.results(tokens=cfg.tokens)))
    return runs


@pytest.mark.parametrize("pack", [1, 2])
def test_auto_trains_eager_where_compiling_fails_and_the_rows_say_why(corpus, auto_compiles_and_fails, pack):
    # A machine without a C compiler for inductor or Triton: the run goes on eager from the step that failed.
    config = TrainConfig(**TINY, dtype="float64", data=DataConfig(eval_tokens=256))
    with pytest.warns(
        RuntimeWarning, match="torch.compile failed on this machine, training eager: .*injected"
    ):
        (eager, eager_rows), (fell_back, rows) = _eager_and_falling_back(corpus, config, pack)
    assert auto_compiles_and_fails["compiles"] >= 1 and not fell_back.compiled
    assert fell_back.loss_windows == eager.loss_windows and len(eager.loss_windows[0]) == 3  # the same steps
    assert [r.loss_eval for r in rows] == [r.loss_eval for r in eager_rows]
    for row in rows:
        execution = json.loads(row.execution)
        assert execution["compiled"] is False and FAILS in execution["compile_error"]
    assert "compile_error" not in json.loads(eager_rows[0].execution)


# As CHILD, with `compile: auto` compiling on this CPU as it does on CUDA.
AUTO_CHILD = CHILD.replace("compile=True", "compile='auto'").replace(
    "from torch._dynamo.utils import counters",
    "from torch._dynamo.utils import counters\nfrom powersweep.proxy_models import loop as module\n"
    "module.resolve_compile = lambda compile, device, moe=False: True",
)


@pytest.mark.slow
def test_auto_trains_eager_on_a_machine_without_a_working_c_compiler(tmp_path):
    # Inductor's own failure, in a fresh process with an empty compile cache (nothing compiled to load).
    run = _child(str(tmp_path / "cache"), AUTO_CHILD, CXX=str(tmp_path / "no-such-c++"))
    assert (
        run["compiled"] is False and len(run["losses"]) == 3 and all(math.isfinite(x) for x in run["losses"])
    )
    assert "C++ compiler" in run["compile_error"] and "no-such-c++" in run["compile_error"]


def test_after_a_failed_compile_auto_starts_eager_in_the_same_process(
    corpus, auto_compiles_and_fails, monkeypatch
):
    # A trial process trains many lineages: the machine that cannot compile is found out once.
    config = TrainConfig(**TINY, compile="auto", data=DataConfig(eval_tokens=256))
    with pytest.warns(RuntimeWarning, match="training eager"):
        Trainer(config, corpus=corpus).run()
    tried = auto_compiles_and_fails["compiles"]
    later = Trainer(config, corpus=corpus)
    assert not later.compiled and FAILS in later.compile_error
    assert FAILS in json.loads(later.run().execution)["compile_error"]
    assert auto_compiles_and_fails["compiles"] == tried  # not tried again
    assert Trainer(replace(config, compile=True), corpus=corpus).compiled  # asked for outright: tried again
    from powersweep.proxy_models import loop

    monkeypatch.setattr(loop, "resolve_compile", resolve_compile)  # auto as it is on this CPU
    assert Trainer(config, corpus=corpus).compile_error is None  # eager anyway: no failure to report


@pytest.mark.parametrize("pack", [1, 2])
def test_a_process_compiles_trunks_of_two_widths_one_after_the_other(corpus, compile_backend, pack):
    # A trial process Tune reuses may train a lineage of another width next: the trunk's reused block must be
    # traced again at the new (static) shapes, where dynamic ones fail in dynamo and would train eager.
    # aot_eager traces as inductor does (dynamo, then AOT autograd), then runs the graphs: no code generated.
    from powersweep.proxy_models.packed import PackedTrainer

    compile_backend("aot_eager")

    schedules = [ScheduleConfig(name="constant", lr=lr) for lr in (1e-3, 3e-3)][:pack]
    for preset in ("cpu-xs", "cpu-xxs"):  # d = 64, then 32
        config = TrainConfig(**{**TINY, "model": preset}, compile=True, compile_scope="trunk")
        trainer = (
            Trainer(config, corpus=corpus) if pack == 1 else PackedTrainer(config, schedules, corpus=corpus)
        )
        trainer.train_to(2, total_tokens=config.tokens)
        assert trainer.compiled and trainer.compile_error is None
        assert all(len(window) == 2 and all(map(math.isfinite, window)) for window in trainer.loss_windows)


def test_auto_evaluates_eager_where_only_the_evaluation_fails_to_compile(corpus, auto_compiles_and_fails):
    # The held-out loss runs without gradients: a graph of its own, compiled at the first evaluation.
    auto_compiles_and_fails["fails"] = lambda: not torch.is_grad_enabled()
    config = TrainConfig(**TINY, dtype="float64", data=DataConfig(eval_tokens=256))
    with pytest.warns(RuntimeWarning, match="training eager"):
        (eager, eager_rows), (fell_back, rows) = _eager_and_falling_back(corpus, config, pack=1)
    assert rows[0].loss_eval == eager_rows[0].loss_eval
    assert FAILS in json.loads(rows[0].execution)["compile_error"]


def test_compile_true_where_compiling_fails_is_an_error_that_says_how_to_turn_it_off(
    corpus, auto_compiles_and_fails
):
    trainer = Trainer(TrainConfig(**TINY, compile=True, data=DataConfig(eval_tokens=256)), corpus=corpus)
    with pytest.raises(
        ConfigError,
        match=r"^compile=True: torch.compile failed on this machine \(.*injected\)\); "
        r"set compile to 'auto' .* or to false$",
    ):
        trainer.run()
