"""MLX vs torch on this CPU: tokens/s and resident memory on the same random weights.

Each variant runs in its own subprocess (so resident memory is per runtime), one thread each, on a
mid-size config: the real layer shapes (hidden 640, 14/2 heads, 128 experts top-4, window 128) but
2 layers and a 4096-row vocabulary. Speed depends only on shapes, so seeded random weights are valid.

Usage:  python -m benchmarks.mlx_vs_torch [--tokens 512] [--layers 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = ("torch-float32", "torch-bfloat16", "mlx-float32", "mlx-bfloat16", "mlx-8bit")
SEED = 0


def _config(layers: int):
    from spacy_privfilter.config import ModelConfig

    labels = ["O"] + [f"{p}-c{i}" for i in range(8) for p in "BIES"]
    return ModelConfig(vocab_size=4096, num_hidden_layers=layers, id2label=tuple(labels), dtype="bfloat16")


def _random_state_dict(config) -> dict:
    """Canonical HF-named float32 numpy tensors, N(0, 0.02) weights, seeded."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    d, h, kv, hd = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim
    e, inter, c = config.num_local_experts, config.intermediate_size, config.num_labels

    def w(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    out = {"model.embed_tokens.weight": w(config.vocab_size, d), "model.norm.weight": np.ones(d, np.float32),
           "score.weight": w(c, d), "score.bias": w(c)}
    for n in range(config.num_hidden_layers):
        p = f"model.layers.{n}."
        out.update({
            p + "input_layernorm.weight": np.ones(d, np.float32),
            p + "post_attention_layernorm.weight": np.ones(d, np.float32),
            p + "self_attn.q_proj.weight": w(h * hd, d), p + "self_attn.q_proj.bias": w(h * hd),
            p + "self_attn.k_proj.weight": w(kv * hd, d), p + "self_attn.k_proj.bias": w(kv * hd),
            p + "self_attn.v_proj.weight": w(kv * hd, d), p + "self_attn.v_proj.bias": w(kv * hd),
            p + "self_attn.o_proj.weight": w(d, h * hd), p + "self_attn.o_proj.bias": w(d),
            p + "self_attn.sinks": w(h),
            p + "mlp.router.weight": w(e, d), p + "mlp.router.bias": w(e),
            p + "mlp.experts.gate_up_proj": w(e, d, 2 * inter),
            p + "mlp.experts.gate_up_proj_bias": w(e, 2 * inter),
            p + "mlp.experts.down_proj": w(e, inter, d), p + "mlp.experts.down_proj_bias": w(e, d),
        })
    return out


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _run_variant(variant: str, tokens: int, layers: int, repeats: int) -> dict:
    import numpy as np

    import gc

    config = _config(layers)
    if variant.startswith("torch"):
        import torch
    else:
        import mlx.core as mx
    base_rss = _rss_mb()  # interpreter + framework, before any weights exist
    state = _random_state_dict(config)
    if variant.startswith("torch"):

        from spacy_privfilter.backends.torch_backend import build_model

        torch.set_num_threads(1)
        dtype = "float32" if variant.endswith("float32") else "bfloat16"
        model = build_model({k: torch.from_numpy(v) for k, v in state.items()}, config, dtype=dtype, device="cpu")
        del state

        def forward(ids, mask):
            with torch.inference_mode():
                return model(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()
    else:
        from spacy_privfilter.backends.mlx_backend import build_model, quantize_state_dict
        from spacy_privfilter.config import QuantizationConfig

        weights = {k: mx.array(v) for k, v in state.items()}
        del state
        if variant == "mlx-8bit":
            weights = {k: v if k.endswith("sinks") else v.astype(mx.bfloat16) for k, v in weights.items()}
            weights = quantize_state_dict(weights, QuantizationConfig(bits=8))
        model = build_model(weights, config, dtype="float32" if variant.endswith("float32") else "bfloat16")
        del weights
        mx.eval(model.parameters())

        def forward(ids, mask):
            out = model(mx.array(ids.astype(np.int32)), mx.array(mask)).astype(mx.float32)
            mx.eval(out)
            return np.array(out)
    gc.collect()
    load_rss = _rss_mb()
    _reset_peak()
    rng = np.random.default_rng(1)
    ids = rng.integers(0, config.vocab_size, (1, tokens)).astype(np.int64)
    mask = np.ones((1, tokens), dtype=bool)
    forward(ids, mask)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(ids, mask)
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"variant": variant, "tokens": tokens, "layers": layers, "seconds": round(best, 4),
            "tokens_per_s": round(tokens / best, 1), "weights_rss_mb": round(load_rss - base_rss, 1),
            "peak_rss_mb": round(_peak_mb(), 1)}


def _reset_peak() -> None:
    """Reset VmHWM so the reported peak covers the forward passes, not the random-weight generation."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(_run_variant(args.variant, args.tokens, args.layers, args.repeats)))
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    print(f"{'variant':16} {'tokens':>6} {'layers':>6} {'tok/s':>8} {'weights MiB':>11} {'run peak MiB':>12}")
    for variant in VARIANTS:
        cmd = [sys.executable, "-m", "benchmarks.mlx_vs_torch", "--variant", variant,
               "--tokens", str(args.tokens), "--layers", str(args.layers), "--repeats", str(args.repeats)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode:
            print(f"{variant:16} failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{variant:16} {r['tokens']:>6} {r['layers']:>6} {r['tokens_per_s']:>8} "
              f"{r['weights_rss_mb']:>11} {r['peak_rss_mb']:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
