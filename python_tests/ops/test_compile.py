"""The ops under the PyTorch op-registration checks (torch.library.opcheck: schema, autograd
registration, fake tensor / meta implementation, AOT dispatch with dynamic shapes) and under
``torch.compile(fullgraph=True)``, where the compiled function must return exactly what eager
returns (CPU)."""

import pytest
import torch

import tsdi_ext

from helpers import raw_row_args

SAMPLE = torch.ops.tsdi_ext.sample.default
PROBS = torch.ops.tsdi_ext.sampling_probs.default
OPCHECK_TESTS = (
    "test_schema",
    "test_autograd_registration",
    "test_faketensor",
    "test_aot_dispatch_dynamic",
)


def _opcheck_inputs(name):
    g = torch.Generator().manual_seed(0)
    batch, vocab = 5, 67
    logits = torch.randn(batch, vocab, generator=g) * 3
    table = torch.randn(3, vocab, generator=g)
    positions = torch.tensor([0, 2, 5, 1, -1])
    per_row = dict(
        alpha=torch.rand(batch, generator=g),
        temperature=torch.rand(batch, generator=g) + 0.1,
        top_p=torch.rand(batch, generator=g),
        seed=torch.arange(batch) * 13,
        offset=torch.arange(batch) + 2**40,
    )
    if name == "scalars":
        return logits, None, None, {}, dict(alpha=1.0, temperature=0.8, top_p=0.9, seed=3, offset=5)
    if name == "table_per_row":
        return (
            logits,
            table,
            positions,
            per_row,
            dict(alpha=0.0, temperature=0.0, top_p=0.0, seed=0, offset=0),
        )
    if name == "float16":
        return (
            logits.half(),
            table[0],
            None,
            {},
            dict(alpha=0.5, temperature=1.3, top_p=0.5, seed=-1, offset=7),
        )
    if name == "bfloat16_table_scalars":
        return (
            logits.bfloat16(),
            table,
            positions,
            {},
            dict(alpha=0.5, temperature=0.0, top_p=1.0, seed=1, offset=1),
        )
    if name == "row_strided":
        return (
            logits[:, :40],
            table[:, :40].contiguous(),
            positions,
            dict(top_p=per_row["top_p"]),
            dict(alpha=0.5, temperature=2.0, top_p=0.0, seed=1, offset=1),
        )
    if name == "empty_batch":
        return (
            torch.zeros(0, vocab),
            table,
            torch.zeros(0, dtype=torch.int64),
            {},
            dict(alpha=1.0, temperature=1.0, top_p=0.9, seed=1, offset=1),
        )
    raise ValueError(name)


OPCHECK_CASES = [
    "scalars",
    "table_per_row",
    "float16",
    "bfloat16_table_scalars",
    "row_strided",
    "empty_batch",
]


def _sample_args(name):
    logits, bias, positions, tensors, scalars = _opcheck_inputs(name)
    return (logits, bias, positions, *raw_row_args(**{**scalars, **tensors}))


def _probs_args(name):
    return _sample_args(name)


def _assert_opcheck(op, args):
    assert not any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)
    result = torch.library.opcheck(op, args, test_utils=OPCHECK_TESTS)
    assert result == {test: "SUCCESS" for test in OPCHECK_TESTS}, result


@pytest.mark.parametrize("case", OPCHECK_CASES)
def test_opcheck_sample(case):
    _assert_opcheck(SAMPLE, _sample_args(case))


@pytest.mark.parametrize("case", OPCHECK_CASES)
def test_opcheck_sampling_probs(case):
    _assert_opcheck(PROBS, _probs_args(case))


def test_fake_shapes_match_real():
    args = _sample_args("table_per_row")
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:

        def fake(a):
            if isinstance(a, list):
                return [fake(x) for x in a]
            return mode.from_tensor(a) if isinstance(a, torch.Tensor) else a

        fake_args = [fake(a) for a in args]
        tokens, valid = SAMPLE(*fake_args)
        probs = PROBS(*fake_args)
    real_tokens, real_valid = SAMPLE(*args)
    real_probs = PROBS(*args)
    for fake, real in ((tokens, real_tokens), (valid, real_valid), (probs, real_probs)):
        assert fake.shape == real.shape and fake.dtype == real.dtype and fake.device == real.device


# ---------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _case(batch=6, vocab=101, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, vocab, generator=g) * 2).to(dtype)
    bias = torch.randn(3, vocab, generator=g)
    positions = torch.arange(batch, dtype=torch.int64) % 5 - (torch.arange(batch) == 4).long() * 9
    return logits, bias, positions, g


def _assert_same(eager, compiled):
    assert len(eager) == len(compiled)
    for e, c in zip(eager, compiled):
        assert e.dtype == c.dtype and e.shape == c.shape
        assert torch.equal(e, c), (e, c)


