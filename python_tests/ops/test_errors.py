"""Every bad input raises a clear Python exception (type and message asserted); empty batches and
strict mode behave as documented; the raw dispatcher ops reject bad shapes instead of crashing."""

import math

import pytest
import torch

import tsdi_ext

from helpers import raw_row_args

B, V = 3, 11


def logits():
    return torch.randn(B, V, generator=torch.Generator().manual_seed(0))


def table():
    return torch.randn(4, V, generator=torch.Generator().manual_seed(1))


def positions():
    return torch.tensor([0, 2, 7], dtype=torch.int64)


API = [
    pytest.param(tsdi_ext.sample, id="sample"),
    pytest.param(tsdi_ext.sampling_probs, id="sampling_probs"),
]

# (kwargs builder, exception type, message regex): bad arguments common to both functions.
BAD_COMMON = {
    "logits_not_tensor": (
        lambda: dict(logits=[[0.0] * V] * B),
        TypeError,
        r"logits must be a torch\.Tensor, got list",
    ),
    "logits_numpy": (
        lambda: dict(logits=logits().numpy()),
        TypeError,
        r"logits must be a torch\.Tensor, got ndarray",
    ),
    "logits_1d": (
        lambda: dict(logits=torch.randn(V)),
        ValueError,
        r"logits must be \[B, V\] \(2-D\), got shape \(11,\)",
    ),
    "logits_3d": (
        lambda: dict(logits=torch.randn(2, B, V)),
        ValueError,
        r"logits must be \[B, V\] \(2-D\), got shape \(2, 3, 11\)",
    ),
    "logits_int64": (
        lambda: dict(logits=torch.zeros(B, V, dtype=torch.int64)),
        TypeError,
        r"logits must be float32, float16 or bfloat16, got torch\.int64",
    ),
    "logits_float64": (
        lambda: dict(logits=logits().double()),
        TypeError,
        r"logits must be float32, float16 or bfloat16, got torch\.float64",
    ),
    "empty_vocab": (
        lambda: dict(logits=torch.zeros(B, 0)),
        ValueError,
        r"logits have an empty vocabulary \(V == 0\)",
    ),
    "bias_not_tensor": (
        lambda: dict(bias=[0.0] * V),
        TypeError,
        r"bias must be a torch\.Tensor or None, got list",
    ),
    "bias_float64": (
        lambda: dict(bias=torch.zeros(V, dtype=torch.float64)),
        TypeError,
        r"bias must be float32, got torch\.float64",
    ),
    "bias_3d": (
        lambda: dict(bias=torch.zeros(2, 4, V), positions=positions()),
        ValueError,
        r"bias must be \[V\] or \[L, V\], got shape \(2, 4, 11\)",
    ),
    "bias_vocab_mismatch": (
        lambda: dict(bias=torch.zeros(V + 1)),
        ValueError,
        r"bias has vocabulary size 12 but logits have 11",
    ),
    "bias_table_vocab_mismatch": (
        lambda: dict(bias=torch.zeros(4, V - 1), positions=positions()),
        ValueError,
        r"bias has vocabulary size 10 but logits have 11",
    ),
    "table_without_positions": (
        lambda: dict(bias=table()),
        ValueError,
        r"positions \(\[B\] int64\) are required with an \[L, V\] bias",
    ),
    "positions_not_tensor": (
        lambda: dict(bias=table(), positions=[0, 1, 2]),
        TypeError,
        r"positions must be a \[B\] int64 tensor, got list",
    ),
    "positions_wrong_length": (
        lambda: dict(bias=table(), positions=torch.zeros(B + 1, dtype=torch.int64)),
        ValueError,
        r"positions must be \[B\] with B = 3, got shape \(4,\)",
    ),
    "positions_2d": (
        lambda: dict(bias=table(), positions=torch.zeros(B, 1, dtype=torch.int64)),
        ValueError,
        r"positions must be \[B\] with B = 3, got shape \(3, 1\)",
    ),
    "positions_int32": (
        lambda: dict(bias=table(), positions=positions().int()),
        TypeError,
        r"positions must be int64, got torch\.int32",
    ),
    "temperature_wrong_length": (
        lambda: dict(temperature=torch.ones(B + 2)),
        ValueError,
        r"temperature must be a Python number or a \[B\] tensor with B = 3, got shape \(5,\)",
    ),
    "temperature_0d_tensor": (
        lambda: dict(temperature=torch.tensor(0.5)),
        ValueError,
        r"temperature must be a Python number or a \[B\] tensor with B = 3, got shape \(\)",
    ),
    "temperature_float64": (
        lambda: dict(temperature=torch.ones(B, dtype=torch.float64)),
        TypeError,
        r"temperature must have dtype torch\.float32, got torch\.float64",
    ),
    "temperature_str": (
        lambda: dict(temperature="1.0"),
        TypeError,
        r"temperature must be a Python number or a \[B\] float32 tensor, got str",
    ),
    "temperature_bool": (
        lambda: dict(temperature=True),
        TypeError,
        r"temperature must be a Python number or a \[B\] float32 tensor, got bool",
    ),
    "alpha_wrong_length": (
        lambda: dict(bias=torch.zeros(V), alpha=torch.ones(1)),
        ValueError,
        r"alpha must be a Python number or a \[B\] tensor with B = 3, got shape \(1,\)",
    ),
    "top_p_float16": (
        lambda: dict(top_p=torch.ones(B, dtype=torch.float16)),
        TypeError,
        r"top_p must have dtype torch\.float32, got torch\.float16",
    ),
    "temperature_negative": (
        lambda: dict(temperature=-0.5),
        ValueError,
        r"temperature must be >= 0 \(0 means greedy\), got -0\.5",
    ),
    "temperature_negative_inf": (
        lambda: dict(temperature=-math.inf),
        ValueError,
        r"temperature must be >= 0 \(0 means greedy\), got -inf",
    ),
    "temperature_nan": (
        lambda: dict(temperature=math.nan),
        ValueError,
        r"temperature must be >= 0 \(0 means greedy\), got nan",
    ),
    "top_p_nan": (lambda: dict(top_p=math.nan), ValueError, r"top_p must be in \[0, 1\], got nan"),
    "top_p_above_one": (
        lambda: dict(top_p=1.5),
        ValueError,
        r"top_p must be in \[0, 1\], got 1\.5",
    ),
    "top_p_negative": (
        lambda: dict(top_p=-0.25),
        ValueError,
        r"top_p must be in \[0, 1\], got -0\.25",
    ),
    "top_p_just_above_one": (
        lambda: dict(top_p=1.0000001),
        ValueError,
        r"top_p must be in \[0, 1\], got 1\.00000",
    ),
    "alpha_inf": (
        lambda: dict(alpha=math.inf),
        ValueError,
        r"alpha must be finite \(in float32\), got inf",
    ),
    "alpha_minus_inf": (
        lambda: dict(alpha=-math.inf),
        ValueError,
        r"alpha must be finite \(in float32\), got -inf",
    ),
    "alpha_nan": (
        lambda: dict(alpha=math.nan),
        ValueError,
        r"alpha must be finite \(in float32\), got nan",
    ),
    "backend_unknown": (
        lambda: dict(backend="gpu"),
        ValueError,
        r"backend must be one of \('auto', 'torch', 'cpu', 'cuda'\), got 'gpu'",
    ),
    "backend_cuda_with_cpu_tensors": (
        lambda: dict(backend="cuda"),
        ValueError,
        r"backend='cuda' needs cuda tensors, logits are on cpu",
    ),
    # A "meta" tensor is on another device than the CPU logits: the device check fires first.
    "bias_other_device": (
        lambda: dict(bias=torch.zeros(V, device="meta")),
        ValueError,
        r"bias is on meta but logits are on cpu",
    ),
    "positions_other_device": (
        lambda: dict(bias=table(), positions=positions().to("meta")),
        ValueError,
        r"positions is on meta but logits are on cpu",
    ),
    "temperature_other_device": (
        lambda: dict(temperature=torch.ones(B, device="meta")),
        ValueError,
        r"temperature is on meta but logits are on cpu",
    ),
    "alpha_other_device": (
        lambda: dict(bias=torch.zeros(V), alpha=torch.ones(B, device="meta")),
        ValueError,
        r"alpha is on meta but logits are on cpu",
    ),
}

