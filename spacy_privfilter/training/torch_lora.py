"""What trains: LoRA adapters on attention and experts, differentiable experts, and merging for saving.

The inference model (``backends/torch_model.py``) computes its experts with in-place, ``out=`` kernels that
autograd cannot go through. ``TrainableExperts`` replaces them, with the same mathematics in differentiable
ops, when gradients must flow through the body (LoRA or full fine-tuning); head-only training keeps the fast
inference modules and runs the body without gradients. Adapters add ``scale * x A B`` next to a frozen weight
and are merged into it (``merged_state_dict``) when the checkpoint is written.
"""
from __future__ import annotations

import math
from typing import Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backends.torch_model import Experts, PrivacyFilterModel
from ..backends.torch_quant import QuantizedEmbedding
from ..config import ModelConfig
from .options import TrainMode

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
EXPERT_MATRICES = ("gate_up_proj", "down_proj")


class LoRALinear(nn.Module):
    """``base(x) + scale * x A^T B^T`` with A [r, in] (small random) and B [out, r] (zeros: starts as ``base``)."""

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features, device=base.weight.device)
                                   / math.sqrt(base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))

    @property
    def weight(self) -> torch.Tensor:  # the block reads the attention weight dtype
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(x.to(self.lora_a.dtype), self.lora_a), self.lora_b) * self.scale
        return self.base(x) + update.to(x.dtype)

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight.float() + self.scale * (self.lora_b.float() @ self.lora_a.float())


