"""Property tests (hypothesis): arbitrary shapes, dtypes, special values and parameters never crash
the fused CPU backend, and its outputs keep the invariants of the contract (see
tsdi_ext/reference.py): tokens in range, invalid rows with token 0 and all-zero probabilities,
valid rows with a normalised distribution that contains the drawn token, and the same validity as
the pure-PyTorch reference (backend="torch")."""

import math
import platform

import pytest
import torch

import tsdi_ext
from tsdi_ext.ops import reference

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
HUGE = 1e30  # clamped to the dtype's range (float16: 65504)
SPECIALS = [math.nan, math.inf, -math.inf, HUGE, -HUGE, 0.0]

FUZZ_SETTINGS = settings(
    max_examples=800,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Per-row float32 values: anything, NaN and infinities included.
any_float32 = st.one_of(
    st.sampled_from(
        [0.0, -0.0, 1e-45, 1e-30, 1.0, -1.0, 1e30, -1e30, math.inf, -math.inf, math.nan]
    ),
    st.floats(width=32),
)
int64 = st.one_of(
    st.sampled_from([0, 1, -1, INT64_MIN, INT64_MAX]), st.integers(INT64_MIN, INT64_MAX)
)


def with_specials(draw, values, specials_pool, max_size):
    """Writes special values at drawn positions of ``values`` (float32, any shape), in place."""
    flat = values.view(-1)
    if flat.numel() == 0:
        return values
    hits = draw(
        st.lists(
            st.tuples(st.integers(0, flat.numel() - 1), st.sampled_from(specials_pool)),
            max_size=max_size,
        )
    )
    for index, value in hits:
        flat[index] = value
    return values


def per_row_or_scalar(draw, batch, scalar_strategy, row_strategy, dtype=torch.float32):
    if draw(st.booleans()):
        return draw(scalar_strategy)
    values = draw(st.lists(row_strategy, min_size=batch, max_size=batch))
    return torch.tensor(values, dtype=dtype).reshape(batch)


@st.composite
def cases(draw):
    batch = draw(st.integers(0, 9))
    vocab = draw(st.integers(1, 300))
    dtype = draw(st.sampled_from(DTYPES))
    finfo = torch.finfo(dtype)
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))

    scale = draw(st.sampled_from([0.0, 1e-3, 1.0, 30.0, 1e4]))
    x = torch.randn(batch, vocab, generator=generator) * scale
    x = with_specials(draw, x, SPECIALS, max_size=12)
    for row, value in draw(
        st.lists(
            st.tuples(st.integers(0, max(batch - 1, 0)), st.sampled_from(SPECIALS)), max_size=2
        )
    ):
        if batch:
            x[row] = value  # whole rows of -inf, NaN, ...
    # Huge finite values (and randn * 1e4 in float16) are clamped to the dtype's range; infinities
    # and NaN stay as they are.
    x = torch.where(torch.isinf(x), x, x.clamp(-finfo.max, finfo.max)).to(dtype)
    layout = draw(st.sampled_from(["contiguous", "row_strided", "transposed"]))
    if layout == "row_strided":
        wide = torch.zeros(batch, vocab + 3, dtype=dtype)
        wide[:, 1 : vocab + 1] = x
        x = wide[:, 1 : vocab + 1]
    elif layout == "transposed":
        x = x.t().contiguous().t()
    kwargs = {}

    bias_kind = draw(st.sampled_from([None, "vector", "table"]))
    table_rows = draw(st.integers(0, 4))
    if bias_kind is not None:
        shape = (vocab,) if bias_kind == "vector" else (table_rows, vocab)
        bias = torch.randn(shape, generator=generator) * draw(st.sampled_from([0.0, 1.0, 100.0]))
        kwargs["bias"] = with_specials(draw, bias, SPECIALS, max_size=4)
    if bias_kind == "table" or draw(st.booleans()):
        position = st.one_of(
            st.integers(-3, table_rows + 3), st.sampled_from([INT64_MIN, INT64_MAX])
        )
        kwargs["positions"] = torch.tensor(
            draw(st.lists(position, min_size=batch, max_size=batch)), dtype=torch.int64
        ).reshape(batch)

    # Scalars are drawn from float32 values (the kernels read them as float32): finite doubles
    # beyond the float32 range crash the reference, see test_reference_accepts_huge_scalars.
    kwargs["alpha"] = per_row_or_scalar(
        draw, batch, st.floats(allow_nan=False, allow_infinity=False, width=32), any_float32
    )
    kwargs["temperature"] = per_row_or_scalar(
        draw,
        batch,
        st.one_of(
            st.sampled_from([0.0, 1e-45, 1e-30, 1e-6, 1.0, 1e30, 3e38, math.inf]),
            st.floats(0.0, 100.0),
            st.floats(min_value=0.0, width=32),
        ),
        any_float32,
    )
    # A scalar top_p outside [0, 1] is an argument error (test_errors.py); per-row values may be
    # anything (an invalid row).
    kwargs["top_p"] = per_row_or_scalar(
        draw,
        batch,
        st.one_of(st.sampled_from([0.0, 1e-45, 1.0]), st.floats(0.0, 1.0, width=32)),
        st.one_of(any_float32, st.floats(0.0, 1.0, width=32)),
    )
    kwargs["seed"] = per_row_or_scalar(
        draw, batch, st.integers(INT64_MIN, 2**64 - 1), int64, dtype=torch.int64
    )
    kwargs["offset"] = per_row_or_scalar(
        draw, batch, st.integers(INT64_MIN, 2**64 - 1), int64, dtype=torch.int64
    )
    return x, kwargs


def without_draw_args(kwargs):
    return {k: v for k, v in kwargs.items() if k not in ("seed", "offset")}


