"""The reference's own semantics, on inputs small enough to check by hand."""

import math

import pytest
import torch

import tsdi_ext
from tsdi_ext import _C
from tsdi_ext.ops import reference

# Random123's published known-answer vectors for Philox4x32-10.
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter,key,expected", PHILOX_KAT)
def test_philox_known_answers(counter, key, expected):
    got = reference.philox4x32_10(torch.tensor([counter]), torch.tensor([key]))[0].tolist()
    assert got == list(expected)
    assert _C.philox4x32_10(list(counter), list(key)) == list(expected)


def test_uniform_same_in_python_and_cpp():
    seeds = torch.tensor([0, 1, -1, 2**62, -(2**63), 123456789], dtype=torch.int64)
    offsets = torch.tensor([0, 7, 2**40, -5, 3, 2**63 - 1], dtype=torch.int64)
    u = reference.uniform(seeds, offsets)
    for s, o, value in zip(seeds.tolist(), offsets.tolist(), u.tolist()):
        assert value == _C.uniform(s % 2**64, o % 2**64)
        assert 0.0 <= value < 1.0


def test_nucleus_keeps_ties_at_threshold():
    # p = [0.4, 0.2, 0.2, 0.2]: top_p = 0.5 crosses at the first 0.2, so all three 0.2s stay.
    logits = torch.log(torch.tensor([[0.4, 0.2, 0.2, 0.2]]))
    probs = reference.sampling_probs(logits, top_p=0.5)
    assert (probs > 0).tolist() == [[True, True, True, True]]
    probs = reference.sampling_probs(logits, top_p=0.4)
    assert (probs > 0).tolist() == [[True, False, False, False]]


def test_top_p_limits_and_greedy():
    logits = torch.tensor([[1.0, 3.0, 3.0, 2.0]])
    assert (reference.sampling_probs(logits, top_p=1.0) > 0).all()
    # top_p <= 0 keeps the maximum with its ties; greedy takes the first argmax.
    assert (reference.sampling_probs(logits, top_p=0.0) > 0).tolist() == [
        [False, True, True, False]
    ]
    tokens, valid = reference.sample(logits, temperature=0.0)
    assert tokens.tolist() == [1] and valid.tolist() == [True]
    assert reference.sampling_probs(logits, temperature=0.0).tolist() == [[0.0, 1.0, 0.0, 0.0]]


def test_bias_positions_and_table_end():
    logits = torch.zeros(3, 4)
    bias = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0]])  # L = 2
    positions = torch.tensor([0, 1, 2])
    d, bad = reference.debiased_logits(logits, bias, positions, alpha=1.0)
    assert d.tolist() == [[-5, 0, 0, 0], [0, -5, 0, 0], [0, 0, 0, 0]]
    assert not bad.any()
    # A row beyond the table ignores alpha entirely, even a NaN one.
    d, _ = reference.debiased_logits(
        logits, bias, positions, alpha=torch.tensor([1.0, 1.0, math.nan])
    )
    assert not torch.isnan(d[2]).any()


def test_invalid_rows_statuses():
    logits = torch.tensor(
        [
            [0.0, math.nan, 1.0],
            [0.0, math.inf, 1.0],
            [-math.inf, -math.inf, -math.inf],
            [0.0, 1.0, 2.0],
            [0.0, 1.0, 2.0],
        ]
    )
    temperature = torch.tensor([1.0, 1.0, 1.0, -1.0, 1.0])
    top_p = torch.tensor([1.0, 1.0, 1.0, 1.0, math.nan])
    d, bad = reference.debiased_logits(logits)
    status = reference.row_status(d, bad, temperature, top_p).tolist()
    assert status == [
        reference.ROW_NON_FINITE,
        reference.ROW_NON_FINITE,
        reference.ROW_ALL_MASKED,
        reference.ROW_BAD_TEMPERATURE,
        reference.ROW_BAD_TOP_P,
    ]
    tokens, valid = tsdi_ext.sample(logits, temperature=temperature, top_p=top_p, backend="torch")
    assert tokens.tolist() == [0] * 5 and not valid.any()
    probs = tsdi_ext.sampling_probs(logits, temperature=temperature, top_p=top_p, backend="torch")
    assert (probs == 0).all()


def test_infinite_and_tiny_temperature():
    logits = torch.tensor([[0.0, 1.0, -math.inf, 1.0]])
    uniform = reference.sampling_probs(logits, temperature=math.inf)
    assert torch.allclose(uniform, torch.tensor([[1 / 3, 1 / 3, 0.0, 1 / 3]]))
    tiny = reference.sampling_probs(logits, temperature=1e-40)
    assert torch.allclose(tiny, torch.tensor([[0.0, 0.5, 0.0, 0.5]]))