def test_compile_python_scalars_and_tensors():
    logits, bias, positions, g = _case()
    batch = logits.shape[0]
    temperature = torch.rand(batch, generator=g) + 0.2
    temperature[1] = 0.0  # a greedy row

    def fn(logits, bias, positions, temperature):
        tokens, valid = tsdi_ext.sample(
            logits,
            bias=bias,
            positions=positions,
            alpha=0.75,
            temperature=temperature,
            top_p=0.9,
            seed=123,
            offset=7,
        )
        probs = tsdi_ext.sampling_probs(
            logits, bias=bias, positions=positions, alpha=0.75, temperature=temperature, top_p=0.9
        )
        return tokens, valid, probs

    compiled = torch.compile(fn, fullgraph=True)
    eager = fn(logits, bias, positions, temperature)
    assert not bool(eager[1][4]) and bool(eager[1][[0, 1, 2, 3, 5]].all())
    _assert_same(eager, compiled(logits, bias, positions, temperature))
    # New tensor values, same shapes: no recompilation needed, still equal to eager.
    logits2, _, _, _ = _case(seed=1)
    _assert_same(
        fn(logits2, bias, positions, temperature), compiled(logits2, bias, positions, temperature)
    )


def test_compile_per_row_tensors_and_offsets():
    logits, bias, positions, g = _case(dtype=torch.float16)
    batch = logits.shape[0]
    params = dict(
        alpha=torch.rand(batch, generator=g) * 2,
        temperature=torch.rand(batch, generator=g) + 0.1,
        top_p=torch.rand(batch, generator=g),
    )

    def fn(logits, bias, positions, alpha, temperature, top_p, seed, offset):
        kwargs = dict(
            bias=bias, positions=positions, alpha=alpha, temperature=temperature, top_p=top_p
        )
        tokens, valid = tsdi_ext.sample(logits, seed=seed, offset=offset, **kwargs)
        return tokens, valid, tsdi_ext.sampling_probs(logits, **kwargs)

    compiled = torch.compile(fn, fullgraph=True)
    seed = torch.full((batch,), 2**62 + 3, dtype=torch.int64)
    seen = set()
    for step in range(3):
        # A decoding loop: the offset tensor changes every call.
        offset = torch.arange(batch, dtype=torch.int64) * 1000 + step
        args = (logits, bias, positions, *params.values(), seed, offset)
        eager = fn(*args)
        _assert_same(eager, compiled(*args))
        seen.add(tuple(eager[0].tolist()))
    assert len(seen) > 1, "different offsets should give different draws"


def test_compile_changing_python_temperature_and_seed():
    logits, bias, positions, _ = _case()

    def fn(logits, temperature, seed, offset):
        tokens, valid = tsdi_ext.sample(
            logits,
            bias=bias,
            positions=positions,
            temperature=temperature,
            top_p=0.95,
            seed=seed,
            offset=offset,
        )
        return (
            tokens,
            valid,
            tsdi_ext.sampling_probs(
                logits, bias=bias, positions=positions, temperature=temperature, top_p=0.95
            ),
        )

    compiled = torch.compile(fn, fullgraph=True)
    for temperature, seed, offset in [(0.8, 1, 10), (1.3, 2, 11), (0.0, 2**64 - 1, -5)]:
        _assert_same(
            fn(logits, temperature, seed, offset), compiled(logits, temperature, seed, offset)
        )


def test_compile_changing_shapes():
    """Batch and vocabulary sizes change between calls (dynamic shapes after a recompile)."""

    def fn(logits, bias, positions, offset):
        tokens, valid = tsdi_ext.sample(
            logits, bias=bias, positions=positions, alpha=0.5, top_p=0.8, seed=9, offset=offset
        )
        return (
            tokens,
            valid,
            tsdi_ext.sampling_probs(logits, bias=bias, positions=positions, alpha=0.5, top_p=0.8),
        )

    compiled = torch.compile(fn, fullgraph=True)
    for batch, vocab in [(4, 50), (7, 50), (9, 77), (0, 77)]:
        logits, bias, positions, _ = _case(batch, vocab, dtype=torch.bfloat16, seed=batch)
        offset = torch.arange(batch, dtype=torch.int64)
        _assert_same(fn(logits, bias, positions, offset), compiled(logits, bias, positions, offset))


@pytest.mark.parametrize("name", ["alpha", "top_p"])
def test_compile_changing_python_float(name):
    logits, bias, positions, _ = _case()

    def fn(logits, value):
        kwargs = dict(bias=bias, positions=positions, alpha=0.5, temperature=0.9, top_p=0.9)
        kwargs[name] = value
        tokens, valid = tsdi_ext.sample(logits, seed=4, offset=2, **kwargs)
        return tokens, valid, tsdi_ext.sampling_probs(logits, **kwargs)

    compiled = torch.compile(fn, fullgraph=True)
    for value in (0.5, 0.7, 0.3):
        _assert_same(fn(logits, value), compiled(logits, value))
