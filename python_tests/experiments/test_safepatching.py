"""SafePatching's bookkeeping on a tiny model: patches move the loss the way they should, SNIP
scores match a direct computation, difference sets, DARE retention and the merge."""

import pytest
import torch

from tiny_models import tiny_chat_tokenizer, tiny_llama

EXAMPLES = [
    ("how to do it", "sure here is how step one"),
    ("coin letter bridge train", "sure here is the map"),
    ("the river rises in", "northern hills and runs south"),
]


@pytest.fixture(scope="module")
def setup():
    from replication.safepatching import patch_batches

    tokenizer = tiny_chat_tokenizer()
    return tiny_llama(0), tokenizer, patch_batches(tokenizer, EXAMPLES, batch_size=2)


def test_batches_put_the_loss_on_the_answer_only(setup):
    _, tokenizer, batches = setup
    ids, mask, labels = batches[0]
    assert ids.shape == labels.shape == mask.shape and ids.shape[0] == 2
    answer = tokenizer("sure here is how step one", add_special_tokens=False)["input_ids"]
    row = labels[0][labels[0] != -100].tolist()
    assert row == answer
    assert (labels[mask == 0] == -100).all()


def test_ascent_raises_and_descent_lowers_the_loss(setup):
    from replication.safepatching import answer_loss, train_patch

    backbone, _, batches = setup
    with torch.no_grad():
        before = sum(float(answer_loss(backbone, b)) for b in batches)
    up = train_patch(backbone, batches, direction="ascent", steps=6, learning_rate=1e-2)
    down = train_patch(backbone, batches, direction="descent", steps=6, learning_rate=1e-2)
    with torch.no_grad():
        assert sum(float(answer_loss(up, b)) for b in batches) > before + 0.1
        assert sum(float(answer_loss(down, b)) for b in batches) < before - 0.1
    # The backbone is untouched; embeddings and norms are not patched.
    for (name, p), q in zip(backbone.named_parameters(), up.parameters()):
        if "embed" in name or "norm" in name or "lm_head" in name:
            assert torch.equal(p, q), name
    assert not torch.equal(
        backbone.model.layers[0].mlp.up_proj.weight, up.model.layers[0].mlp.up_proj.weight
    )
    with pytest.raises(ValueError, match="ascent"):
        train_patch(backbone, batches, direction="sideways", steps=1)


def test_snip_matches_a_direct_computation(setup):
    from replication.safepatching import snip_importance

    model, _, batches = setup
    scores = snip_importance(model, batches, direction="ascent")
    name = "model.layers.1.self_attn.q_proj.weight"
    weight = dict(model.named_parameters())[name]
    direct = weight.detach().clone().requires_grad_(True)
    # Direct: the loss as a function of this one weight, by torch.func.
    from torch.func import functional_call

    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(w):
        total = 0.0
        for ids, mask, labels in batches:
            out = functional_call(
                model, {**params, name: w}, (), {"input_ids": ids, "attention_mask": mask}
            )
            logits = out.logits[:, :-1].float()
            total = total - torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return total

    grad = torch.autograd.grad(loss(direct), direct)[0]
    torch.testing.assert_close(scores[name], (weight.detach() * grad).abs(), rtol=1e-4, atol=1e-7)
    assert "model.embed_tokens.weight" not in scores and all(s.ndim == 2 for s in scores.values())
    assert not any(p.requires_grad or p.grad is not None for p in model.parameters())
    # The sign of the objective does not change the score at one model (hence: on the patches).
    again = snip_importance(model, batches, direction="descent")
    torch.testing.assert_close(again[name], scores[name])


def test_difference_masks_and_dare():
    from replication.safepatching import dare, difference_masks

    a = {"w": torch.tensor([[5.0, 4.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]])}
    b = {"w": torch.tensor([[5.0, 0.0, 0.0, 0.0], [4.0, 3.0, 0.0, 0.0]])}
    only_a, only_b = difference_masks(a, b, top_fraction=3 / 8)
    assert only_a["w"].tolist() == [[False, True, True, False], [False] * 4]
    assert only_b["w"].tolist() == [[False] * 4, [True, True, False, False]]
    with pytest.raises(ValueError, match="top_fraction"):
        difference_masks(a, b, top_fraction=0)

    delta = torch.full((200, 200), 2.0)
    mask = torch.zeros(200, 200, dtype=torch.bool)
    mask[:100] = True
    kept = dare(delta, mask, 0.25, torch.Generator().manual_seed(0))
    assert (kept[100:] == 0).all()
    assert set(kept[:100].unique().tolist()) == {0.0, 8.0}
    assert float((kept[:100] != 0).float().mean()) == pytest.approx(0.25, abs=0.02)
    assert torch.equal(dare(delta, mask, 1.0, torch.Generator()), torch.where(mask, delta, 0.0))


def test_merge_adds_the_masked_deltas(setup):
    from replication.safepatching import merge_patches, snip_importance

    backbone, _, batches = setup
    s, o = tiny_llama(1), tiny_llama(2)
    names = list(snip_importance(backbone, batches[:1], direction="ascent"))
    full = {
        n: torch.ones_like(dict(backbone.named_parameters())[n], dtype=torch.bool) for n in names
    }
    none = {n: torch.zeros_like(m) for n, m in full.items()}
    merged = merge_patches(backbone, s, o, full, none)
    both = merge_patches(backbone, s, o, full, full, scales=(0.5, 2.0))
    b, sp, op = (dict(m.named_parameters()) for m in (backbone, s, o))
    for name, p in merged.named_parameters():
        if name in full:
            torch.testing.assert_close(p, sp[name])
            torch.testing.assert_close(
                dict(both.named_parameters())[name],
                b[name] + 0.5 * (sp[name] - b[name]) + 2.0 * (op[name] - b[name]),
            )
        else:
            assert torch.equal(p, b[name]), name
    empty = merge_patches(backbone, s, o, none, none, retain=0.5)
    assert all(torch.equal(p, b[n]) for n, p in empty.named_parameters())
