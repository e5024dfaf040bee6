"""sample(..., return_logprobs=True) (docs/contract.md §7): the drawn tokens' log-probabilities
under the final and the unfiltered distributions, against sampling_probs and a log-softmax, on
every backend; the gradient formula of sampling_probs (contract §6) and the device checks of the
ops' fake implementations."""

import math

import pytest
import torch

import tsdi_ext
from tsdi_ext.ops import _native

native = pytest.mark.skipif(not _native.native_available(), reason="no native extension")
BACKENDS = ["torch", pytest.param("cpu", marks=native)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_logprobs_match_the_distributions(backend):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 5000, generator=g) * 2
    bias = torch.randn(5000, generator=g)
    params = dict(bias=bias, alpha=0.5, temperature=0.8, top_p=0.9, top_k=200, min_p=0.01)
    out = tsdi_ext.sample(
        logits, seed=1, offset=torch.arange(64), return_logprobs=True, backend=backend, **params
    )
    assert isinstance(out, tsdi_ext.ops.SampleWithLogprobs)
    tokens, valid = tsdi_ext.sample(
        logits, seed=1, offset=torch.arange(64), backend=backend, **params
    )
    assert torch.equal(out.tokens, tokens) and torch.equal(out.valid, valid)
    probs = tsdi_ext.sampling_probs(logits, backend=backend, **params)
    want = probs.gather(1, tokens[:, None]).squeeze(1).double().log()
    torch.testing.assert_close(out.logprob.double(), want, atol=1e-5, rtol=1e-5)
    d = logits - 0.5 * bias
    unfiltered = torch.log_softmax(d.double() / 0.8, dim=1).gather(1, tokens[:, None]).squeeze(1)
    torch.testing.assert_close(out.unfiltered_logprob.double(), unfiltered, atol=1e-5, rtol=1e-5)
    assert (out.logprob <= 0).all() and (out.logprob >= out.unfiltered_logprob).all()


@native
def test_logprobs_agree_between_backends_and_special_rows():
    logits = torch.randn(6, 300, generator=torch.Generator().manual_seed(4))
    logits[4] = float("nan")
    temperature = torch.tensor([1.0, 0.0, 0.5, 2.0, 1.0, 1.0])
    outs = [
        tsdi_ext.sample(
            logits,
            temperature=temperature,
            top_p=0.8,
            seed=9,
            offset=3,
            return_logprobs=True,
            backend=b,
        )
        for b in ("torch", "cpu")
    ]
    for field in ("logprob", "unfiltered_logprob"):
        torch.testing.assert_close(
            getattr(outs[0], field), getattr(outs[1], field), atol=1e-6, rtol=1e-6, equal_nan=True
        )
    assert outs[1].logprob[1] == 0 and outs[1].unfiltered_logprob[1] == 0  # greedy
    assert math.isnan(outs[1].logprob[4]) and not outs[1].valid[4]  # invalid
    # the default return is unchanged
    assert len(tsdi_ext.sample(logits, backend="cpu")) == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_probs_gradient(backend):
    """Gradients reach the logits and the bias on every backend, and agree with the reference's
    autograd (a softmax over the kept set, the set itself piecewise constant)."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(4, 50, generator=g) * 2
    table = torch.randn(3, 50, generator=g)
    positions = torch.tensor([0, 2, 7, 1])
    weights = torch.randn(4, 50, generator=g)
    temperature = torch.tensor([0.7, 1.0, 1.5, 0.0])
    grads = {}
    for b in ("torch", backend):
        x = base.clone().requires_grad_()
        bias = table.clone().requires_grad_()
        probs = tsdi_ext.sampling_probs(
            x,
            bias=bias,
            positions=positions,
            alpha=0.5,
            temperature=temperature,
            top_p=0.9,
            top_k=20,
            backend=b,
        )
        (probs * weights).sum().backward()
        assert x.grad is not None and bias.grad is not None
        grads[b] = (x.grad, bias.grad)
    torch.testing.assert_close(grads[backend][0], grads["torch"][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads[backend][1], grads["torch"][1], atol=1e-5, rtol=1e-4)
    assert grads[backend][0][3].abs().max() == 0  # greedy row: piecewise constant
    assert grads[backend][0].abs().max() > 0


@native
def test_gradient_check_of_the_fused_op():
    x = torch.randn(2, 12, dtype=torch.float32, generator=torch.Generator().manual_seed(6))
    x.requires_grad_()

    def f(logits):
        return tsdi_ext.sampling_probs(logits, temperature=0.9, backend="cpu")

    jac = torch.autograd.functional.jacobian(f, x)
    ref = torch.autograd.functional.jacobian(
        lambda t: torch.softmax(t / torch.tensor(0.9, dtype=torch.float32), dim=1), x
    )
    torch.testing.assert_close(jac, ref, atol=1e-5, rtol=1e-4)


@native
def test_per_row_tensors_that_require_grad_are_refused():
    x = torch.randn(2, 12, requires_grad=True)
    temperature = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"gradients for logits and bias only, but temperature"):
        tsdi_ext.sampling_probs(x, temperature=temperature, backend="cpu")


@native
@pytest.mark.parametrize("op", ["sample", "sampling_probs", "sample_logprobs"])
def test_meta_tensor_among_cpu_arguments_is_refused(op):
    """A tensor on the meta device dispatches to the fake implementation: it must refuse mixed
    devices as the C++ glue does, not return uninitialised tokens."""
    logits = torch.randn(4, 9)
    rows = [None] * len(tsdi_ext.ops.params.ROW_PARAMS)
    rows[1] = torch.ones(4, device="meta")  # temperature
    floats, ints = [1.0, 1.0, 1.0, 0.0], [0, 0, 0]
    fn = getattr(torch.ops.tsdi_ext, op).default
    with pytest.raises(
        ValueError, match=r"^tsdi_ext: temperature is on meta but logits are on cpu"
    ):
        fn(logits, None, None, rows, floats, ints)
    with pytest.raises(ValueError, match=r"^tsdi_ext: bias is on meta but logits are on cpu"):
        fn(logits, torch.zeros(9, device="meta"), None, [None] * len(rows), floats, ints)
    # all on meta: shapes only, as a meta op should
    out = fn(logits.to("meta"), None, None, [None] * len(rows), floats, ints)
    assert (out[0] if isinstance(out, tuple) else out).device.type == "meta"
