"""PyTorch runtime: checkpoint -> canonical state dict -> PrivacyFilterModel -> ``logits(input_ids, attention_mask)``.

``load(info, device=..., dtype=..., quantize=...)`` is the entry point used by ``backends.load_backend``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, Mapping, get_args

import numpy as np
import torch

from ..checkpoint.check import check_tensors, dense_shape
from ..checkpoint.formats import canonical_shapes
from ..checkpoint.loader import read_with
from ..checkpoint.safetensors_io import SafetensorsHeader
from ..checkpoint.types import CheckpointInfo, QuantizedWeight
from ..config import ModelConfig
from ..errors import CheckpointError, ConfigError
from ..memory import limit_kernel_caches, trim_heap, tune_allocator
from .base import (DTYPES, EXPERT_KERNELS, EXPERT_PRECISIONS, QUANTIZED_EXPERTS_MODES, DType, ExpertKernel,
                   ExpertPrecision, QuantizedExpertsMode)
from .native import NativeKernel, load_kernel, unavailable_reason
from .torch_model import Experts, PrivacyFilterModel
from .torch_native import NativeAttention, NativeExperts, NativeTopK, native_applies
from .torch_packed import PackedExperts, packing_available
from .torch_quant import QuantizedEmbedding, QuantizedExperts, dequantize

log = logging.getLogger(__name__)

TorchDevice = Literal["auto", "cpu", "cuda", "mps"]
DEVICES: tuple[str, ...] = get_args(TorchDevice)
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LOAD_OPTIONS = ("quantized_experts", "expert_precision", "pack_experts", "expert_kernel", "block_size", "own_weights")


class TorchReader:
    """Reads tensors through safetensors' memory map: they stay views of the file until the model copies them."""

    def __init__(self) -> None:
        self._files: dict[Path, Any] = {}

    def read(self, header: SafetensorsHeader, name: str) -> torch.Tensor:
        from safetensors import SafetensorError, safe_open

        try:
            if header.path not in self._files:
                self._files[header.path] = safe_open(str(header.path), framework="pt")
            return self._files[header.path].get_tensor(name)
        except SafetensorError as exc:
            raise CheckpointError(f"weight file '{header.path.name}': cannot read tensor '{name}' "
                                  f"({type(exc).__name__}); the file is truncated or corrupt") from exc

    def to_numpy_f32(self, tensor: torch.Tensor) -> np.ndarray:
        return tensor.float().numpy()

    def from_numpy(self, array: np.ndarray, like: torch.Tensor | None = None) -> torch.Tensor:
        out = torch.from_numpy(np.ascontiguousarray(array))
        return out if like is None else out.to(like.dtype)


