"""The baselines on a tiny model: system-prompt rendering, self-contrastive decoding (gamma = 0 is
greedy decoding; the contrast subtracts what the safety prompt adds), refusal-direction
ablation (difference of means of layer inputs; the selection's scores recomputed directly;
nothing of the direction left anywhere in the residual stream)."""

import torch

from tsdi_ext.generation import generate

from sweep_data import BENIGN, HARMFUL
from tiny_models import tiny_llama

SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}<s> {{ m['content'] }} "
    "{% else %}<user> {{ m['content'] }} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def system_tokenizer(tokenizer):
    tokenizer.chat_template = SYSTEM_TEMPLATE
    return tokenizer


def test_render_with_system(tokenizer):
    from replication.baselines import render_with_system

    tok = system_tokenizer(tokenizer)
    texts = render_with_system(tok, ["how to do it"], "the river")
    assert texts == ["<s> the river <user> how to do it <assistant>"]


def test_contrastive_decoding_without_contrast_is_greedy(tokenizer):
    from replication.baselines import contrastive_generate

    tok = system_tokenizer(tokenizer)
    model = tiny_llama(0)
    prompts = HARMFUL[:2] + BENIGN[:1]
    plain = generate(model, tok, prompts, max_new_tokens=6).texts
    assert contrastive_generate(model, tok, prompts, gamma=0.0, max_new_tokens=6) == [
        t.strip() for t in plain
    ]


def test_contrastive_decoding_subtracts_the_safety_prompts_push(tokenizer):
    """First token by hand: l_plain - gamma * (l_safety - l_plain)."""
    from replication.baselines import contrastive_generate, render_with_system

    tok = system_tokenizer(tokenizer)
    model = tiny_llama(3)
    prompt, gamma, safety = "coin letter bridge train", 4.0, "sorry cannot help"
    with torch.no_grad():
        plain = model(
            **tok(
                tok.apply_chat_template(
                    [{"role": "user", "content": prompt}],
                    tokenize=False,
                    add_generation_prompt=True,
                ),
                return_tensors="pt",
                add_special_tokens=False,
            )
        ).logits[0, -1]
        safe = model(
            **tok(
                render_with_system(tok, [prompt], safety)[0],
                return_tensors="pt",
                add_special_tokens=False,
            )
        ).logits[0, -1]
    expected = int((plain - gamma * (safe - plain)).argmax())
    got = contrastive_generate(
        model, tok, [prompt], gamma=gamma, safety_system=safety, max_new_tokens=1
    )
    assert got == [tok.decode([expected], skip_special_tokens=True).strip()]


def _layer_inputs(model, tokenizer, prompts):
    from tsdi_ext.generation import prepare_prompts

    ids, mask = prepare_prompts(tokenizer, prompts)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(
            input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True
        ).hidden_states


def test_refusal_direction_is_the_difference_of_mean_layer_inputs(tokenizer):
    from replication.baselines import candidate_directions, refusal_direction

    model = tiny_llama(0)
    direction = refusal_direction(model, tokenizer, HARMFUL, BENIGN, layer=1)
    d = _layer_inputs(model, tokenizer, HARMFUL)[1][:, -1].mean(0) - _layer_inputs(
        model, tokenizer, BENIGN
    )[1][:, -1].mean(0)
    torch.testing.assert_close(direction, d / d.norm(), rtol=1e-5, atol=1e-6)
    raw = candidate_directions(model, tokenizer, HARMFUL, BENIGN, positions=2)
    assert raw.shape == (len(model.model.layers), 2, model.config.hidden_size)
    torch.testing.assert_close(raw[1, -1], d, rtol=1e-5, atol=1e-6)
    # The last prompt token is always <assistant>: its embeddings agree, no direction there.
    assert float(raw[0, -1].norm()) < 1e-6


