import pytest
import torch

from powersweep.proxy_models.model import ProxyLM
from powersweep.proxy_models.shapes import PAPER_PARAMS, PRESETS, ConfigError, ProxyConfig, get_preset


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_preset_params_match_paper_within_3_percent(name):
    cfg, paper = PRESETS[name], PAPER_PARAMS[name]
    assert cfg.num_params() == pytest.approx(paper["total"], rel=0.03)
    if "active" in paper:  # the paper's MoE active counts leave out the embedding matrix
        assert cfg.num_params(active=True, embedding=False) == pytest.approx(paper["active"], rel=0.03)


@pytest.mark.parametrize("name", ["cpu-xs", "cpu-s", "cpu-moe", "paper-12m"])
def test_num_params_equals_allocated_model(name):
    cfg = PRESETS[name]
    if cfg.vocab_size > 256:
        cfg = get_preset(name, n_layers=2)  # keep the allocation small
    model = ProxyLM(cfg)
    assert cfg.num_params() == sum(p.numel() for p in model.parameters())


def test_paper_m_width_from_d_base():
    assert [PRESETS[n].m_width for n in ("paper-12m", "paper-36m", "paper-121m")] == [0.5, 1.0, 2.0]
    assert PRESETS["paper-1b-dense"].m_width == 6 and PRESETS["paper-1b-moe"].m_width == 4


def test_cpu_presets_differ_only_in_width():
    xs, s, m = (PRESETS[n].to_dict() for n in ("cpu-xs", "cpu-s", "cpu-m"))
    varying = {"d_model", "n_heads", "mlp_hidden"}
    assert {k for k in s if s[k] != xs[k] or s[k] != m[k]} == varying
    assert xs["d_head"] == s["d_head"] == m["d_head"]


def test_standard_parametrisation_has_unit_width_multiplier():
    assert get_preset("cpu-m", use_mup=False).m_width == 1.0


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"d_model": 0}, "d_model=0"),
        ({"n_heads": 4, "n_kv_heads": 3}, "n_kv_heads=3"),
        ({"n_experts": 4, "top_k": 5, "expert_hidden": 8}, "top_k=5"),
        ({"activation": "gelu"}, "activation='gelu'"),
    ],
)
def test_invalid_config_names_field_and_value(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        ProxyConfig(**kwargs)


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match="cpu-s"):
        get_preset("cpu-xxl")


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ConfigError, match="d_modle"):
        ProxyConfig.from_dict({"d_modle": 64})
    assert ProxyConfig.from_dict(PRESETS["cpu-s"].to_dict()) == PRESETS["cpu-s"]


def test_forward_shapes_and_initial_loss_near_uniform():
    torch.manual_seed(0)
    model = ProxyLM(PRESETS["cpu-xs"])
    x, y = torch.randint(0, 256, (2, 2, 32))
    logits, loss = model(x, y)
    assert logits.shape == (2, 32, 256)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(256.0)).item(), rel=0.02)
