"""A user's mistakes in the library API get a clear error (what was given, what is accepted), and
nothing is lost or silently wrong: bias files, generate(), the transformers integration, model
names, seeds and streaming."""

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, TextIteratorStreamer

import tsdi_ext
from tsdi_ext.bias import BiasFileError, BiasTable, estimate_bias
from tsdi_ext.generation import generate, prepare_prompts
from tsdi_ext.hf import TSDILogitsProcessor, tsdi_generate
from tsdi_ext.models import ModelNotFoundError, resolve

from tiny_models import prefer_token, tiny_llama, tiny_tokenizer

PROMPTS = ["the river rises in northern hills", "farmers grow wheat"]


@pytest.fixture(scope="module")
def model():
    return tiny_llama(0)


@pytest.fixture
def table(tokenizer):
    from tsdi_ext.bias import tokenizer_hash

    bias = torch.randn(3, len(tokenizer), generator=torch.Generator().manual_seed(0))
    return BiasTable(bias, {"tokenizer_hash": tokenizer_hash(tokenizer), "aligned_model": "x"})


# ------------------------------------------------------------------------------- bias files


def test_save_refuses_to_overwrite_unless_told(tmp_path, table):
    path = tmp_path / "b.safetensors"
    table.save(path)
    before = path.read_bytes()
    other = BiasTable(table.bias + 1)
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        other.save(path)
    assert path.read_bytes() == before  # nothing lost
    other.save(path, overwrite=True)
    assert torch.equal(BiasTable.load(path).bias, other.bias)
    with pytest.raises(FileNotFoundError, match="directory .*missing does not exist"):
        table.save(tmp_path / "missing" / "b.safetensors")
    with pytest.raises(FileExistsError, match="not a regular file"):
        table.save(tmp_path, overwrite=True)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_tables_refused_on_save_and_load(tmp_path, table, value):
    bad = table.bias.clone()
    bad[1, 5] = value
    with pytest.raises(BiasFileError, match=r"1 non-finite entries .*position 1, token 5"):
        BiasTable(bad).save(tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()
    # A file written by something else: refused on load.
    path = tmp_path / "foreign_bad.safetensors"
    metadata = {"format": "tsdi_ext.bias/2", "vocab_size": str(bad.shape[1]), "length": "3"}
    save_file({"bias": bad}, str(path), metadata=metadata)
    with pytest.raises(BiasFileError, match="non-finite"):
        BiasTable.load(path)


@pytest.mark.parametrize("key,value", [("length", "4"), ("vocab_size", "55"), ("length", None)])
def test_metadata_must_agree_with_the_tensor(tmp_path, key, value):
    metadata = {"format": "tsdi_ext.bias/2", "vocab_size": "56", "length": "3"}
    if value is None:
        del metadata[key]
    else:
        metadata[key] = value
    path = tmp_path / "b.safetensors"
    save_file({"bias": torch.zeros(3, 56)}, str(path), metadata=metadata)
    with pytest.raises(BiasFileError, match=f"metadata says {key} .* tensor is \\[3, 56\\]"):
        BiasTable.load(path)


def test_metadata_keeps_its_types(tmp_path):
    metadata = {
        "aligned_model": "null",
        "reference_model": "1e5",
        "note": "true",
        "quoted": '"x"',
        "count": 3,
        "ratio": 0.5,
        "nothing": None,
        "settings": {"length": 2, "pool": "corpus"},
    }
    path = tmp_path / "b.safetensors"
    BiasTable(torch.zeros(2, 4), metadata).save(path)
    loaded = BiasTable.load(path).metadata
    for key, value in metadata.items():
        assert loaded[key] == value and type(loaded[key]) is type(value), key
    assert loaded["length"] == 2 and loaded["vocab_size"] == 4
    # Saving what was loaded again keeps everything (the reserved keys are rewritten).
    BiasTable(torch.zeros(2, 4), loaded).save(path, overwrite=True)
    assert BiasTable.load(path).metadata == loaded


def test_format_1_files_still_load(tmp_path):
    path = tmp_path / "old.safetensors"
    metadata = {
        "format": "tsdi_ext.bias/1",
        "tsdi_ext_version": "0.1.0",
        "aligned_model": "smollm2",
        "settings": json.dumps({"length": 2}),
        "vocab_size": "4",
        "length": "2",
    }
    save_file({"bias": torch.ones(2, 4)}, str(path), metadata=metadata)
    table = BiasTable.load(path)
    assert table.metadata["aligned_model"] == "smollm2"
    assert table.metadata["settings"] == {"length": 2} and table.length == 2


def test_not_a_regular_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo, "/dev/null"):
        with pytest.raises(BiasFileError, match="is not a regular file"):
            BiasTable.load(path)
    with pytest.raises(BiasFileError, match="does not exist"):
        BiasTable.load(tmp_path / "nothing.safetensors")


