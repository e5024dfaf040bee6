"""TSDI bias estimation and the bias table file format.

TSDI (Tran et al., 2025) estimates the context-independent preference that safety alignment adds
to a model, without training: feed randomly constructed prompts (with random response prefixes)
to the aligned model and to a reference model (the model before safety alignment), and average
the difference of their next-token log-probabilities at each of the first L response positions:

    bias[t, v] = mean over prompts of  log p_aligned(v | ctx_t) - log p_reference(v | ctx_t)

where ctx_t is the prompt followed by t response tokens. Decoding then subtracts
``alpha * bias[t]`` from the aligned model's logits at response positions t < L.

Choices where the paper leaves room (all options of :func:`estimate_bias`):

* random-prompt token pool: ``"corpus"`` (default; tokens drawn, with their frequencies, from a
  small shipped English text, as the paper drew from MMLU text), ``"vocab"`` (uniform over the
  tokenizer's vocabulary minus special tokens) or a path to a text file of your own;
* prompt length 16 tokens, ``length`` L = 8 positions, 256 prompts;
* prompts go through the chat template (default) as a user message; the response prefix is random
  tokens from the same pool;
* score space: log-probabilities (default) or probabilities;
* ``reference=None``: the reference-free variant, for users without the pre-alignment model. It
  uses the aligned model alone: the centred log-probabilities ``log p(v) - mean_u log p(u)``
  (probabilities: ``p(v) - 1/V``), averaged over prompts and clipped at 0. The clipping keeps
  only the context-independent *preferences* (tokens above the average): rare tokens have centred
  log-probabilities near -15, and subtracting those would push gibberish up.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._version import __version__

__all__ = [
    "BiasTable",
    "BiasFileError",
    "estimate_bias",
    "tokenizer_hash",
    "EstimationSettings",
    "format_inspection",
    "check_output_path",
    "as_bias",
]

DEFAULT_CORPUS = Path(__file__).resolve().parent / "data" / "random_prompt_corpus.txt"
# Format 2 stores every metadata value JSON-encoded (a string as a JSON string), so values keep
# their type: a model named "null" stays the string "null". Format 1 stored strings raw and
# everything else as JSON; its files are still read (a string that parses as JSON is then
# ambiguous, and read as JSON, as format 1 always did).
_FORMAT = "tsdi_ext.bias/2"
_FORMAT_1 = "tsdi_ext.bias/1"
_RESERVED = ("format", "tsdi_ext_version", "vocab_size", "length")


def check_output_path(path: str | Path, *, overwrite: bool = False, what: str = "file") -> Path:
    """``path`` as a Path if a file may be written there, else a clear error: a missing parent
    directory (FileNotFoundError), an existing file without ``overwrite`` (FileExistsError) or
    something that is not a regular file (directory, FIFO, device: FileExistsError). Called before
    long work starts, so that an estimation never ends in an unwritable path."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"tsdi_ext: cannot write the {what} {path}: directory {path.parent} does not exist"
        )
    if path.exists():
        if not path.is_file():
            raise FileExistsError(
                f"tsdi_ext: cannot write the {what} {path}: it exists and is not a regular file"
            )
        if not overwrite:
            raise FileExistsError(
                f"tsdi_ext: {path} exists; pass overwrite=True (tsdi: --force) to replace it"
            )
    return path


def _check_finite(bias: torch.Tensor, source: str) -> None:
    finite = torch.isfinite(bias)
    if not bool(finite.all()):
        bad = (~finite).nonzero()[0].tolist()
        raise BiasFileError(
            f"tsdi_ext: {source} holds {int((~finite).sum())} non-finite entries (NaN or +-inf; "
            f"first at position {bad[0]}, token {bad[1]}): a bias table must be finite"
        )


class BiasFileError(ValueError):
    """A bias file that cannot be read, or that does not fit the model it is used with."""