class TrainableExperts(nn.Module):
    """``Experts`` in differentiable ops, with optional per-expert LoRA (A [E, in, r], B [E, r, out])."""

    def __init__(self, experts: Experts, *, rank: int = 0, alpha: float = 16.0, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.num_experts, self.half = experts.num_experts, experts.intermediate_size
        self.alpha, self.limit = experts.alpha, experts.limit
        dtype = dtype or experts.down_proj_bias.dtype
        for name in EXPERT_MATRICES:
            if type(experts) is Experts and getattr(experts, name).dtype == dtype:
                weight = getattr(experts, name).data  # shared, not copied: the full model's experts are 2.5 GB
            else:  # quantized or packed experts: dense [E, in, out] once
                weight = torch.stack([experts.expert_weight(name, e, dtype) for e in range(self.num_experts)])
            setattr(self, name, nn.Parameter(weight, requires_grad=False))
            setattr(self, name + "_bias", nn.Parameter(getattr(experts, name + "_bias").data.to(dtype),
                                                       requires_grad=False))
        self.rank, self.scale = rank, (alpha / rank if rank else 0.0)
        if rank:
            device = self.down_proj.device
            for name in EXPERT_MATRICES:
                e, fan_in, fan_out = getattr(self, name).shape
                setattr(self, f"lora_{name}_a", nn.Parameter(torch.randn(e, fan_in, rank, device=device)
                                                             / math.sqrt(fan_in)))
                setattr(self, f"lora_{name}_b", nn.Parameter(torch.zeros(e, rank, fan_out, device=device)))

    def swiglu(self, gate_up: torch.Tensor) -> torch.Tensor:
        """The clamped SwiGLU of ``Experts.swiglu``, out of place."""
        gate = gate_up[:, :self.half].float().clamp(max=self.limit)
        up = gate_up[:, self.half:].float().clamp(min=-self.limit, max=self.limit) + 1
        return gate * torch.sigmoid(gate * self.alpha) * up

    def project(self, name: str, expert: int, rows: torch.Tensor) -> torch.Tensor:
        weight = getattr(self, name)[expert]
        out = torch.addmm(getattr(self, name + "_bias")[expert].to(rows.dtype), rows, weight.to(rows.dtype))
        if self.rank:
            a, b = getattr(self, f"lora_{name}_a")[expert], getattr(self, f"lora_{name}_b")[expert]
            out = out + ((rows.to(a.dtype) @ a) @ b * self.scale).to(out.dtype)
        return out

    def forward(self, x: torch.Tensor, expert_ids: torch.Tensor, routing_weights: torch.Tensor) -> torch.Tensor:
        """x: [N, D]; expert_ids, routing_weights: [N, k]. Returns the weighted sum in float32 [N, D]."""
        top_k = expert_ids.shape[1]
        flat = expert_ids.reshape(-1)
        order = torch.argsort(flat, stable=True)
        token_of_pair = order // top_k
        rows = x.to(self.down_proj.dtype)[token_of_pair]
        pieces, start = [], 0
        for expert, count in enumerate(torch.bincount(flat, minlength=self.num_experts).tolist()):
            if count:
                hidden = self.swiglu(self.project("gate_up_proj", expert, rows[start:start + count]))
                pieces.append(self.project("down_proj", expert, hidden.to(rows.dtype)))
                start += count
        y = torch.cat(pieces).float() * routing_weights.reshape(-1)[order].float()[:, None]
        return torch.zeros(x.shape[0], x.shape[1], dtype=torch.float32, device=x.device).index_add(0, token_of_pair, y)

    def merged(self, name: str) -> torch.Tensor:
        weight = getattr(self, name).float()
        if self.rank:
            weight = weight + self.scale * torch.bmm(getattr(self, f"lora_{name}_a").float(),
                                                     getattr(self, f"lora_{name}_b").float())
        return weight


def prepare_model(model: PrivacyFilterModel, mode: TrainMode, *, rank: int = 8, alpha: float = 16.0) -> list[nn.Parameter]:
    """Make ``model`` trainable in ``mode`` (in place) and return the parameters to optimise.

    head: only the classifier. lora: adapters on q/k/v/o and on every expert, plus the classifier. full:
    every weight, cast to float32 (an optimiser needs float32 master weights).
    """
    if mode != "head":
        for layer in model.layers:
            layer.mlp.experts = TrainableExperts(layer.mlp.experts, rank=rank if mode == "lora" else 0, alpha=alpha)
            if mode == "lora":
                for proj in ATTENTION_PROJECTIONS:
                    setattr(layer.self_attn, proj, LoRALinear(getattr(layer.self_attn, proj), rank=rank, alpha=alpha))
        if isinstance(model.embed_tokens, QuantizedEmbedding):
            ids = torch.arange(model.config.vocab_size, device=model.score.weight.device)
            model.embed_tokens = nn.Embedding.from_pretrained(model.embed_tokens(ids), freeze=True)
    if mode == "full":
        model.float()
    model.requires_grad_(False)
    trainable = [p for n, p in model.named_parameters() if mode == "full" or n.startswith("score.") or "lora_" in n]
    for p in trainable:
        p.data = p.data.float()
        p.requires_grad_(True)
    return trainable


def extend_classifier(model: PrivacyFilterModel, new_classes: list[str]) -> ModelConfig:
    """Append ``B-/I-/E-/S-`` rows for ``new_classes`` to the classifier (old rows kept); returns the new config."""
    config = model.config
    labels = tuple(config.id2label) + tuple(f"{p}-{c}" for c in new_classes for p in "BIES")
    old = model.score
    new = nn.Linear(old.in_features, len(labels), device=old.weight.device, dtype=torch.float32)
    with torch.no_grad():
        new.weight.zero_()
        new.bias.zero_()
        new.weight[:old.out_features] = old.weight.float()
        new.bias[:old.out_features] = old.bias.float()
    model.score = new.requires_grad_(False)
    model.config = config.with_updates(id2label=labels)
    return model.config


class MergedStateDict(Mapping[str, np.ndarray]):
    """The canonical (HF-named) float32 tensors of a prepared model with adapters merged, as numpy arrays for
    ``save_checkpoint``, computed on access (so writing the full-size model never holds a second float32 copy)."""

    def __init__(self, model: PrivacyFilterModel) -> None:
        self.model = model
        self.names = ["model.embed_tokens.weight"]
        for n in range(len(model.layers)):
            p = f"model.layers.{n}."
            self.names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight", p + "self_attn.sinks"]
            self.names += [f"{p}self_attn.{proj}.{leaf}" for proj in ATTENTION_PROJECTIONS for leaf in ("weight", "bias")]
            self.names += [p + "mlp.router.weight", p + "mlp.router.bias"]
            self.names += [f"{p}mlp.experts.{m}{suffix}" for m in EXPERT_MATRICES for suffix in ("", "_bias")]
        self.names += ["model.norm.weight", "score.weight", "score.bias"]

    def __getitem__(self, name: str) -> np.ndarray:
        return self._tensor(name).detach().float().cpu().numpy()

    def _tensor(self, name: str) -> torch.Tensor:
        with torch.no_grad():
            path = name[len("model."):] if name.startswith("model.") else name
            module_path, _, leaf = path.rpartition(".")
            module = self.model.get_submodule(module_path)
            if isinstance(module, LoRALinear) and leaf == "weight":
                return module.merged_weight()
            if isinstance(module, LoRALinear):
                module = module.base
            if isinstance(module, TrainableExperts) and leaf in EXPERT_MATRICES:
                return module.merged(leaf)
            if isinstance(module, Experts) and leaf in EXPERT_MATRICES:
                return torch.stack([module.expert_weight(leaf, e, torch.float32) for e in range(module.num_experts)])
            if isinstance(module, QuantizedEmbedding):
                return module(torch.arange(self.model.config.vocab_size, device=self.model.score.weight.device)).float()
            return getattr(module, leaf).detach().float()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names