# ------------------------------------------------------------------------------- generate()


def test_a_str_prompt_is_one_prompt(model, tokenizer):
    one = generate(model, tokenizer, PROMPTS[0], max_new_tokens=3)
    listed = generate(model, tokenizer, PROMPTS[:1], max_new_tokens=3)
    assert one.tokens.shape[0] == 1 and len(one.texts) == 1
    assert torch.equal(one.tokens, listed.tokens) and one.texts == listed.texts


def test_empty_prompt_list_and_negative_max_new_tokens(model, tokenizer):
    with pytest.raises(ValueError, match="no prompts given"):
        generate(model, tokenizer, [], max_new_tokens=3)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0, got -1"):
        generate(model, tokenizer, PROMPTS, max_new_tokens=-1)
    with pytest.raises(TypeError, match="prompt 1 is a int"):
        generate(model, tokenizer, ["a", 3], max_new_tokens=1)
    assert generate(model, tokenizer, PROMPTS, max_new_tokens=0).tokens.shape == (2, 0)


def test_empty_prompt_without_chat_template(model, tokenizer):
    out = generate(model, tokenizer, ["", "the river"], chat_template=False, max_new_tokens=3)
    assert out.tokens.shape == (2, 3) and not out.invalid.any()
    ids, mask = prepare_prompts(tokenizer, [""], chat_template=False)
    assert ids.tolist() == [[tokenizer.bos_token_id]] and mask.tolist() == [[1]]
    no_bos = tiny_tokenizer()
    no_bos.bos_token = None
    with pytest.raises(ValueError, match="prompt 0 is empty.* no BOS token"):
        generate(model, no_bos, [""], chat_template=False, max_new_tokens=1)


def test_numbers_out_of_range_are_clear_value_errors(model, tokenizer):
    for alpha in (2**2000, float("inf"), float("nan"), 1e39):
        with pytest.raises(ValueError, match="alpha must be a finite number"):
            generate(model, tokenizer, PROMPTS, alpha=alpha, max_new_tokens=1)
    for seed in (2**64, -1):
        with pytest.raises(ValueError, match=r"seeds must be in \[0, 2\*\*64\)"):
            generate(model, tokenizer, PROMPTS[:1], seed=seed, max_new_tokens=1)
    with pytest.raises(ValueError, match=r"seed s gives row b the seed s \+ b"):
        generate(model, tokenizer, PROMPTS, seed=2**64 - 1, max_new_tokens=1)
    with pytest.raises(ValueError, match="3 seeds given for a batch of 2"):
        generate(model, tokenizer, PROMPTS, seed=[1, 2, 3], max_new_tokens=1)
    # The largest seeds are accepted (read as uint64 by the op).
    generate(model, tokenizer, PROMPTS, seed=[2**64 - 1, 2**63], max_new_tokens=1)


def test_bias_for_another_vocabulary_names_both_sizes(model, tokenizer):
    wrong = torch.zeros(2, 57)
    with pytest.raises(ValueError, match="vocabulary size 57 but the model has 56"):
        generate(model, tokenizer, PROMPTS, bias=wrong, max_new_tokens=1)
    with pytest.raises(BiasFileError, match="vocabulary size 57 but the model has 56"):
        TSDILogitsProcessor(BiasTable(wrong), prompt_length=3, vocab_size=56)
    processor = TSDILogitsProcessor(wrong, prompt_length=3)
    with pytest.raises(ValueError, match="vocabulary size 57 but the model's scores have 56"):
        processor(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 56))
    ids, mask = prepare_prompts(tokenizer, PROMPTS)
    with pytest.raises(ValueError, match="vocabulary size 57 but the model has 56"):
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=2,
            pad_token_id=0,
            custom_generate=tsdi_generate,
            tsdi_bias=wrong,
        )


