"""Input generators shared by the tests."""

import torch


def make_logits(batch, vocab, *, kind="normal", dtype=torch.float32, device="cpu", seed=0):
    """[batch, vocab] logits of a named shape of distribution.

    normal: N(0, 1) (flat: large nuclei); peaked: N(0, 4) (small nuclei); ties: integers in
    [0, 4) (many exact ties); masked: peaked with 90% of entries -inf.
    """
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        x = torch.randn(batch, vocab, generator=g)
    elif kind == "peaked":
        x = torch.randn(batch, vocab, generator=g) * 4
    elif kind == "ties":
        x = torch.randint(0, 4, (batch, vocab), generator=g).float()
    elif kind == "masked":
        x = torch.randn(batch, vocab, generator=g) * 4
        mask = torch.rand(batch, vocab, generator=g) < 0.9
        if vocab > 0:
            mask[:, 0] = False  # keep every row samplable
        x = x.masked_fill(mask, float("-inf"))
    else:
        raise ValueError(kind)
    return x.to(dtype).to(device)