def read_state_dict(info: CheckpointInfo) -> dict[str, Any]:
    """The checkpoint's canonical tensors as torch tensors in their stored dtypes (QuantizedWeight parts too)."""
    return read_with(info, TorchReader())


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; an explicit device must be available."""
    name = device.split(":")[0]
    if name not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)} (optionally 'cuda:N'); got {device!r}")
    cuda, mps = torch.cuda.is_available(), bool(getattr(torch.backends, "mps", None)
                                                   and torch.backends.mps.is_available())
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ConfigError(f"device {device!r} was requested but torch reports it unavailable; use 'cpu' or 'auto'")
    return torch.device(device)


def resolve_dtype(dtype: DType, state_dict: Mapping[str, Any], config: ModelConfig,
                  device: torch.device | None = None) -> torch.dtype:
    """``"auto"`` is the dtype the embedding is stored in (files are the truth, not config.json), except that a
    half-precision checkpoint runs in float32 on a CPU whose oneDNN has no fast path for that dtype."""
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        return TORCH_DTYPES[dtype]
    stored = state_dict.get("model.embed_tokens.weight")
    if isinstance(stored, QuantizedWeight):
        stored = stored.scales
    if isinstance(stored, torch.Tensor) and stored.is_floating_point():
        chosen = stored.dtype
    else:
        chosen = TORCH_DTYPES.get(config.dtype, torch.bfloat16)
    if device is not None and device.type == "cpu" and chosen in (torch.bfloat16, torch.float16) \
            and not cpu_runs_fast(chosen):
        # Measured with oneDNN limited to AVX2 (full-size model, 512 tokens): bf16 209 tokens/s, float32 753.
        name = str(chosen).replace("torch.", "")
        log.info("this CPU has no fast %s matmuls; running the checkpoint in float32 (pass dtype=%r to keep it)",
                 name, name)
        return torch.float32
    return chosen


def cpu_runs_fast(dtype: torch.dtype) -> bool:
    """Whether oneDNN runs ``dtype`` matmuls natively on this CPU (AVX-512 or AMX on x86, BF16 on Arm)."""
    probe = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}.get(dtype)
    if probe is None:
        return True
    try:
        return bool(torch.backends.mkldnn.is_available() and getattr(torch.ops.mkldnn, probe)())
    except (AttributeError, RuntimeError):
        return False


def build_model(state_dict: Mapping[str, Any], config: ModelConfig, *, dtype: DType = "auto",
                device: str = "auto", expert_precision: ExpertPrecision = "auto",
                quantized_experts: QuantizedExpertsMode = "keep", block_size: int | None = None,
                own_weights: bool = False, pack_experts: bool | None = None,
                expert_kernel: ExpertKernel = "auto") -> PrivacyFilterModel:
    """Build a model from canonical HF-named tensors (torch or numpy; ``QuantizedWeight`` values allowed).

    ``dtype`` "auto" follows the stored embedding (see ``resolve_dtype``); ``device`` "auto" picks an
    accelerator when there is one.

    Norm scales, sinks, the router and the classifier are kept in float32 (small, and precision-critical);
    every other dense weight is cast to ``dtype``. Quantized expert weights stay 8-bit in memory and are
    dequantized per expert while running (``quantized_experts="keep"``) or once here (``"dequantize"``).
    ``own_weights`` copies dense tensors the model would otherwise share with ``state_dict``: loaded
    checkpoints are memory-mapped, and one shared tensor keeps the whole file resident next to the copies.
    ``pack_experts`` (None: wherever it applies, i.e. dense bfloat16 experts on the CPU with oneDNN) packs
    the expert matrices once for oneDNN (see torch_packed.py); True requires it, False never packs.
    ``expert_kernel`` "auto" runs bfloat16 and kept 8-bit experts on the CPU with the native kernel wherever
    it applies and builds (see native.py, torch_native.py), else as above; "native" requires it; "torch"
    never uses it. An explicit ``pack_experts=True`` with "auto" keeps oneDNN.
    """
    if expert_precision not in EXPERT_PRECISIONS:
        raise ConfigError(f"expert_precision must be one of {', '.join(EXPERT_PRECISIONS)}; got {expert_precision!r}")
    if quantized_experts not in QUANTIZED_EXPERTS_MODES:
        raise ConfigError(f"quantized_experts must be one of {', '.join(QUANTIZED_EXPERTS_MODES)}; "
                          f"got {quantized_experts!r}")
    run_device = resolve_device(device)
    run_dtype = resolve_dtype(dtype, state_dict, config, run_device)
    check_tensors(canonical_shapes(config), {key: dense_shape(key, value) for key, value in state_dict.items()},
                  what="state dict does not match the model config")
    if expert_kernel not in EXPERT_KERNELS:
        raise ConfigError(f"expert_kernel must be one of {', '.join(EXPERT_KERNELS)}; got {expert_kernel!r}")
    kernel = _native_kernel(expert_kernel, pack_experts, device=run_device, dtype=run_dtype,
                            expert_precision=expert_precision)
    if kernel is not None:  # only the attention projections use oneDNN then (torch's expert paths need more shapes)
        limit_kernel_caches()
    pack = kernel is None and _packing_applies(pack_experts, state_dict, dtype=run_dtype, device=run_device,
                                               expert_precision=expert_precision,
                                               quantized_experts=quantized_experts)
    with torch.device("meta"):
        model = PrivacyFilterModel(config, block_size=block_size)
    for key, value in state_dict.items():
        name = _module_name(key)
        module_path, _, attr = name.rpartition(".")
        module = model.get_submodule(module_path)
        target = dict(module.named_parameters(recurse=False))[attr]
        keep_quantized = isinstance(value, QuantizedWeight) and (
            (name == "embed_tokens.weight") or (attr in ("gate_up_proj", "down_proj") and quantized_experts == "keep"))
        if keep_quantized:
            continue
        if isinstance(value, QuantizedWeight):
            tensor = dequantize(value, dtype=run_dtype)
            if attr in ("gate_up_proj", "down_proj"):
                tensor = tensor.transpose(-1, -2)  # MLX stores experts as [E, out, in]
        else:
            tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        keep_f32 = (attr == "sinks" or "norm" in module_path.rsplit(".", 1)[-1]
                    or module_path.endswith("router") or module_path == "score")
        tensor = tensor.to(device=run_device, dtype=torch.float32 if keep_f32 else run_dtype)
        # Expert matrices that will be packed stay views of the (often memory-mapped) source: packing copies them.
        to_pack = (pack or kernel is not None) and attr in ("gate_up_proj", "down_proj")
        if attr in ("gate_up_proj", "down_proj") and not to_pack:
            # Same [E, in, out] shape, but laid out [E, out, in] in memory: small-batch expert matmuls read
            # the weight ~20% faster that way (measured at 16 tokens per expert; ~7% at 128).
            tensor = tensor.transpose(-1, -2).contiguous().transpose(-1, -2)
        elif not to_pack:
            tensor = tensor.contiguous()
        if own_weights and not to_pack and isinstance(value, torch.Tensor) and tensor.data_ptr() == value.data_ptr():
            tensor = tensor.clone()
        setattr(module, attr, torch.nn.Parameter(tensor, requires_grad=False))
    _install_quantized(model, state_dict, dtype=run_dtype, device=run_device, keep_experts=quantized_experts == "keep")
    if expert_precision != "auto":
        for layer in model.layers:
            layer.mlp.experts.compute_dtype = TORCH_DTYPES[expert_precision]
    if pack:
        for layer in model.layers:
            layer.mlp.experts = PackedExperts.from_experts(layer.mlp.experts)
    if kernel is not None:
        _install_native(model, kernel, dtype=run_dtype, required=expert_kernel == "native")
        trim_heap()  # repacking's temporaries: handed back now rather than kept as free heap
    return model.eval()


def _native_kernel(wanted: str, pack_experts: bool | None, *, device: torch.device, dtype: torch.dtype,
                   expert_precision: str) -> NativeKernel | None:
    """The native kernel when it should run the experts; ConfigError when required but impossible."""
    if wanted == "torch" or (wanted == "auto" and pack_experts is True):
        return None
    reasons = []
    if pack_experts is True:
        reasons.append("pack_experts=True asks for oneDNN instead")
    if device.type != "cpu" or dtype != torch.bfloat16 or expert_precision not in ("auto", "bfloat16"):
        reasons.append("it runs bfloat16 experts on the CPU (dtype='bfloat16', expert_precision 'auto' or "
                       "'bfloat16', device 'cpu')")
    kernel = None if reasons else load_kernel()
    if kernel is None and not reasons:
        reasons.append(unavailable_reason() or "it did not load")
    if reasons and wanted == "native":
        raise ConfigError(f"expert_kernel='native' cannot be used: {'; '.join(reasons)}; use expert_kernel='auto'")
    return kernel


def _install_native(model: PrivacyFilterModel, kernel: NativeKernel, *, dtype: torch.dtype, required: bool) -> None:
    for n, layer in enumerate(model.layers):
        layer.mlp.select = NativeTopK(kernel)
        if dtype == torch.bfloat16 and NativeAttention.applies(layer.self_attn):
            layer.self_attn.native = NativeAttention(kernel, layer.self_attn)
        experts = layer.mlp.experts
        if native_applies(experts, dtype):
            layer.mlp.experts = NativeExperts.from_experts(experts, kernel)
        elif required:
            raise ConfigError(f"expert_kernel='native' cannot run layer {n}'s experts (it needs 8-bit codes with "
                              "a group size that is a multiple of 32, or bfloat16 weights, and matrix widths "
                              "that are multiples of 16); use expert_kernel='auto'")
        elif isinstance(experts, Experts) and type(experts) is Experts:
            # Dense experts were left as views of the source for packing: give them the torch path's layout.
            for name in ("gate_up_proj", "down_proj"):
                weight = getattr(experts, name)
                setattr(experts, name, torch.nn.Parameter(weight.transpose(-1, -2).contiguous().transpose(-1, -2),
                                                          requires_grad=False))


def _packing_applies(wanted: bool | None, state_dict: Mapping[str, Any], *, dtype: torch.dtype,
                     device: torch.device, expert_precision: str, quantized_experts: str) -> bool:
    """Whether to pack the experts for oneDNN (``wanted``: None = wherever it applies, True = required)."""
    if wanted is False:
        return False
    quantized = any(isinstance(value, QuantizedWeight) and key.endswith(("gate_up_proj", "down_proj"))
                    for key, value in state_dict.items())
    applies = (device.type == "cpu" and dtype == torch.bfloat16 and expert_precision in ("auto", "bfloat16")
               and not (quantized and quantized_experts == "keep") and packing_available())
    if wanted and not applies:
        raise ConfigError("pack_experts=True needs dense bfloat16 experts (dtype='bfloat16', expert_precision "
                          "'auto' or 'bfloat16', 8-bit experts dequantized) on the CPU and a torch build with "
                          "oneDNN; use pack_experts=None to pack only where it applies")
    return applies


def _module_name(key: str) -> str:
    return key[len("model."):] if key.startswith("model.") else key


def _install_quantized(model: PrivacyFilterModel, state_dict: Mapping[str, Any], *, dtype: torch.dtype,
                       device: torch.device, keep_experts: bool) -> None:
    embed = state_dict.get("model.embed_tokens.weight")
    if isinstance(embed, QuantizedWeight):
        # When the experts are dequantized, the embedding owns its codes so the mapped file can be released.
        model.embed_tokens = QuantizedEmbedding(embed, dtype=dtype, device=device, copy=not keep_experts)
    if not keep_experts:
        return
    for n, layer in enumerate(model.layers):
        prefix = f"model.layers.{n}.mlp.experts."
        gate_up, down = state_dict[prefix + "gate_up_proj"], state_dict[prefix + "down_proj"]
        if isinstance(gate_up, QuantizedWeight) or isinstance(down, QuantizedWeight):
            layer.mlp.experts = QuantizedExperts.from_experts(layer.mlp.experts, gate_up, down, dtype=dtype,
                                                               device=device)


def _single_threaded_after_fork() -> None:
    # torch's CPU thread pool (GNU OpenMP / MKL) does not survive fork(): a child that runs a model the parent
    # has already used blocks forever on the pool's futex. One thread per child avoids the pool entirely, and
    # a forked child (spaCy's nlp.pipe(n_process=N)) gets its parallelism from the processes anyway.
    torch.set_num_threads(1)


fork_hook_registered = False


def _register_fork_hook() -> None:
    """Install the hook above once per process, when the first model is built (importing changes nothing)."""
    global fork_hook_registered
    if not fork_hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_single_threaded_after_fork)
        fork_hook_registered = True


class TorchBackend:
    """A loaded PyTorch model behind the Backend protocol (``logits`` returns float32 numpy)."""

    name = "torch"

    def __init__(self, model: PrivacyFilterModel, config: ModelConfig, *,
                 viterbi_biases: Mapping[str, float] | None = None, model_path: Path | None = None) -> None:
        _register_fork_hook()
        self.model = model
        self.config = config
        self.viterbi_biases = dict(viterbi_biases) if viterbi_biases else None
        self.model_path = model_path
        self.device = next(model.parameters()).device
        if self.device.type == "cpu":
            tune_allocator()  # large activations from a warm heap (memory.py)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], config: ModelConfig, *, device: str = "cpu",
                        dtype: DType = "auto", viterbi_biases: Mapping[str, float] | None = None,
                        model_path: Path | None = None, **options: Any) -> "TorchBackend":
        """Build from canonical HF-named tensors; ``options`` go to ``build_model`` (e.g. expert_precision)."""
        model = build_model(state_dict, config, dtype=dtype, device=device, **options)
        return cls(model, config, viterbi_biases=viterbi_biases, model_path=model_path)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """input_ids int [B, T], attention_mask bool/0-1 [B, T] -> float32 [B, T, num_labels]."""
        ids = torch.as_tensor(np.asarray(input_ids, dtype=np.int64), device=self.device)
        mask = torch.as_tensor(np.asarray(attention_mask).astype(bool), device=self.device)
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ConfigError(f"input_ids and attention_mask must both be [batch, seq]; got {tuple(ids.shape)} "
                              f"and {tuple(mask.shape)}")
        if ids.shape[1] == 0:
            return np.zeros((ids.shape[0], 0, self.config.num_labels), dtype=np.float32)
        with torch.inference_mode():
            out = self.model(ids, mask)
        return out.float().cpu().numpy()


def load(info: CheckpointInfo, *, device: str = "auto", dtype: DType = "auto", quantize: int | None = None,
         **options: Any) -> TorchBackend:
    """Load a checkpoint described by ``info`` (see checkpoint.inspect_checkpoint) into the torch runtime."""
    if quantize is not None:
        raise ConfigError(f"the torch backend runs checkpoints as stored; quantize={quantize!r} is not supported "
                          "(use an 8-bit MLX artifact, which the torch backend runs directly, or quantize=None)")
    unknown = sorted(set(options) - set(LOAD_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown torch backend option(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(LOAD_OPTIONS)}")
    state_dict = read_state_dict(info)
    options.setdefault("own_weights", True)
    return TorchBackend.from_state_dict(state_dict, info.config, device=device, dtype=dtype,
                                        viterbi_biases=info.viterbi_biases, model_path=info.path, **options)