def test_ablation_keeps_the_direction_out_of_the_whole_residual_stream(tokenizer):
    from tsdi_ext.generation import prepare_prompts

    from replication.baselines import ablate_direction, refusal_direction

    model = tiny_llama(0)
    direction = refusal_direction(model, tokenizer, HARMFUL, BENIGN, layer=1)
    handles = ablate_direction(model, direction)
    seen = []

    def record(module, args):
        seen.append(args[0])

    # What every layer's attention and MLP read (their norms' inputs), so a write that was not
    # projected (say the attention output, read by the MLP of the same layer) is caught.
    probes = []
    for layer in model.model.layers:
        probes.append(layer.input_layernorm.register_forward_pre_hook(record))
        probes.append(layer.post_attention_layernorm.register_forward_pre_hook(record))
    probes.append(model.model.norm.register_forward_pre_hook(record))
    ids, mask = prepare_prompts(tokenizer, HARMFUL)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert len(seen) == 2 * len(model.model.layers) + 1
    for hidden in seen:
        assert float((hidden @ direction).abs().max()) < 1e-4
    for h in handles + probes:
        h.remove()
    assert float((_layer_inputs(model, tokenizer, HARMFUL)[1] @ direction).abs().max()) > 1e-3


def test_direction_selection_scores_and_filters(tokenizer):
    from replication.baselines import (
        ablate_direction,
        candidate_directions,
        hooked,
        select_refusal_direction,
    )

    model = tiny_llama(0)
    sorry = tokenizer.convert_tokens_to_ids(["sorry", "i"])
    choice = select_refusal_direction(
        model,
        tokenizer,
        HARMFUL,
        BENIGN,
        HARMFUL[::-1],
        BENIGN[::-1],
        opening_ids=sorry,
        positions=2,
        max_layer_fraction=0.5,
    )
    # Layers below 0.5 * 2 only; the zero candidate (layer 0, last token) is skipped.
    assert {(s["layer"], s["position"]) for s in choice.scores} == {(0, -2)}
    raw = candidate_directions(model, tokenizer, HARMFUL, BENIGN, positions=2)
    torch.testing.assert_close(choice.direction, raw[0, -2] / raw[0, -2].norm())

    # The bypass score, recomputed directly: the refusal margin on harmful prompts, ablated.
    opening = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    opening[sorry] = True
    with hooked(ablate_direction(model, choice.direction)):
        logits = _last_logits(model, tokenizer, HARMFUL[::-1])
    logp = torch.log_softmax(logits, -1)
    margin = torch.logsumexp(logp[:, opening], -1) - torch.logsumexp(logp[:, ~opening], -1)
    assert abs(choice.scores[0]["bypass"] - float(margin.mean())) < 1e-3

    def every_layer(kl_limit):
        return select_refusal_direction(
            model,
            tokenizer,
            HARMFUL,
            BENIGN,
            HARMFUL,
            BENIGN,
            opening_ids=sorry,
            positions=2,
            max_layer_fraction=1.0,
            kl_limit=kl_limit,
        )

    everything = every_layer(1e9)
    assert len(everything.scores) == 3
    with_induce = [s for s in everything.scores if s["induce"] > 0]
    best = min(with_induce or everything.scores, key=lambda s: s["bypass"])
    assert (everything.layer, everything.position) == (best["layer"], best["position"])
    assert (
        everything.filters_met == ("induce > 0, " if with_induce else "") + f"kl < {1e9:g}, layer"
    )

    # No candidate within the KL limit: the least relaxed limit that keeps one.
    lowest = min(s["kl"] for s in everything.scores)
    assert lowest > 0
    strict = every_layer(lowest / 3)
    assert strict.filters_met.startswith(("induce > 0, kl < ", "kl < "))
    limit = float(strict.filters_met.split("kl < ")[1].split(",")[0])
    chosen = next(
        s for s in strict.scores if (s["layer"], s["position"]) == (strict.layer, strict.position)
    )
    assert chosen["kl"] < limit


def _last_logits(model, tokenizer, prompts):
    from tsdi_ext.generation import prepare_prompts

    ids, mask = prepare_prompts(tokenizer, prompts)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()
