"""A batch of fewer rows than threads on a large vocabulary: the CPU kernel splits each row over the
threads (passes 1 and 2 in chunks of the row, docs/cpu_kernel.md). The outputs must be those of the
same row on one thread, bit for bit: tokens, validity and log-probabilities, for every dtype, a
bias, every filter, greedy and invalid rows (a NaN, +inf or an all -inf row reaching the chunk
boundaries)."""

import pytest
import torch

import tsdi_ext
from tsdi_ext.ops import _native

pytestmark = [
    pytest.mark.skipif(not _native.native_available(), reason="no native extension"),
    pytest.mark.skipif(torch.get_num_threads() < 2, reason="one thread: nothing to split over"),
]

CHUNK = 16384  # detail::kSumChunk


def on_one_thread(fn):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def rows(vocab, dtype):
    g = torch.Generator().manual_seed(vocab)
    logits = torch.randn(6, vocab, generator=g) * torch.tensor([[0.5], [1], [2], [4], [6], [2]])
    logits[5, -3] = 40.0  # the maximum in the last chunk
    return logits.to(dtype)


@pytest.mark.parametrize("vocab", [32000, 3 * CHUNK, 100003])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "filters",
    [
        dict(top_p=0.9),
        dict(top_p=1.0),
        dict(top_k=50, top_p=0.9, min_p=0.05),
        dict(min_p=0.2),
    ],
    ids=["top_p", "none", "all", "min_p"],
)
def test_split_rows_match_one_thread(vocab, dtype, filters):
    logits = rows(vocab, dtype)
    bias = torch.randn(vocab, generator=torch.Generator().manual_seed(1)) * 0.3
    for row in range(logits.shape[0]):
        one = logits[row : row + 1]
        for seed in range(8):

            def call():
                return tsdi_ext.sample(
                    one,
                    bias=bias,
                    alpha=0.7,
                    temperature=0.8,
                    seed=seed,
                    offset=row,
                    return_logprobs=True,
                    **filters,
                )

            split, single = call(), on_one_thread(call)
            for got, want in zip(split, single):
                assert torch.equal(got, want), (row, seed, split, single)


@pytest.mark.parametrize("where", [0, CHUNK - 1, CHUNK, 2 * CHUNK + 5, 100002])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_split_rows_invalid_anywhere(where, value):
    logits = torch.randn(1, 100003)
    logits[0, where] = value
    out = tsdi_ext.sample(logits, temperature=0.8, top_p=0.9, return_logprobs=True)
    assert not bool(out.valid[0]) and int(out.tokens[0]) == 0
    assert bool(out.logprob.isnan().all()) and bool(out.unfiltered_logprob.isnan().all())


def test_split_rows_all_masked_and_greedy():
    logits = torch.full((1, 100003), float("-inf"))
    assert not bool(tsdi_ext.sample(logits, temperature=0.8)[1][0])
    logits[0, 2 * CHUNK + 7] = 0.0  # one finite value, in the third chunk
    tokens, valid = tsdi_ext.sample(logits, temperature=0.8, top_p=0.5)
    assert bool(valid[0]) and int(tokens[0]) == 2 * CHUNK + 7
    logits = torch.randn(1, 100003)
    logits[0, [CHUNK + 3, 3 * CHUNK + 1]] = 9.0  # a tie across chunks: the first wins
    assert int(tsdi_ext.sample(logits, temperature=0.0)[0][0]) == CHUNK + 3


def test_split_rows_statistics_follow_the_row():
    """Tokens drawn from one split row over many offsets follow sampling_probs (a chi-square-free
    check: every token drawn is kept, and the drawn frequency of the most likely tokens is near
    their probability)."""
    logits = torch.randn(1, 100003) * 3
    probs = tsdi_ext.sampling_probs(logits, temperature=0.8, top_p=0.9)[0]
    draws = torch.stack(
        [
            tsdi_ext.sample(logits, temperature=0.8, top_p=0.9, seed=3, offset=k)[0][0]
            for k in range(2000)
        ]
    )
    assert bool((probs[draws] > 0).all())
    top = int(probs.argmax())
    frequency = float((draws == top).float().mean())
    assert abs(frequency - float(probs[top])) < 4 * (float(probs[top]) / 2000) ** 0.5 + 1e-3
