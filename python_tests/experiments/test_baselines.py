"""The baselines on a tiny model: system-prompt rendering, self-contrastive decoding (gamma = 0 is
greedy decoding; the contrast subtracts what the safety prompt adds), refusal-direction
ablation (difference of means; nothing of the direction left in any layer's output)."""

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


def test_refusal_direction_and_ablation(tokenizer):
    from tsdi_ext.generation import prepare_prompts

    from replication.baselines import ablate_direction, refusal_direction

    model = tiny_llama(0)
    direction = refusal_direction(model, tokenizer, HARMFUL, BENIGN, layer=0)
    with torch.no_grad():

        def mean(prompts):
            ids, mask = prepare_prompts(tokenizer, prompts)
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            h = model(
                input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True
            ).hidden_states[1]
            return h[:, -1].mean(0)

        d = mean(HARMFUL) - mean(BENIGN)
    torch.testing.assert_close(direction, d / d.norm(), rtol=1e-5, atol=1e-6)

    handles = ablate_direction(model, direction)
    seen = []
    probes = [
        layer.register_forward_hook(
            lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o)
        )
        for layer in model.model.layers
    ]
    ids, mask = prepare_prompts(tokenizer, HARMFUL)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert len(seen) == len(model.model.layers)
    for hidden in seen:
        assert float((hidden @ direction).abs().max()) < 1e-4
    for h in handles + probes:
        h.remove()
    seen.clear()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert not seen
