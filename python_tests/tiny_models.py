"""Tiny randomly initialised causal LMs and a word-level tokenizer with a chat template, built in
memory: TSDI's pipeline tests need no model files."""

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SPECIAL = ["<pad>", "<s>", "</s>", "<user>", "<assistant>"]
WORDS = (
    "the a an river rises in northern hills and runs south sea farmers grow wheat barley beans "
    "i sorry cannot help with that sure here is how to do it step one two three water light "
    "energy school garden map coin letter bridge train music poem recipe flour egg sugar milk"
).split()
CHAT_TEMPLATE = (
    "{% for m in messages %}<user> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=["<user>", "<assistant>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_llama(seed: int = 0, vocab_size: int | None = None) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size or len(SPECIAL) + len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(SPECIAL) + len(WORDS),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


def prefer_token(model, token_id: int, boost: float):
    """Makes ``model`` prefer ``token_id`` by ``boost`` logits in every context (a stand-in for the
    refusal preference safety alignment leaves). Returns the hook handle."""

    def hook(module, inputs, output):
        output = output.clone()
        output[..., token_id] += boost
        return output

    return model.get_output_embeddings().register_forward_hook(hook)


# A role-aware template: the prompt rendered with add_generation_prompt=True is a prefix of the
# prompt + assistant answer rendered together (what trl's prompt-completion SFT needs).
ROLE_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<assistant> {{ m['content'] }} </s> "
    "{% else %}<user> {{ m['content'] }} {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def tiny_chat_tokenizer() -> PreTrainedTokenizerFast:
    """:func:`tiny_tokenizer` with :data:`ROLE_CHAT_TEMPLATE` (renders user and assistant turns)."""
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = ROLE_CHAT_TEMPLATE
    return tokenizer
