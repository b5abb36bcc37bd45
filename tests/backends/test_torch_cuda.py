"""The torch runtime on CUDA: the same logits as on the CPU. Skipped (never faked) where torch sees no GPU."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from spacy_privfilter.backends import load_backend  # noqa: E402
from spacy_privfilter.testing import tiny_config, write_random_checkpoint  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch sees none)")


@pytest.mark.parametrize("fmt, options", [("hf", {}), ("mlx-8bit", {"quantized_experts": "keep"}),
                                          ("mlx-8bit", {"quantized_experts": "dequantize"})])
def test_cuda_logits_equal_cpu_logits(tmp_path, fmt, options) -> None:
    folder = write_random_checkpoint(tmp_path / fmt, tiny_config(vocab_size=300), format=fmt, seed=2)
    ids = np.random.default_rng(1).integers(0, 300, (2, 37))
    mask = np.ones_like(ids, dtype=bool)
    mask[1, 30:] = False
    on_cpu = load_backend(folder, backend="torch", device="cpu", dtype="float32", **options)
    on_gpu = load_backend(folder, backend="torch", device="cuda", dtype="float32", **options)
    assert on_gpu.device.type == "cuda"
    # TF32 is off by default for matmuls in torch, so float32 on the GPU stays within float rounding.
    np.testing.assert_allclose(on_gpu.logits(ids, mask)[mask], on_cpu.logits(ids, mask)[mask], atol=1e-4)