# Bad arguments of the draw (sample only).
BAD_DRAW = {
    "seed_too_large": (
        lambda: dict(seed=2**64),
        ValueError,
        r"seed must fit in 64 bits, got 18446744073709551616",
    ),
    "seed_too_small": (
        lambda: dict(seed=-(2**63) - 1),
        ValueError,
        r"seed must fit in 64 bits, got -9223372036854775809",
    ),
    "offset_too_large": (
        lambda: dict(offset=2**70),
        ValueError,
        r"offset must fit in 64 bits, got 1180591620717411303424",
    ),
    "seed_float": (
        lambda: dict(seed=1.0),
        TypeError,
        r"seed must be an int or a \[B\] int64 tensor, got float",
    ),
    "seed_bool": (
        lambda: dict(seed=True),
        TypeError,
        r"seed must be an int or a \[B\] int64 tensor, got bool",
    ),
    "seed_int32": (
        lambda: dict(seed=torch.zeros(B, dtype=torch.int32)),
        TypeError,
        r"seed must have dtype torch\.int64, got torch\.int32",
    ),
    "offset_wrong_length": (
        lambda: dict(offset=torch.zeros(B - 1, dtype=torch.int64)),
        ValueError,
        r"offset must be a Python number or a \[B\] tensor with B = 3, got shape \(2,\)",
    ),
    "seed_other_device": (
        lambda: dict(seed=torch.zeros(B, dtype=torch.int64, device="meta")),
        ValueError,
        r"seed is on meta but logits are on cpu",
    ),
}