def test_bias_given_as_a_path(tmp_path, model, tokenizer, table):
    path = tmp_path / "b.safetensors"
    table.save(path)
    want = generate(model, tokenizer, PROMPTS, bias=table, max_new_tokens=4)
    for given in (str(path), path):
        got = generate(model, tokenizer, PROMPTS, bias=given, max_new_tokens=4)
        assert torch.equal(got.tokens, want.tokens)
    processor = TSDILogitsProcessor(str(path), prompt_length=3)
    assert torch.equal(processor.bias, table.bias)
    ids, mask = prepare_prompts(tokenizer, PROMPTS)
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=4,
        pad_token_id=0,
        eos_token_id=2,
        custom_generate=tsdi_generate,
        tsdi_bias=str(path),
    )
    assert out.shape == (2, ids.shape[1] + 4)
    with pytest.raises(BiasFileError, match="does not exist"):
        generate(model, tokenizer, PROMPTS, bias=str(tmp_path / "nope.safetensors"))
    other = tiny_tokenizer()
    other.add_tokens(["zebra"])
    with pytest.raises(BiasFileError, match="different tokenizer"):
        generate(model, other, PROMPTS, bias=str(path), max_new_tokens=1)


def test_tsdi_generate_refuses_beam_search_and_warns_on_streamer(model, tokenizer):
    ids, mask = prepare_prompts(tokenizer, PROMPTS)
    common = dict(input_ids=ids, attention_mask=mask, max_new_tokens=2, pad_token_id=0)
    with pytest.raises(ValueError, match="num_beams=2"):
        model.generate(**common, num_beams=2, custom_generate=tsdi_generate)
    # transformers' streamers take one sequence at a time.
    common = dict(input_ids=ids[:1], attention_mask=mask[:1], max_new_tokens=2, pad_token_id=0)
    streamer = TextIteratorStreamer(tokenizer)
    with pytest.warns(UserWarning, match="pass the streamer as tsdi_streamer="):
        model.generate(**common, streamer=streamer, custom_generate=tsdi_generate)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.generate(**common, tsdi_streamer=streamer, custom_generate=tsdi_generate)
        model.generate(**common, custom_generate=tsdi_generate)