@FUZZ_SETTINGS
@given(cases())
def test_fused_cpu_invariants(case):
    logits, kwargs = case
    batch, vocab = logits.shape

    tokens, valid = tsdi_ext.sample(logits, backend="cpu", **kwargs)
    assert tokens.dtype == torch.int64 and tokens.shape == (batch,)
    assert valid.dtype == torch.bool and valid.shape == (batch,)
    assert bool(((tokens >= 0) & (tokens < vocab)).all()), tokens
    assert bool((tokens[~valid] == 0).all()), "invalid rows must have token 0"

    probs = tsdi_ext.sampling_probs(logits, backend="cpu", **without_draw_args(kwargs))
    assert probs.dtype == torch.float32 and probs.shape == (batch, vocab)
    assert not bool(torch.isnan(probs).any()), "NaN probabilities"
    assert bool((probs >= 0).all()), "negative probabilities"
    zero_rows = (probs == 0).all(dim=1)
    assert torch.equal(zero_rows, ~valid), "all-zero probability rows must be the invalid rows"
    sums = probs[valid].double().sum(dim=1)
    assert bool(((sums - 1).abs() <= 1e-4).all()), sums
    if batch:
        drawn = probs.gather(1, tokens[:, None]).squeeze(1)
        assert bool((drawn[valid] > 0).all()), "a valid row drew a token outside its nucleus"

    ref_tokens, ref_valid = tsdi_ext.sample(logits, backend="torch", **kwargs)
    assert ref_tokens.dtype == torch.int64 and ref_tokens.shape == (batch,)
    assert torch.equal(valid, ref_valid), (valid, ref_valid)


@FUZZ_SETTINGS
@given(cases())
def test_reference_invariants(case):
    """The reference keeps the same invariants (it is the oracle of the other tests)."""
    logits, kwargs = case
    batch, vocab = logits.shape
    tokens, valid = tsdi_ext.sample(logits, backend="torch", **kwargs)
    assert bool(((tokens >= 0) & (tokens < vocab)).all())
    assert bool((tokens[~valid] == 0).all())
    probs = tsdi_ext.sampling_probs(logits, backend="torch", **without_draw_args(kwargs))
    assert probs.shape == (batch, vocab) and probs.dtype == torch.float32
    assert torch.equal((probs == 0).all(dim=1), ~valid)
    assert bool((probs[valid] >= 0).all())
    assert bool(((probs[valid].double().sum(dim=1) - 1).abs() <= 1e-4).all())
    if batch:
        assert bool((probs.gather(1, tokens[:, None]).squeeze(1)[valid] > 0).all())


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_alpha_beyond_float32_is_an_error_on_every_backend(backend):
    # Scalars are rounded to float32 once, in the front end: 1e300 becomes inf, and alpha must be
    # finite.
    with pytest.raises(ValueError, match="alpha must be finite"):
        tsdi_ext.sample(torch.randn(2, 9), bias=torch.randn(9), alpha=1e300, backend=backend)


@pytest.mark.parametrize(
    "params",
    [dict(temperature=1e300), dict(temperature=3.5e38)],
    ids=["temperature", "temperature_above_max"],
)
def test_reference_accepts_huge_scalars(params):
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    logits[1, 7] = -math.inf
    bias = torch.randn(50, generator=torch.Generator().manual_seed(1))
    fused_tokens, fused_valid = tsdi_ext.sample(logits, bias=bias, backend="cpu", **params)
    fused_probs = tsdi_ext.sampling_probs(logits, bias=bias, backend="cpu", **params)
    ref_tokens, ref_valid = tsdi_ext.sample(logits, bias=bias, backend="torch", **params)
    ref_probs = tsdi_ext.sampling_probs(logits, bias=bias, backend="torch", **params)
    assert torch.equal(fused_valid, ref_valid)
    assert torch.equal(fused_probs > 0, ref_probs > 0)


def _cpu_has_fma():
    if platform.machine() not in ("x86_64", "AMD64"):
        return True  # aarch64 and others: FMA is part of the base ISA and GCC contracts by default
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return " fma" in cpuinfo.read()
    except OSError:
        return True


def test_debias_rounding_matches_reference():
    # Regression: GCC contracted d = logit - alpha * bias into a fused multiply-add (one rounding)
    # until the build passed -ffp-contract=off; the contract rounds alpha * bias first.
    # 1) Overflow: alpha * bias = 2 * -3e38 is -inf in float32, so d[3] = -3e38 - (-inf) = +inf and
    #    the row is invalid (reference); with an FMA, d[3] = -3e38 + 6e38 = 3e38 is finite.
    logits = torch.zeros(1, 40)
    logits[0, 3] = -3e38
    bias = torch.zeros(40)
    bias[3] = -3e38
    # 2) A tie in d: with alpha = 0.7 both entries round to the same d in float32 (multiply, round,
    #    subtract, round), so greedy takes index 0; a single rounding makes d[1] larger.
    ties = torch.tensor([[0.64042264, 0.64001966]])
    tie_bias = torch.tensor([5.963654, 5.963078])
    d, _ = reference.debiased_logits(ties, tie_bias, None, 0.7)
    assert float(d[0, 0]) == float(d[0, 1])

    def outcome(backend):
        return (
            tsdi_ext.sample(logits, bias=bias, alpha=2.0, backend=backend)[1].tolist(),
            tsdi_ext.sample(ties, bias=tie_bias, alpha=0.7, temperature=0.0, backend=backend)[
                0
            ].tolist(),
            tsdi_ext.sampling_probs(
                ties, bias=tie_bias, alpha=0.7, temperature=0.0, backend=backend
            ).tolist(),
        )

    assert outcome("torch") == ([False], [0], [[1.0, 0.0]])
    assert outcome("cpu") == outcome("torch")