def call(fn, kwargs):
    kwargs = dict(kwargs)
    x = kwargs.pop("logits", None)
    return fn(logits() if x is None else x, **kwargs)


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("fn", API)
@pytest.mark.parametrize("case", list(BAD_COMMON), ids=list(BAD_COMMON))
def test_bad_arguments(fn, case, backend):
    build, error, message = BAD_COMMON[case]
    kwargs = build()
    kwargs.setdefault("backend", backend)
    with pytest.raises(error, match=r"^tsdi_ext: " + message):
        call(fn, kwargs)


@pytest.mark.parametrize("backend", ["auto", "cpu", "torch"])
@pytest.mark.parametrize("case", list(BAD_DRAW), ids=list(BAD_DRAW))
def test_bad_draw_arguments(case, backend):
    build, error, message = BAD_DRAW[case]
    with pytest.raises(error, match=r"^tsdi_ext: " + message):
        call(tsdi_ext.sample, dict(build(), backend=backend))


def test_seed_and_offset_accept_the_whole_64_bit_range():
    # [-2**63, 2**64): values >= 2**63 are the uint64 reading of negative int64 values.
    for value in (-(2**63), -1, 0, 2**63 - 1, 2**63, 2**64 - 1):
        tsdi_ext.sample(logits(), seed=value, offset=value)
    assert torch.equal(
        tsdi_ext.sample(logits(), seed=2**64 - 1, offset=2**63)[0],
        tsdi_ext.sample(logits(), seed=-1, offset=-(2**63))[0],
    )


@pytest.mark.parametrize("backend", ["auto", "cpu", "torch"])
def test_empty_batch(backend):
    for vocab in (1, V):
        x = torch.zeros(0, vocab)
        tokens, valid = tsdi_ext.sample(x, backend=backend, strict=True)
        assert tokens.dtype == torch.int64 and tokens.shape == (0,)
        assert valid.dtype == torch.bool and valid.shape == (0,)
        probs = tsdi_ext.sampling_probs(x, backend=backend, strict=True)
        assert probs.dtype == torch.float32 and probs.shape == (0, vocab)
        # With every optional tensor present (all of length B = 0).
        full = dict(
            bias=torch.zeros(2, vocab),
            positions=torch.zeros(0, dtype=torch.int64),
            alpha=torch.zeros(0),
            temperature=torch.zeros(0),
            top_p=torch.zeros(0),
        )
        tokens, valid = tsdi_ext.sample(
            x.half(),
            seed=torch.zeros(0, dtype=torch.int64),
            offset=torch.zeros(0, dtype=torch.int64),
            backend=backend,
            **full,
        )
        assert tokens.shape == (0,) and tokens.dtype == torch.int64 and valid.dtype == torch.bool
        assert tsdi_ext.sampling_probs(x.half(), backend=backend, **full).shape == (0, vocab)