def test_same_model_as_aligned_and_reference_warns(model, tokenizer):
    with pytest.warns(UserWarning, match="bias is all zero"):
        table = estimate_bias(model, model, tokenizer, num_prompts=2, length=1, progress=False)
    assert not table.bias.any()
    aligned = tiny_llama(0)
    prefer_token(aligned, 5, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimate_bias(aligned, model, tokenizer, num_prompts=2, length=1, progress=False)


# ------------------------------------------------------------------------------- seeds


def test_per_request_seeds_make_tokens_independent_of_batch_position(model, tokenizer):
    prompts = ["the river", "farmers grow wheat and barley beans", "a map"]
    settings = dict(temperature=1.5, max_new_tokens=8)
    forward = generate(model, tokenizer, prompts, seed=[11, 22, 33], **settings)
    backward = generate(model, tokenizer, prompts[::-1], seed=[33, 22, 11], **settings)
    alone = generate(model, tokenizer, prompts[2], seed=[33], **settings)
    assert forward.texts == backward.texts[::-1]
    assert forward.texts[2] == alone.texts[0]
    as_tensor = generate(model, tokenizer, prompts, seed=torch.tensor([11, 22, 33]), **settings)
    assert as_tensor.texts == forward.texts
    # An int seed s is the list [s, s + 1, ...] (the documented default derivation).
    assert (
        generate(model, tokenizer, prompts, seed=7, **settings).texts
        == generate(model, tokenizer, prompts, seed=[7, 8, 9], **settings).texts
    )
    # Sampling does depend on the seeds (the test would pass vacuously otherwise).
    assert generate(model, tokenizer, prompts, seed=[1, 2, 3], **settings).texts != forward.texts


# ------------------------------------------------------------------------------- streaming


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer without merges: every UTF-8 byte is a token, so an emoji is
    four tokens and a lone token of it is not a character."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    vocab.update({char: 3 + i for i, char in enumerate(sorted(alphabet))})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.padding_side = "left"
    return tokenizer


def scripted(model, script: list[int]):
    """Makes ``model`` greedily produce ``script`` (its step-t logits peak at script[t]): a hook
    on the real model's head, counting decoding steps."""
    state = {"step": 0}

    def hook(module, inputs, output):
        output = output.clone()
        token = script[min(state["step"], len(script) - 1)]
        output[:, -1, token] += 1000.0
        state["step"] += 1
        return output

    return model.get_output_embeddings().register_forward_hook(hook)


def test_stream_emits_only_complete_characters_and_words():
    tokenizer = byte_tokenizer()
    model = tiny_llama(0, vocab_size=len(tokenizer))
    text = "Grüße 👋🏽 from 東京, ok"
    script = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert len(script) > len(text) + 5  # multi-byte characters span several tokens
    handle = scripted(model, script)
    pieces = []
    try:
        out = generate(
            model,
            tokenizer,
            ["hi"],
            chat_template=False,
            max_new_tokens=len(script) + 2,
            stream=lambda row, piece: pieces.append((row, piece)),
        )
    finally:
        handle.remove()
    assert out.texts == [text]
    assert all(row == 0 for row, _ in pieces)
    streamed = [piece for _, piece in pieces]
    assert "".join(streamed) == text
    assert not any("\ufffd" in piece for piece in streamed)
    # Words, not tokens: fewer pieces than tokens, each ending at a space (the last excepted),
    # except where TextStreamer flushes CJK characters one by one.
    assert len(streamed) < len(script) // 2
    assert streamed[0] == "Grüße "


# ------------------------------------------------------------------------------- model names


def test_model_name_errors_say_what_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="did you mean the built-in 'smollm2'"):
        resolve("SmolLM2")
    with pytest.raises(ModelNotFoundError, match="'path/to/aligned': no such directory"):
        resolve("path/to/aligned")
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache"):
        resolve("nobody-xyz/no-such-model")
    with pytest.raises(ModelNotFoundError, match="holds no config.json"):
        resolve(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"0")
    with pytest.raises(ModelNotFoundError, match="is a file, not a directory"):
        resolve(str(tmp_path / "weights.bin"))
    with pytest.raises(ModelNotFoundError, match="a local directory holding config.json"):
        tsdi_ext.load_model("aligned_model_dir")


# ------------------------------------------------------------------------------- imports


def run_python(code: str, tmp_path) -> subprocess.CompletedProcess:
    # -P and another cwd: the installed package, not the source tree.
    return subprocess.run(
        [sys.executable, "-P", "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )


def test_hf_is_an_attribute_and_import_stays_light(tmp_path):
    done = run_python(
        "import sys, tsdi_ext\n"
        "assert 'transformers' not in sys.modules, 'import tsdi_ext loaded transformers'\n"
        "assert callable(tsdi_ext.hf.tsdi_generate) and 'transformers' in sys.modules\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr


def test_missing_transformers_names_the_extra(tmp_path):
    # None in sys.modules makes `import transformers` fail as if it were not installed.
    done = run_python(
        "import sys\n"
        "sys.modules['transformers'] = None\n"
        "import tsdi_ext\n"
        "try:\n"
        "    tsdi_ext.hf\n"
        "except ModuleNotFoundError as error:\n"
        "    print(error)\n"
        "try:\n"
        "    tsdi_ext.load_model('smollm2')\n"
        "except ModuleNotFoundError as error:\n"
        "    print(error)\n"
        "from tsdi_ext.cli import main\n"
        "main(['demo'])\n",
        tmp_path,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all("pip install 'tsdi_ext[hf]'" in line for line in lines)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "tsdi: error: this needs 'transformers', which the extra installs: pip install 'tsdi_ext[hf]'"
    ]
