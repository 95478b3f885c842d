import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from powersweep.proxy_models import head as head_module
from powersweep.proxy_models.head import chunk_tokens_for, full_loss, head_loss, liger_loss, resolve_head
from powersweep.proxy_models.model import ProxyLM
from powersweep.proxy_models.shapes import get_preset


def inputs(n=37, d=8, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(vocab, d, dtype=torch.float64, generator=g, requires_grad=True)
    return h, w, torch.randint(0, vocab, (n,), generator=g)


def loss_and_grads(path, h, w, y, **kwargs):
    h, w = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    loss = head_loss(h, w, y, head=path, **kwargs) if path != "reference" else full_loss(h, w, y, **kwargs)
    (loss * 1.7).backward()  # a non-unit upstream gradient reaches both inputs
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("chunk", [1, 5, 16, 37, 100])  # 5 and 16 do not divide N = 37
@pytest.mark.parametrize("scale", [1.0, 0.25, 1 / 6])
def test_chunked_equals_full_cross_entropy_in_value_and_gradients(chunk, scale):
    h, w, y = inputs()
    ref = loss_and_grads("reference", h, w, y, scale=scale)
    got = loss_and_grads("chunked", h, w, y, scale=scale, chunk_tokens=chunk)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), vocab=st.integers(2, 30), chunk=st.integers(1, 50), seed=st.integers(0, 10**6))
def test_chunked_equals_full_for_any_shape(n, vocab, chunk, seed):
    h, w, y = inputs(n=n, vocab=vocab, seed=seed)
    ref = loss_and_grads("reference", h, w, y, scale=0.5)
    got = loss_and_grads("chunked", h, w, y, scale=0.5, chunk_tokens=chunk)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


def test_the_reference_is_the_cross_entropy_of_scaled_logits():
    h, w, y = inputs(n=4, vocab=6)
    logits = (h @ w.T) * 0.25
    expected = sum(
        math.log(sum(math.exp(v) for v in row)) - row[t] for row, t in zip(logits.tolist(), y.tolist())
    )
    assert full_loss(h, w, y, scale=0.25).item() == pytest.approx(expected / 4, rel=1e-12)


def test_chunked_loss_without_grad_equals_full():
    h, w, y = inputs()
    with torch.no_grad():
        got = head_loss(h, w, y, scale=0.5, head="chunked", chunk_tokens=7)
        torch.testing.assert_close(got, full_loss(h, w, y, scale=0.5), rtol=1e-12, atol=0)


def test_model_gradients_agree_between_heads():
    """Through the whole model (muP 1/m_width head, m_width 2):
    every parameter's gradient, chunked vs full."""
    cfg = get_preset("cpu-m", seq_len=16, n_layers=1)
    x = torch.randint(0, 256, (3, 17))
    grads = {}
    for head in ("full", "chunked"):
        torch.manual_seed(0)
        model = ProxyLM(cfg).double()
        model.head, model.head_chunk_tokens = head, 10  # 48 tokens: chunks of 10, the last of 8
        logits, loss = model(x[:, :-1], x[:, 1:])
        assert (logits is None) == (head == "chunked")
        loss.backward()
        grads[head] = (loss.detach(), {n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(grads["chunked"][0], grads["full"][0], rtol=1e-12, atol=0)
    for name, g in grads["full"][1].items():
        torch.testing.assert_close(grads["chunked"][1][name], g, rtol=1e-10, atol=1e-14, msg=name)


def test_auto_head_is_plain_for_small_logits_and_chunked_for_big_ones():
    cpu = torch.device("cpu")
    assert resolve_head("auto", n_tokens=256, vocab_size=256, device=cpu) == "full"  # cpu-xxs: one chunk
    assert resolve_head("auto", n_tokens=4096, vocab_size=49152, device=cpu) == "chunked"
    assert chunk_tokens_for(49152) * 49152 * 4 <= 64 * 2**20
    one_chunk = chunk_tokens_for(256)
    assert resolve_head("auto", n_tokens=one_chunk, vocab_size=256, device=cpu) == "full"
    assert resolve_head("auto", n_tokens=one_chunk + 1, vocab_size=256, device=cpu) == "chunked"
    with pytest.raises(ValueError, match="head='fast'"):
        resolve_head("fast", n_tokens=1, vocab_size=2, device=cpu)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="gpu"):
            resolve_head("fused", n_tokens=1, vocab_size=2, device=cpu)


@pytest.mark.parametrize("liger", [True, False])
def test_auto_head_on_cuda_is_plain_while_the_logits_fit_one_chunk_and_fused_above(liger, monkeypatch):
    # No CUDA needed: the choice reads only the device's type and whether liger-kernel is installed.
    asked = []

    def liger_loss():
        asked.append(True)  # importing liger-kernel loads Triton's kernels: only where it could be used
        return (lambda *args, **kwargs: None) if liger else None

    monkeypatch.setattr(head_module, "liger_loss", liger_loss)
    cuda = torch.device("cuda")
    # one variant of the GPU main job (16 x 512 tokens, the embedded corpus's 256 bytes): 8 MiB of logits
    assert resolve_head("auto", n_tokens=16 * 512, vocab_size=256, device=cuda) == "full" and not asked
    big = resolve_head("auto", n_tokens=16 * 1024, vocab_size=50304, device=cuda)
    assert big == ("fused" if liger else "chunked") and asked
    assert resolve_head("auto", n_tokens=16 * 512, vocab_size=256, device=torch.device("cpu")) == "full"


@pytest.mark.skipif(not torch.cuda.is_available() or liger_loss() is None, reason="needs CUDA + liger-kernel")
@pytest.mark.parametrize("autocast", [False, True])
def test_fused_equals_full_on_gpu(autocast):
    h, w, y = inputs(n=300, d=64, vocab=1000)
    h, w, y = h.detach().float().cuda(), w.detach().float().cuda(), y.cuda()
    results = {}
    for path in ("full", "fused"):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = head_loss(hh, ww, y, scale=0.5, head=path)
        loss.backward()
        results[path] = (loss.detach().float(), hh.grad, ww.grad)
    tol = dict(rtol=2e-2, atol=2e-3) if autocast else dict(rtol=1e-4, atol=1e-5)
    for a, b in zip(results["fused"], results["full"]):
        torch.testing.assert_close(a, b, **tol)
