"""Fine-tune a Privacy Filter checkpoint on labelled spans and save it in the HF format (PyTorch).

Gold spans become BIOES targets on the o200k tokens (``targets.py``); the loss is token cross-entropy on the
classifier. ``mode`` chooses what trains (``lora.prepare_model``). Each epoch ends with span P/R/F on a dev
split; training stops early when dev F1 has not improved for ``patience`` epochs, and the best epoch's
weights are saved, adapters merged, with a ``viterbi_calibration.json`` fitted on the dev split.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..backends.torch_backend import TorchBackend, build_model, read_state_dict
from ..backends.torch_model import PrivacyFilterModel
from ..checkpoint import inspect_checkpoint, resolve_model_path, save_checkpoint
from ..checkpoint.files import TOKENIZER_FILE
from ..detector import Detector
from ..errors import ConfigError
from ..evaluate import PRF
from ..labels import LabelScheme
from ..tokens import Tokenizer, get_tokenizer
from .calibrate import CalibrationReport, cache_logits, calibrate, score_spans, span_counts, total
from .data import LabelledDoc, check_classes, data_classes, split_examples
from .torch_lora import MergedStateDict, extend_classifier, prepare_model
from .options import TrainConfig
from .operating_point import write_operating_point
from .targets import chunk_doc, encode_docs

log = logging.getLogger(__name__)

IGNORE = -100  # cross-entropy target of padding


class TrainResult(NamedTuple):
    """The saved checkpoint folder, one record per epoch (loss, dev P/R/F1), the dev calibration, and the
    trained model in memory (adapters not merged)."""

    path: Path
    history: list[dict[str, float]]
    best_epoch: int
    calibration: CalibrationReport | None
    model: PrivacyFilterModel


def load_for_training(model: str | os.PathLike, *, revision: str | None = None, device: str = "auto",
                      dtype: str = "auto", mode: str = "lora") -> tuple[PrivacyFilterModel, Any]:
    """A model built for training (dense torch experts, unpacked: the native kernel has no gradients; float32 for
    full fine-tuning) and its checkpoint info."""
    info = inspect_checkpoint(resolve_model_path(model, revision=revision))
    state_dict = read_state_dict(info)
    net = build_model(state_dict, info.config, dtype="float32" if mode == "full" else dtype, device=device,
                      quantized_experts="dequantize", pack_experts=False, own_weights=True,
                      expert_kernel="torch")
    return net, info


def body_features(model: PrivacyFilterModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                  body_grad: bool, checkpointing: bool) -> torch.Tensor:
    """``PrivacyFilterModel.forward`` up to the classifier, with the body optionally frozen (no graph kept) or
    checkpointed per block. input_ids int64 [B, T], attention_mask bool [B, T] -> float32 [B, T, D]."""
    real_rows = None if bool(attention_mask.all()) else attention_mask.reshape(-1).nonzero().squeeze(1)
    with torch.set_grad_enabled(body_grad and torch.is_grad_enabled()):
        x = model.embed_tokens(input_ids).float()
        for layer in model.layers:
            if checkpointing and body_grad:  # recompute each block in backward: activations of one block at a time
                x = checkpoint(layer, x, attention_mask, real_rows, use_reentrant=False)
            else:
                x = layer(x, attention_mask, real_rows)
        return model.norm(x)


def forward_logits(model: PrivacyFilterModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                   body_grad: bool, checkpointing: bool) -> torch.Tensor:
    """Logits [B, T, C] through ``body_features`` and the classifier."""
    return model.score(body_features(model, input_ids, attention_mask, body_grad=body_grad,
                                     checkpointing=checkpointing))


def train_step(model: PrivacyFilterModel, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
               input_ids: torch.Tensor, tags: torch.Tensor, *, body_grad: bool, checkpointing: bool,
               bf16: bool, features: torch.Tensor | None = None) -> float:
    """One optimiser step on a batch: input_ids int64 [B, T]; tags int64 [B, T] (``IGNORE`` on padding);
    ``features`` [B, T, D]: the frozen body's output when already known (head mode). Returns the mean loss."""
    with torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        if features is None:
            logits = forward_logits(model, input_ids, tags != IGNORE, body_grad=body_grad,
                                    checkpointing=checkpointing)
        else:
            logits = model.score(features)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tags.reshape(-1), ignore_index=IGNORE)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return float(loss.detach())


