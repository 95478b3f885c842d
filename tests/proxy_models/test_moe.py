import pytest
import torch

from powersweep.proxy_models.moe import MoEMLP, load_balance_loss, reference_moe, route, scattermoe_ops


def make_moe(seed=0, **kwargs):
    torch.manual_seed(seed)
    moe = MoEMLP(d_model=16, expert_hidden=12, n_experts=6, top_k=2, backend="torch", **kwargs).double()
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return moe


def test_torch_grouped_equals_naive_reference():
    moe = make_moe()
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    torch.testing.assert_close(moe(x), reference_moe(moe, x), rtol=1e-12, atol=1e-12)


def test_torch_grouped_gradients_equal_reference():
    moe, ref = make_moe(), make_moe()
    x = torch.randn(5, 16, dtype=torch.float64)
    moe(x).square().sum().backward()
    reference_moe(ref, x).square().sum().backward()
    for (name, p), q in zip(moe.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_expert_that_gets_no_token_is_fine():
    moe = make_moe()
    with torch.no_grad():
        moe.router.weight[0] = -100.0  # expert 0 never wins
    x = torch.randn(4, 16, dtype=torch.float64)
    torch.testing.assert_close(moe(x), reference_moe(moe, x))


def test_route_weights_are_a_distribution_over_top_k():
    weights, experts = route(torch.randn(10, 6), 3)
    torch.testing.assert_close(weights.sum(-1), torch.ones(10))
    assert experts.shape == (10, 3) and all(len(set(row.tolist())) == 3 for row in experts)


def test_load_balance_loss_is_one_when_uniform_and_larger_when_collapsed():
    uniform_logits = torch.zeros(600, 6)
    experts = torch.arange(600).remainder(6).unsqueeze(1)
    assert load_balance_loss(uniform_logits, experts, 6).item() == pytest.approx(1.0)
    collapsed = torch.zeros(600, 6)
    collapsed[:, 0] = 10.0
    assert load_balance_loss(collapsed, torch.zeros(600, 1, dtype=torch.long), 6).item() > 5.0


def test_scattermoe_backend_without_package_is_a_clear_error():
    if scattermoe_ops() is not None:
        pytest.skip("scattermoe installed")
    moe = MoEMLP(8, 4, 4, 2, backend="scattermoe")
    with pytest.raises(RuntimeError, match="docs/how-to/gpu.md"):
        moe(torch.randn(3, 8))


def gpu_moe() -> tuple[MoEMLP, torch.Tensor]:
    """A seeded MoE on the torch backend and an input that needs its gradient, both on CUDA."""
    torch.manual_seed(0)
    moe = MoEMLP(64, 128, 8, 2, backend="torch").cuda()
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return moe, torch.randn(512, 64, device="cuda", requires_grad=True)


@pytest.mark.skipif(
    not torch.cuda.is_available() or scattermoe_ops() is None, reason="needs CUDA + scattermoe"
)
def test_scattermoe_equals_torch_path_on_gpu(monkeypatch):
    import scattermoe.kernels.ops

    # ScatterMoE's kernels multiply fp32 in TF32 by default (10-bit mantissa): off, both paths are fp32
    # matmuls.
    monkeypatch.setattr(scattermoe.kernels.ops, "ALLOW_TF32", False)
    moe, x = gpu_moe()
    y_torch = moe(x)
    moe.backend = "scattermoe"
    y_scatter = moe(x)
    torch.testing.assert_close(y_scatter, y_torch, rtol=1e-3, atol=1e-4)
    (g_torch,) = torch.autograd.grad(y_torch.sum(), x)
    (g_scatter,) = torch.autograd.grad(y_scatter.sum(), x)
    torch.testing.assert_close(g_scatter, g_torch, rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(
    not torch.cuda.is_available() or scattermoe_ops() is None, reason="needs CUDA + scattermoe"
)
def test_scattermoe_trains_under_bf16_autocast_like_the_torch_path():
    moe, x = gpu_moe()
    grads = {}
    for backend in ("torch", "scattermoe"):
        moe.backend = backend
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = moe(x)
        y.float().square().sum().backward()  # fails in scattermoe's backward when dtypes are mixed
        grads[backend] = (y.detach().float(), x.grad.clone(), moe.w_in.grad.clone(), moe.w_out.grad.clone())
        x.grad = moe.w_in.grad = moe.w_out.grad = moe.router.weight.grad = None
    for a, b in zip(grads["scattermoe"], grads["torch"]):
        torch.testing.assert_close(a, b, rtol=3e-2, atol=3e-3)