def tokenizer_hash(tokenizer) -> str:
    """SHA-256 of the tokenizer's vocabulary (token -> id pairs, sorted), as hex."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    payload = json.dumps(vocab, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(payload).hexdigest()


@dataclass
class BiasTable:
    """A TSDI bias table: ``bias`` is ``[L, V]`` float32, row t the bias at response position t.

    Saved as safetensors (tensor ``bias``) with string metadata: the models' names, the
    vocabulary size, the tokenizer hash, the estimation settings and the package version.
    """

    bias: torch.Tensor
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.bias, torch.Tensor) or self.bias.dim() != 2:
            raise ValueError("tsdi_ext: a bias table is a [L, V] tensor")
        self.bias = self.bias.detach().to(dtype=torch.float32, device="cpu").contiguous()

    @property
    def length(self) -> int:
        """L, the number of response positions the table covers."""
        return self.bias.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.bias.shape[1]

    def to(self, device) -> torch.Tensor:
        """The ``[L, V]`` tensor on ``device`` (what :func:`tsdi_ext.sample` takes)."""
        return self.bias.to(device)

    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Writes the table as safetensors (format 2: every metadata value JSON-encoded).

        Raises
        ------
        FileExistsError
            ``path`` exists and ``overwrite`` is False, or it is not a regular file.
        FileNotFoundError
            Its directory does not exist.
        BiasFileError
            The table holds NaN or +-inf entries.
        """
        from safetensors.torch import save_file

        path = check_output_path(path, overwrite=overwrite, what="bias file")
        _check_finite(self.bias, "the bias table")
        metadata = {"format": _FORMAT}
        values = {
            **{k: v for k, v in self.metadata.items() if k not in _RESERVED},
            "tsdi_ext_version": __version__,
            "vocab_size": self.vocab_size,
            "length": self.length,
        }
        for key, value in values.items():
            try:
                metadata[key] = json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"tsdi_ext: metadata {key!r} = {value!r} is not JSON-serialisable ({error})"
                ) from None
        save_file({"bias": self.bias}, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path, *, tokenizer=None, vocab_size: int | None = None) -> BiasTable:
        """Reads a bias file; with ``tokenizer`` / ``vocab_size``, also checks that it fits them.

        Raises
        ------
        BiasFileError
            Missing, truncated or corrupt files, files of another format, and mismatches.
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise BiasFileError(f"tsdi_ext: bias file {path} does not exist")
        if not path.is_file():  # a directory, FIFO or device (e.g. /dev/null)
            raise BiasFileError(f"tsdi_ext: bias file {path} is not a regular file")
        try:
            with safe_open(str(path), framework="pt") as handle:
                raw_metadata = handle.metadata() or {}
                if "bias" not in handle.keys():
                    raise BiasFileError(f"tsdi_ext: {path} holds no 'bias' tensor")
                bias = handle.get_tensor("bias")
        except BiasFileError:
            raise
        except Exception as error:  # safetensors raises its own error types for corrupt files
            raise BiasFileError(
                f"tsdi_ext: {path} is not a readable bias file ({error})"
            ) from error
        file_format = raw_metadata.get("format")
        if file_format not in (_FORMAT, _FORMAT_1):
            raise BiasFileError(
                f"tsdi_ext: {path} is not a tsdi_ext bias file (format {file_format!r})"
            )
        if bias.dim() != 2 or bias.dtype != torch.float32:
            raise BiasFileError(
                f"tsdi_ext: {path}: bias must be [L, V] float32, got {tuple(bias.shape)} {bias.dtype}"
            )
        metadata = {}
        for key, value in raw_metadata.items():
            if key == "format":
                metadata[key] = value
                continue
            try:
                metadata[key] = json.loads(value)
            except (json.JSONDecodeError, TypeError):
                if file_format == _FORMAT:
                    raise BiasFileError(
                        f"tsdi_ext: {path}: metadata {key!r} is not JSON ({value[:40]!r})"
                    ) from None
                metadata[key] = value  # format 1 stored strings raw
        for key, size in (("length", bias.shape[0]), ("vocab_size", bias.shape[1])):
            if metadata.get(key) != size:
                raise BiasFileError(
                    f"tsdi_ext: {path}: metadata says {key} {metadata.get(key)!r} but the tensor "
                    f"is [{bias.shape[0]}, {bias.shape[1]}]"
                )
        _check_finite(bias, str(path))
        table = cls(bias, metadata)
        table.check_compatible(tokenizer=tokenizer, vocab_size=vocab_size, source=str(path))
        return table

    def check_compatible(
        self, *, tokenizer=None, vocab_size: int | None = None, source: str = "bias table"
    ):
        """Raises BiasFileError if the table was estimated for another vocabulary."""
        if vocab_size is not None and vocab_size != self.vocab_size:
            raise BiasFileError(
                f"tsdi_ext: {source} has vocabulary size {self.vocab_size} but the model has {vocab_size}"
            )
        expected = self.metadata.get("tokenizer_hash")
        if tokenizer is not None and expected is not None and tokenizer_hash(tokenizer) != expected:
            raise BiasFileError(
                f"tsdi_ext: {source} was estimated with a different tokenizer (vocabulary hash "
                f"{str(expected)[:12]}..., this tokenizer {tokenizer_hash(tokenizer)[:12]}...)"
            )

    def top_tokens(self, position: int, k: int = 10, *, largest: bool = True):
        """``(token_ids, values)`` of the k largest (pushed down by debiasing) or smallest entries."""
        values, ids = torch.topk(self.bias[position], k, largest=largest)
        return ids.tolist(), values.tolist()

    def describe(self, tokenizer, positions: int = 4, top: int = 10) -> list[dict]:
        """The ``top`` tokens pushed down (largest bias) and up (smallest) at each of the first
        ``positions`` positions: ``[{"position", "pushed_down", "pushed_up"}]``, each list of
        ``{"token", "id", "bias"}`` (what ``tsdi inspect`` prints)."""

        def tokens(ids, values):
            return [
                {"token": tokenizer.decode([i]), "id": i, "bias": v} for i, v in zip(ids, values)
            ]

        return [
            {
                "position": t,
                "pushed_down": tokens(*self.top_tokens(t, top, largest=True)),
                "pushed_up": tokens(*self.top_tokens(t, top, largest=False)),
            }
            for t in range(min(positions, self.length))
        ]


def format_inspection(table: BiasTable, tokenizer, positions: int = 4, top: int = 10) -> str:
    """The tokens ``table`` pushes down (and up) most at its first positions, as ``tsdi inspect``
    prints them."""
    lines = [
        f"bias table [{table.length}, {table.vocab_size}] | {table.metadata.get('variant', '?')} | "
        f"aligned={table.metadata.get('aligned_model')} reference={table.metadata.get('reference_model')}"
    ]

    def fmt(tokens):
        return ", ".join(f"{e['token']!r} {e['bias']:+.2f}" for e in tokens)

    for entry in table.describe(tokenizer, positions, top):
        lines.append(f"  position {entry['position']}: pushed down: {fmt(entry['pushed_down'])}")
        up = entry["pushed_up"]
        if up and up[0]["bias"] < 0:  # a clipped (reference-free) table pushes nothing up
            lines.append(f"              pushed up:   {fmt(up)}")
    return "\n".join(lines)


def as_bias(bias, *, tokenizer=None, vocab_size: int | None = None):
    """The bias argument of :func:`tsdi_ext.generate` and friends, checked: ``None``; a
    :class:`BiasTable`; a path to a bias file (loaded); or an ``[L, V]`` / ``[V]`` tensor. With
    ``tokenizer`` / ``vocab_size``, a table or tensor for another vocabulary is refused here, with
    both sizes, rather than failing later inside the model's step."""
    if bias is None:
        return None
    if isinstance(bias, (str, os.PathLike)):
        return BiasTable.load(bias, tokenizer=tokenizer, vocab_size=vocab_size)
    if isinstance(bias, BiasTable):
        bias.check_compatible(tokenizer=tokenizer, vocab_size=vocab_size)
        return bias
    if not isinstance(bias, torch.Tensor):
        raise TypeError(
            "tsdi_ext: bias must be a BiasTable, a path to a bias file, an [L, V] tensor or None, "
            f"got {type(bias).__name__}"
        )
    if bias.dim() not in (1, 2):
        raise ValueError(f"tsdi_ext: bias must be [L, V] or [V], got shape {tuple(bias.shape)}")
    if vocab_size is not None and bias.shape[-1] != vocab_size:
        raise ValueError(
            f"tsdi_ext: the bias has vocabulary size {bias.shape[-1]} but the model has {vocab_size}"
        )
    return bias