def train(model: str | os.PathLike, docs: Sequence[LabelledDoc], output: str | os.PathLike, *,
          config: TrainConfig = TrainConfig(), revision: str | None = None, device: str = "auto",
          dtype: str = "auto", tokenizer: Tokenizer | str | os.PathLike | None = None,
          dev_docs: Sequence[LabelledDoc] | None = None, progress: bool = False) -> TrainResult:
    """Fine-tune ``model`` (folder or Hub id) on ``docs`` and write the result to the new folder ``output``.

    ``dev_docs`` None splits ``config.dev_fraction`` of ``docs`` off (by text hash) for evaluation, early
    stopping and calibration. Raises ConfigError for unknown labels (unless ``extend_labels``), an output
    folder that exists and is not empty, or no training documents.
    """
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output folder '{out}' exists and is not empty; choose a new folder (inputs and "
                          "earlier results are never overwritten)")
    if dev_docs is None:
        docs, dev_docs = split_examples(docs, config.dev_fraction)
    if not docs:
        raise ConfigError("no training documents (after the dev split); give more labelled documents")
    torch.manual_seed(config.seed)
    net, info = load_for_training(model, revision=revision, device=device, dtype=dtype, mode=config.mode)
    new_classes = check_classes([*docs, *dev_docs], LabelScheme.from_id2label(net.config.id2label).classes,
                                allow_new=config.extend_labels)
    if new_classes:
        log.info("adding %d new class(es) to the classifier: %s", len(new_classes), ", ".join(new_classes))
        extend_classifier(net, new_classes)
    scheme = LabelScheme.from_id2label(net.config.id2label)
    body_dtype = net.layers[0].self_attn.q_proj.weight.dtype
    params = prepare_model(net, config.mode, rank=config.lora_rank, alpha=config.lora_alpha)
    if not isinstance(tokenizer, Tokenizer):
        folder_tokenizer = info.path / TOKENIZER_FILE
        tokenizer = get_tokenizer(tokenizer or (folder_tokenizer if folder_tokenizer.is_file() else None))
    chunks = [c for d in encode_docs(docs, tokenizer, scheme) for c in chunk_doc(d, config.max_tokens)]
    log.info("training %s: %d parameters in %d chunk(s) of <= %d tokens; %d dev document(s)", config.mode,
             sum(p.numel() for p in params), len(chunks), config.max_tokens, len(dev_docs))
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    bf16 = config.precision == "bfloat16" or (config.precision == "auto" and body_dtype == torch.bfloat16)
    rng = np.random.default_rng(config.seed)
    history: list[dict[str, float]] = []
    best_f1, best_epoch, best_state = -1.0, 0, None
    # Head mode: the body is frozen, so its output per chunk (4 bytes x hidden size per token) is computed in the
    # first epoch only; later epochs train the classifier without running the model.
    cache: dict[int, torch.Tensor] | None = {} if config.mode == "head" and config.cache_features else None
    for epoch in range(1, config.epochs + 1):
        order = rng.permutation(len(chunks))
        batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        bar = _progress(batches, progress, f"epoch {epoch}/{config.epochs}")
        losses = []
        net.train()
        for batch in bar:
            ids, tags = _collate([chunks[i] for i in batch], net.config.pad_token_id, net.score.weight.device)
            features = None if cache is None else _cached_features(net, batch, ids, tags, cache, bf16=bf16)
            losses.append(train_step(net, optimizer, params, ids, tags, body_grad=config.mode != "head",
                                     checkpointing=config.gradient_checkpointing, bf16=bf16, features=features))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
        record = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan")}
        if dev_docs:
            prf = dev_counts(net, tokenizer, dev_docs)
            record.update(dev_precision=prf.precision, dev_recall=prf.recall, dev_f1=prf.f1)
        history.append(record)
        log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch"))
        score = record.get("dev_f1", float(epoch))  # without a dev split the last epoch is kept
        if score > best_f1:
            best_f1, best_epoch = score, epoch
            best_state = [p.detach().clone() for p in params]
        elif epoch - best_epoch >= config.patience:
            log.info("dev F1 has not improved for %d epoch(s); stopping early", config.patience)
            break
    if best_state is not None:
        with torch.no_grad():
            for p, saved in zip(params, best_state):
                p.copy_(saved)
    net.eval()
    save_checkpoint(MergedStateDict(net), net.config, out, format="hf", dtype=config.save_dtype)
    if (info.path / TOKENIZER_FILE).is_file():
        shutil.copyfile(info.path / TOKENIZER_FILE, out / TOKENIZER_FILE)
    report = None
    if config.calibrate and dev_docs:
        try:
            report = calibrate(Detector(TorchBackend(net, net.config), tokenizer=tokenizer), dev_docs)
            write_operating_point(out, report.operating_point)
        except ConfigError as exc:  # too few dev documents to fit and report: the checkpoint stands without
            log.warning("no viterbi_calibration.json written: %s", exc)
    return TrainResult(out, history, best_epoch, report, net)