STRICT_CASES = {
    "nan": (
        lambda x: (x.index_put_((torch.tensor(1), torch.tensor(4)), torch.tensor(math.nan)), {}),
        r"row 1 cannot be sampled: its debiased logits contain NaN or \+inf",
    ),
    "pos_inf": (
        lambda x: (x.index_put_((torch.tensor(2), torch.tensor(0)), torch.tensor(math.inf)), {}),
        r"row 2 cannot be sampled: its debiased logits contain NaN or \+inf",
    ),
    "all_masked": (
        lambda x: (x.index_fill_(0, torch.tensor([1]), -math.inf), {}),
        r"row 1 cannot be sampled: all of its debiased logits are -inf",
    ),
    "negative_temperature": (
        lambda x: (x, dict(temperature=torch.tensor([1.0, -0.5, 1.0]))),
        r"row 1 cannot be sampled: its temperature is negative or NaN",
    ),
    "nan_temperature": (
        lambda x: (x, dict(temperature=torch.tensor([1.0, 1.0, math.nan]))),
        r"row 2 cannot be sampled: its temperature is negative or NaN",
    ),
    "nan_top_p": (
        lambda x: (x, dict(top_p=torch.tensor([math.nan, 0.9, 0.9]))),
        r"row 0 cannot be sampled: its top_p is NaN or outside \[0, 1\]",
    ),
    "top_p_above_one": (
        lambda x: (x, dict(top_p=torch.tensor([0.9, 1.5, 0.9]))),
        r"row 1 cannot be sampled: its top_p is NaN or outside \[0, 1\]",
    ),
    "negative_top_p": (
        lambda x: (x, dict(top_p=torch.tensor([0.9, 0.9, -1e-6]))),
        r"row 2 cannot be sampled: its top_p is NaN or outside \[0, 1\]",
    ),
    "negative_position": (
        lambda x: (x, dict(bias=table(), positions=torch.tensor([0, -1, 9]))),
        r"row 1 cannot be sampled: its position is negative",
    ),
    "bias_makes_pos_inf": (
        # Row 1 reads table row 0, whose -inf entry becomes +inf; rows 0 and 2 are past the table.
        lambda x: (
            x,
            dict(
                bias=torch.zeros(1, V).index_fill_(1, torch.tensor([5]), -math.inf),
                positions=torch.tensor([1, 0, 4]),
            ),
        ),
        r"row 1 cannot be sampled: its debiased logits contain NaN or \+inf",
    ),
}


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("fn", API)
@pytest.mark.parametrize("case", list(STRICT_CASES), ids=list(STRICT_CASES))
def test_strict_names_invalid_rows(fn, case, backend):
    build, message = STRICT_CASES[case]
    x, kwargs = build(logits())
    with pytest.raises(
        ValueError, match=r"^tsdi_ext: 1 invalid row\(s\) with strict=True: " + message
    ):
        fn(x, strict=True, backend=backend, **kwargs)
    # Without strict the same call returns, with the row marked invalid.
    out = fn(x, backend=backend, **kwargs)
    valid = out[1] if isinstance(out, tuple) else out.sum(dim=1) > 0
    assert valid.sum().item() == B - 1


def test_strict_lists_several_rows():
    x = logits()
    x[0, 3] = math.nan
    x[2] = -math.inf
    with pytest.raises(
        ValueError, match=r"2 invalid row\(s\).*row 0 cannot.*NaN.*; row 2 cannot.*-inf"
    ):
        tsdi_ext.sample(x, strict=True)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_strict_accepts_valid_input(backend):
    x = logits()
    kwargs = dict(
        bias=table(),
        positions=positions(),
        alpha=torch.tensor([0.5, 1.0, 2.0]),
        temperature=torch.tensor([0.0, 1.0, 1e-3]),
        top_p=0.9,
    )
    tokens, valid = tsdi_ext.sample(x, seed=4, offset=5, strict=True, backend=backend, **kwargs)
    assert bool(valid.all())
    assert torch.equal(tokens, tsdi_ext.sample(x, seed=4, offset=5, backend=backend, **kwargs)[0])
    probs = tsdi_ext.sampling_probs(x, strict=True, backend=backend, **kwargs)
    assert torch.equal(probs, tsdi_ext.sampling_probs(x, backend=backend, **kwargs))


def test_non_contiguous_positions_are_accepted():
    x = logits()
    strided = torch.tensor([0, 9, 2, 9, 7, 9], dtype=torch.int64)[::2]
    assert not strided.is_contiguous()
    for backend in ("torch", "auto"):
        got = tsdi_ext.sampling_probs(x, bias=table(), positions=strided, backend=backend)
        want = tsdi_ext.sampling_probs(
            x, bias=table(), positions=strided.contiguous(), backend=backend
        )
        assert torch.equal(got, want)


def test_non_contiguous_bias_is_rejected_clearly():
    # Documented: bias must be contiguous on the fused backends.
    bias = torch.randn(V, 4).t()
    with pytest.raises(ValueError, match=r"^tsdi_ext: bias must be contiguous"):
        tsdi_ext.sample(logits(), bias=bias, positions=positions())


# Raw dispatcher ops: the C++ checks are the safety net behind the Python front end.
def raw_sample(x, bias=None, positions=None, **row):
    return torch.ops.tsdi_ext.sample.default(x, bias, positions, *raw_row_args(**row))


