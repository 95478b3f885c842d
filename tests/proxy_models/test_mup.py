import math

import pytest
import torch

from powersweep.proxy_models.model import ProxyLM
from powersweep.proxy_models.mup import param_groups, set_lr
from powersweep.proxy_models.shapes import ProxyConfig, get_preset


def test_hidden_matrices_get_lr_over_m_width():
    model = ProxyLM(get_preset("cpu-m"))  # m_width 2
    groups = {g["name"]: g for g in param_groups(model, m_width=2.0, weight_decay=0.1)}
    assert groups["hidden"]["lr_scale"] == 0.5 and groups["embedding"]["lr_scale"] == 1.0
    assert groups["gains"]["weight_decay"] == 0.0
    assert [p is model.wte.weight for p in groups["embedding"]["params"]] == [True]
    counted = sum(p.numel() for g in groups.values() for p in g["params"])
    assert counted == sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(list(groups.values()))
    set_lr(opt, 0.01)
    assert [g["lr"] for g in opt.param_groups] == [0.005, 0.01, 0.01]


def test_init_std_scales_with_inverse_sqrt_width():
    torch.manual_seed(0)
    cfg = get_preset("cpu-m", init_std=0.1)  # m_width 2
    model = ProxyLM(cfg)
    assert model.blocks[0].mlp.w_in.weight.std().item() == pytest.approx(0.1 / math.sqrt(2), rel=0.02)
    assert model.wte.weight.std().item() == pytest.approx(0.1, rel=0.05)


def test_muP_multipliers_act_in_forward():
    """Doubling m_emb doubles the (pre-norm) embedding; m_residual scales the branch outputs."""
    torch.manual_seed(0)
    base = ProxyConfig(n_layers=1, m_emb=1.0, m_residual=1.0)
    model = ProxyLM(base)
    x = torch.randint(0, 256, (1, 8))
    seen = {}
    model.blocks[0].attn_norm.register_forward_hook(lambda m, i, o: seen.__setitem__("in", i[0].clone()))
    model(x)
    first = seen["in"]
    model.cfg = ProxyConfig(n_layers=1, m_emb=12.0)
    model(x)
    torch.testing.assert_close(seen["in"], 12.0 * first)


def coordinate_scales(width: int, use_mup: bool, *, steps=5, lr=1e-2) -> dict[str, float]:
    """Mean |activation| of the last block's attention and MLP outputs and of the logits after Adam steps."""
    torch.manual_seed(0)
    cfg = ProxyConfig(
        d_model=width,
        n_layers=2,
        n_heads=width // 32,
        d_head=32,
        mlp_hidden=2 * width,
        seq_len=64,
        d_base=64,
        use_mup=use_mup,
    )
    model = ProxyLM(cfg)
    opt = torch.optim.AdamW(param_groups(model, m_width=cfg.m_width, weight_decay=0.0))
    x = torch.randint(0, 256, (8, 65), generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        set_lr(opt, lr)
        model(x[:, :-1], x[:, 1:])[1].backward()
        opt.step()
        opt.zero_grad()
    scales = {}
    last = model.blocks[-1]
    last.attn.register_forward_hook(lambda m, i, o: scales.__setitem__("attn", o.abs().mean().item()))
    last.mlp.register_forward_hook(lambda m, i, o: scales.__setitem__("mlp", o.abs().mean().item()))
    with torch.no_grad():
        scales["logits"] = model(x[:, :-1])[0].abs().mean().item()
    return scales


def test_coordinate_check_flat_under_mup_growing_under_sp():
    widths = (64, 128, 256, 512)
    mup = [coordinate_scales(w, True) for w in widths]
    sp = [coordinate_scales(w, False) for w in widths]
    for key in ("attn", "mlp", "logits"):
        mup_scales = [s[key] for s in mup]
        sp_scales = [s[key] for s in sp]
        assert max(mup_scales) / min(mup_scales) < 2.0, (key, mup_scales)
        assert sp_scales == sorted(sp_scales), (key, sp_scales)  # grows with width
        assert sp_scales[-1] / sp_scales[0] > 4.0, (key, sp_scales)