def dev_counts(model: PrivacyFilterModel, tokenizer: Tokenizer, docs: Sequence[LabelledDoc]) -> PRF:
    """Exact-match span counts of the model (zero biases, no thresholds) on ``docs``, over the data's classes."""
    model.eval()
    detector = Detector(TorchBackend(model, model.config), tokenizer=tokenizer)
    cached = cache_logits(detector, docs)
    return total(span_counts(score_spans(cached, detector.scheme, detector.biases, data_classes(docs))))


def _collate(chunks: list[tuple[np.ndarray, np.ndarray]], pad_id: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    seq = max(len(ids) for ids, _ in chunks)
    ids = np.full((len(chunks), seq), pad_id, dtype=np.int64)
    tags = np.full((len(chunks), seq), IGNORE, dtype=np.int64)
    for row, (chunk_ids, chunk_tags) in enumerate(chunks):
        ids[row, :len(chunk_ids)], tags[row, :len(chunk_tags)] = chunk_ids, chunk_tags
    return torch.as_tensor(ids, device=device), torch.as_tensor(tags, device=device)


def _cached_features(model: PrivacyFilterModel, batch: np.ndarray, input_ids: torch.Tensor, tags: torch.Tensor,
                     cache: dict[int, torch.Tensor], *, bf16: bool) -> torch.Tensor:
    """Body features [B, T, D] of a batch of chunks, from ``cache`` (filled by running the body when missing)."""
    lengths = (tags != IGNORE).sum(1).tolist()
    if any(int(i) not in cache for i in batch):
        with torch.no_grad(), torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = body_features(model, input_ids, tags != IGNORE, body_grad=False, checkpointing=False)
        for row, i in enumerate(batch):
            cache[int(i)] = out[row, :lengths[row]].float().clone()
    features = torch.zeros(*input_ids.shape, model.config.hidden_size, device=input_ids.device)
    for row, i in enumerate(batch):
        features[row, :lengths[row]] = cache[int(i)]
    return features


def _progress(batches: list[Any], enabled: bool, description: str):
    if not enabled:
        return batches
    try:
        from tqdm import tqdm
    except ImportError:  # the progress bar is a nicety: log lines say the same at the end of each epoch
        return batches
    return tqdm(batches, desc=description, unit="batch", leave=False)