@dataclass
class EstimationSettings:
    num_prompts: int = 256
    prompt_length: int = 16
    length: int = 8
    batch_size: int = 16
    pool: str = "corpus"
    chat_template: bool = True
    score: str = "logprob"
    seed: int = 0


def _token_pool(tokenizer, pool: str, vocab_size: int) -> torch.Tensor:
    special = set(tokenizer.all_special_ids)
    if pool == "vocab":
        ids = [i for i in range(min(len(tokenizer), vocab_size)) if i not in special]
    else:
        path = DEFAULT_CORPUS if pool == "corpus" else Path(pool)
        if not path.is_file():
            raise ValueError(
                f"tsdi_ext: token pool {pool!r} is neither 'corpus', 'vocab' nor a text file"
            )
        ids = [
            i
            for i in tokenizer(path.read_text(), add_special_tokens=False)["input_ids"]
            if i not in special and i < vocab_size
        ]
    if not ids:
        raise ValueError(f"tsdi_ext: the token pool {pool!r} is empty for this tokenizer")
    return torch.tensor(ids, dtype=torch.int64)


_MARK = "\u2063TSDI\u2063"


def _template_parts(tokenizer, chat_template: bool) -> tuple[list[int], list[int]]:
    """Token ids before and after the user message (generation prompt included)."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": _MARK}], tokenize=False, add_generation_prompt=True
        )
        before, after = text.split(_MARK)
        encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
        return encode(before), encode(after)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos, []


def random_prompt_sequences(
    tokenizer,
    vocab_size: int,
    *,
    num_prompts: int,
    prompt_length: int,
    length: int,
    pool: str,
    chat_template: bool,
    seed: int,
) -> tuple[torch.Tensor, int]:
    """The estimation inputs: ``[N, S]`` int64 sequences (template, random prompt, generation
    prompt, ``length - 1`` random response tokens) and the index of the first response token.
    The logits at ``response_start - 1 + t`` give the next-token distribution at position t."""
    token_pool = _token_pool(tokenizer, pool, vocab_size)
    before, after = _template_parts(tokenizer, chat_template)
    generator = torch.Generator().manual_seed(seed)
    prompts = token_pool[
        torch.randint(len(token_pool), (num_prompts, prompt_length), generator=generator)
    ]
    responses = token_pool[
        torch.randint(len(token_pool), (num_prompts, length - 1), generator=generator)
    ]
    sequences = torch.cat(
        [
            torch.tensor(before, dtype=torch.int64).expand(num_prompts, -1),
            prompts,
            torch.tensor(after, dtype=torch.int64).expand(num_prompts, -1),
            responses,
        ],
        dim=1,
    )
    return sequences, len(before) + prompt_length + len(after)


def _next_token_scores(
    model, ids: torch.Tensor, start: int, length: int, score: str
) -> torch.Tensor:
    """``[b, length, V]`` float32 log-probabilities (or probabilities) at the response positions."""
    logits = model(input_ids=ids.to(model.device)).logits[:, start - 1 : start - 1 + length].float()
    return (
        torch.log_softmax(logits, dim=-1) if score == "logprob" else torch.softmax(logits, dim=-1)
    )


@torch.inference_mode()
def estimate_bias(
    aligned,
    reference,
    tokenizer,
    *,
    num_prompts: int = 256,
    prompt_length: int = 16,
    length: int = 8,
    batch_size: int = 16,
    pool: str = "corpus",
    chat_template: bool = True,
    score: str = "logprob",
    seed: int = 0,
    progress: bool = True,
    aligned_name: str | None = None,
    reference_name: str | None = None,
) -> BiasTable:
    """Estimates the TSDI bias table of ``aligned`` against ``reference`` (see module docstring).

    Parameters
    ----------
    aligned, reference : transformers causal LMs
        The safety-aligned model and the reference model (same vocabulary); ``reference=None``
        selects the reference-free variant.
    tokenizer
        The tokenizer both models use.
    num_prompts, prompt_length, length, batch_size, pool, chat_template, score, seed
        See the module docstring. Every sequence has the same length, so batches need no padding;
        one forward pass per batch gives all ``length`` positions.
    progress : bool
        Show a progress bar (on rank 0 only under torch.distributed).
    aligned_name, reference_name : str, optional
        The models' names in the table's metadata (default: where they were loaded from).

    Returns
    -------
    BiasTable
        ``[length, V]`` float32, averaged in float64. Under an initialised torch.distributed
        process group, each rank processes prompts ``rank, rank + world, ...`` and the sums are
        all-reduced, so every rank returns the same table as a single process would.
    """
    if score not in ("logprob", "prob"):
        raise ValueError(f"tsdi_ext: score must be 'logprob' or 'prob', got {score!r}")
    if num_prompts < 1 or prompt_length < 1 or length < 1 or batch_size < 1:
        raise ValueError("tsdi_ext: num_prompts, prompt_length, length and batch_size must be >= 1")
    vocab_size = aligned.get_output_embeddings().weight.shape[0]
    if reference is not None and reference.get_output_embeddings().weight.shape[0] != vocab_size:
        raise ValueError("tsdi_ext: the aligned and reference models have different vocabularies")

    sequences, response_start = random_prompt_sequences(
        tokenizer,
        vocab_size,
        num_prompts=num_prompts,
        prompt_length=prompt_length,
        length=length,
        pool=pool,
        chat_template=chat_template,
        seed=seed,
    )

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    mine = torch.arange(rank, num_prompts, world)

    totals = torch.zeros(length, vocab_size, dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    batches = range(0, len(mine), batch_size)
    if progress and rank == 0:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="estimating TSDI bias", unit="batch")
    for start in batches:
        ids = sequences[mine[start : start + batch_size]]
        aligned_scores = _next_token_scores(aligned, ids, response_start, length, score)
        if reference is not None:
            difference = aligned_scores - _next_token_scores(
                reference, ids, response_start, length, score
            )
        else:
            difference = aligned_scores - aligned_scores.mean(dim=-1, keepdim=True)
        totals += difference.double().sum(dim=0).cpu()
        count += ids.shape[0]
    if distributed:
        backend = torch.distributed.get_backend()
        device = "cuda" if backend == "nccl" else "cpu"
        packed = torch.cat([totals.flatten(), count.reshape(1)]).to(device)
        torch.distributed.all_reduce(packed)
        totals, count = packed[:-1].reshape(length, vocab_size).cpu(), packed[-1].cpu()

    settings = EstimationSettings(
        num_prompts, prompt_length, length, batch_size, str(pool), chat_template, score, seed
    )
    metadata = {
        "aligned_model": aligned_name or aligned.name_or_path,
        "reference_model": (
            "none (reference-free)"
            if reference is None
            else reference_name or reference.name_or_path
        ),
        "variant": "reference-free" if reference is None else "aligned-minus-reference",
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "settings": settings.__dict__,
        "world_size": world,
    }
    bias = (totals / count).float()
    if reference is None:
        bias = bias.clamp(min=0.0)
    if not math.isfinite(float(bias.abs().max())):
        raise RuntimeError(
            "tsdi_ext: the estimated bias is not finite (a model produced -inf log-probabilities?)"
        )
    if reference is not None and not bool(bias.any()):
        warnings.warn(
            "tsdi_ext: the aligned and reference models gave identical scores: the bias is all "
            "zero and debiasing with it changes nothing (the same model given twice?)",
            stacklevel=2,
        )
    return BiasTable(bias, metadata)
