"""TSDI logits processors for vLLM (docs/engines.md).

Register one, by name, when the engine is built, and opt requests in through their extra
arguments::

    llm = LLM(model, logits_processors=["tsdi_ext.adapters.vllm:TSDILogitsProcessor"])
    params = SamplingParams(extra_args={"tsdi_bias": "bias.safetensors", "tsdi_alpha": 0.5})

    vllm serve MODEL --logits-processors tsdi_ext.adapters.vllm:TSDILogitsProcessor
    # request body: {..., "vllm_xargs": {"tsdi_bias": "/path/bias.safetensors", "tsdi_alpha": 0.5}}

The processor subtracts ``tsdi_alpha * bias[t]`` from the logits of a request at its response
position ``t`` (the number of tokens it has generated) while ``t < tsdi_length``; requests without
``tsdi_bias`` are not touched. vLLM has two model runners with two processor interfaces:
:class:`TSDILogitsProcessor` is for the V1 model runner (vLLM's default on CPUs), and
:class:`TSDILogitsProcessorV2` for Model Runner V2 (``VLLM_USE_V2_MODEL_RUNNER=1``). vLLM
refuses a class of the other interface at start-up.
"""

from __future__ import annotations

import numpy as np
import torch
from vllm.v1.sample.logits_processor import BatchUpdate
from vllm.v1.sample.logits_processor import LogitsProcessor as _V1LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates
from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as _V2LogitsProcessor

from . import BiasCache, tsdi_request_args

__all__ = ["TSDILogitsProcessor", "TSDILogitsProcessorV2"]


def _validate(sampling_params) -> None:
    tsdi_request_args(sampling_params.extra_args)


class TSDILogitsProcessor(_V1LogitsProcessor):
    """TSDI for vLLM's V1 model runner (``vllm.v1.sample.logits_processor.LogitsProcessor``).

    State is kept per batch row and changes only in :meth:`update_state`: the rows still inside
    their table (``t < L``), each with its alpha, its table's first row in the shared stack and a
    reference to its output tokens (vLLM keeps that list current). A row leaves the set when its
    response reaches ``L`` tokens, so the host work of a step is proportional to the rows that
    started within the last ``L`` steps, not to the batch. :meth:`apply` is one gather from the
    stack and one subtraction into the rows concerned; with no such row it returns at once.
    """

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        _validate(sampling_params)

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.device = device
        self.pin_memory = is_pin_memory
        self.tables = BiasCache(vllm_config.model_config.get_vocab_size(), device)
        # batch row -> [alpha, stack offset, length, output token ids]
        self.rows: dict[int, tuple[float, int, int, list[int]]] = {}
        self._batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def is_argmax_invariant(self) -> bool:
        return False  # debiasing changes which token is the largest

    def _new_row(self, params, _prompt_ids, output_ids):
        args = tsdi_request_args(params.extra_args)
        if args is None or args[1] == 0.0:
            return None
        path, alpha, length = args
        offset, table_length = self.tables.lookup(path)
        length = table_length if length is None else min(length, table_length)
        if len(output_ids) >= length:
            return None
        return alpha, offset, length, output_ids

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.rows, batch_update, self._new_row)
        finished = [row for row, (_, _, length, out) in self.rows.items() if len(out) >= length]
        for row in finished:
            del self.rows[row]
        if not self.rows:
            self._batch = None
            return
        # The positions move every step, so the small index tensors are rebuilt for the rows
        # still inside their tables.
        rows = list(self.rows)
        states = [self.rows[r] for r in rows]
        host = (
            torch.tensor(rows, dtype=torch.int64),
            torch.tensor([offset + len(out) for _, offset, _, out in states], dtype=torch.int64),
            torch.tensor([alpha for alpha, _, _, _ in states], dtype=torch.float32),
        )
        if self.device.type != "cpu":
            if self.pin_memory:
                host = tuple(t.pin_memory() for t in host)
            host = tuple(t.to(self.device, non_blocking=True) for t in host)
        self._batch = host

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if self._batch is None:
            return logits
        rows, table_rows, alpha = self._batch
        # x + (-(alpha * b)) is x - alpha * b exactly: the product is rounded once, as in the op.
        logits.index_add_(0, rows, self.tables.stack.index_select(0, table_rows) * -alpha[:, None])
        return logits


class TSDILogitsProcessorV2(_V2LogitsProcessor):
    """TSDI for vLLM's Model Runner V2 (``vllm.v1.worker.gpu.sample.logits_processor``).

    Per-slot alpha, stack offset and length are set in :meth:`add_request` and copied to the
    device once per step in :meth:`apply_staged_writes`, only when a request came in. The
    response position comes from the runner: ``t = pos + 1 - prompt_len[slot]`` for the token
    being sampled. Rows are filtered on the host (no device synchronisation) by alpha and, when
    each request has one row (no speculative decoding), by the host copy of the sequence lengths.
    """

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        _validate(sampling_params)

    def __init__(self, vllm_config, req_states):
        self.req_states = req_states
        self.device = req_states.device
        self.tables = BiasCache(req_states.vocab_size, self.device)
        n = req_states.max_num_reqs
        self.alpha = np.zeros(n, dtype=np.float32)  # 0: the slot is not debiased
        self.offset = np.zeros(n, dtype=np.int64)
        self.length = np.zeros(n, dtype=np.int64)
        self._device_state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._dirty = True

    def add_request(self, req_idx: int, sampling_params) -> bool:
        args = tsdi_request_args(sampling_params.extra_args)
        self._dirty = True
        if args is None or args[1] == 0.0:
            self.alpha[req_idx] = 0.0
            return False
        path, alpha, length = args
        offset, table_length = self.tables.lookup(path)
        self.alpha[req_idx] = alpha
        self.offset[req_idx] = offset
        self.length[req_idx] = table_length if length is None else min(length, table_length)
        return self.length[req_idx] > 0

    def apply_staged_writes(self) -> None:
        if self._dirty:
            self._device_state = tuple(
                torch.from_numpy(a).to(self.device, non_blocking=True)
                for a in (self.alpha, self.offset, self.length)
            )
            self._dirty = False

    def apply(self, logits: torch.Tensor, ctx) -> torch.Tensor:
        slots_np = ctx.idx_mapping_np
        active = self.alpha[slots_np] != 0.0
        one_row_each = logits.shape[0] == slots_np.shape[0]
        if one_row_each:
            # Exact without speculative decoding: the response position of each row's next token.
            position = ctx.seq_lens_upper_bound_np - self.req_states.prompt_len.np[slots_np]
            active &= position < self.length[slots_np]
        if not active.any():
            return logits
        if self._device_state is None:
            self.apply_staged_writes()
        alpha, offset, length = self._device_state
        if one_row_each:
            rows = torch.from_numpy(np.flatnonzero(active)).to(logits.device, non_blocking=True)
        else:
            rows = torch.arange(logits.shape[0], device=logits.device)
        slots = ctx.expanded_idx_mapping.index_select(0, rows).long()
        position = ctx.pos.index_select(0, rows) + 1 - self.req_states.prompt_len.gpu[slots]
        inside = (position >= 0) & (position < length[slots])
        row_alpha = torch.where(inside, alpha[slots], 0.0)
        table_rows = offset[slots] + position.clamp(min=0).minimum(length[slots] - 1).clamp(min=0)
        logits.index_add_(
            0, rows, self.tables.stack.index_select(0, table_rows) * -row_alpha[:, None]
        )
        return logits
