"""Run by test_pipeline.py under torchrun (2 CPU processes, gloo): estimates a bias table with the
prompts sharded across ranks; rank 0 saves it to the path given as argument."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # python_tests/: tiny_models
from tsdi_ext.bias import estimate_bias  # noqa: E402

from tiny_models import prefer_token, tiny_llama, tiny_tokenizer  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    tokenizer = tiny_tokenizer()
    aligned, reference = tiny_llama(0), tiny_llama(1)
    prefer_token(aligned, tokenizer.convert_tokens_to_ids("sorry"), 2.0)
    table = estimate_bias(
        aligned, reference, tokenizer, num_prompts=23, length=5, batch_size=4, progress=False
    )
    if dist.get_rank() == 0:
        table.save(sys.argv[1])
    dist.destroy_process_group()