def raw_probs(x, bias=None, positions=None, **row):
    return torch.ops.tsdi_ext.sampling_probs.default(x, bias, positions, *raw_row_args(**row))


RAW_BAD = {
    "logits_1d": (
        lambda: raw_sample(torch.randn(V)),
        ValueError,
        r"logits must be \[B, V\], got shape \[11\]",
    ),
    "logits_3d": (
        lambda: raw_probs(torch.randn(2, B, V)),
        ValueError,
        r"logits must be \[B, V\], got shape \[2, 3, 11\]",
    ),
    "logits_float64": (
        lambda: raw_sample(logits().double()),
        TypeError,
        r"logits must be float32, float16 or bfloat16",
    ),
    "logits_int64": (
        lambda: raw_probs(torch.zeros(B, V, dtype=torch.int64)),
        TypeError,
        r"logits must be float32",
    ),
    "empty_vocab": (
        lambda: raw_sample(torch.zeros(B, 0)),
        ValueError,
        r"logits have an empty vocabulary",
    ),
    "bias_vocab_mismatch": (
        lambda: raw_sample(logits(), torch.zeros(V - 1)),
        ValueError,
        r"bias has vocabulary size 10 but logits have 11",
    ),
    "bias_3d": (
        lambda: raw_probs(logits(), torch.zeros(1, 2, V), positions()),
        ValueError,
        r"bias must be \[V\] or \[L, V\]",
    ),
    "bias_float16": (
        lambda: raw_sample(logits(), torch.zeros(V, dtype=torch.float16)),
        TypeError,
        r"bias must be float32",
    ),
    "table_without_positions": (
        lambda: raw_probs(logits(), table()),
        ValueError,
        r"positions \(\[B\] int64\) are required",
    ),
    "positions_wrong_length": (
        lambda: raw_sample(logits(), table(), torch.zeros(B + 3, dtype=torch.int64)),
        ValueError,
        r"positions must be a Python scalar or a \[B\] tensor with B = 3",
    ),
    "positions_int32": (
        lambda: raw_probs(logits(), table(), positions().int()),
        TypeError,
        r"positions must have dtype",
    ),
    "temperature_wrong_length": (
        lambda: raw_sample(logits(), temperature=torch.ones(1)),
        ValueError,
        r"temperature must be a Python scalar or a \[B\] tensor with B = 3",
    ),
    "seed_int32": (
        lambda: raw_sample(logits(), seed=torch.zeros(B, dtype=torch.int32)),
        TypeError,
        r"seed must have dtype",
    ),
    "negative_temperature": (
        lambda: raw_sample(logits(), temperature=-1.0),
        ValueError,
        r"temperature must be >= 0",
    ),
    "nan_top_p": (
        lambda: raw_sample(logits(), top_p=math.nan),
        ValueError,
        r"top_p must be in \[0, 1\], got nan",
    ),
    "top_p_above_one": (
        lambda: raw_probs(logits(), top_p=1.5),
        ValueError,
        r"top_p must be in \[0, 1\], got 1\.5",
    ),
    "infinite_alpha": (
        lambda: raw_probs(logits(), alpha=math.inf),
        ValueError,
        r"alpha must be finite",
    ),
    "alpha_beyond_float32": (
        lambda: raw_sample(logits(), alpha=1e39),
        ValueError,
        r"alpha must be finite",
    ),
    "row_lists_too_short": (
        lambda: torch.ops.tsdi_ext.sample.default(logits(), None, None, [None], [1.0], [0]),
        ValueError,
        r"the per-row arguments are \(alpha, temperature, top_p, top_k, min_p, seed, offset\): "
        r"expected 7 tensors",
    ),
    "row_lists_too_long": (
        lambda: torch.ops.tsdi_ext.sampling_probs.default(
            logits(), None, None, [None] * 6, [1.0] * 4, [0] * 2
        ),
        ValueError,
        r"the per-row arguments are",
    ),
}


@pytest.mark.parametrize("case", list(RAW_BAD), ids=list(RAW_BAD))
def test_raw_ops_reject_bad_inputs(case):
    run, error, message = RAW_BAD[case]
    with pytest.raises(error, match=r"^tsdi_ext: " + message):
        run()
    # TORCH_CHECK_VALUE / TORCH_CHECK_TYPE surface as ValueError / TypeError (not a crash), and
    # the op still works afterwards.
    assert raw_sample(logits())[0].shape == (B,)
