"""Attributions of the churn logit to the inputs: coefficients, gradient x input, integrated gradients.

Attributions are on the logit of bin 0 (p_churn = sigmoid(logit)), relative to a baseline: the
average training user (standardized summary = 0, mean static embedding) with average events
(standardized numeric = 0, mean embedding of the known types) at the user's own real positions.
So `baseline_logit + channel_attr.sum(1) == logit`: exactly for "coef" (the logistic encoder
is linear in its inputs for bin 0), approximately for "ig", not at all for "grad_x_input".
Padded positions equal their baseline and get zero attribution.

The model tells what to attribute through: `model.encoder.embeddings` (event-type embedding or
None, static embeddings), and `model.encoder.linear_inputs` with `model.head.linear` for the
exact coefficients. An encoder without `embeddings` is attributed on summary and numeric only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pandas as pd
import torch
from captum.attr import IntegratedGradients
from torch import nn

from seqchurn.data.feature_table import Feature, Kind
from seqchurn.data.sequences import EVENT_TYPE, MASK, NUMERIC, OOV_ID, STATIC, SUMMARY

METHODS = ("ig", "grad_x_input", "coef")


def is_linear(model: nn.Module) -> bool:
    """True for a model whose churn logit is exactly linear in summary and static embeddings."""
    encoder, head = getattr(model, "encoder", None), getattr(model, "head", None)
    return bool(getattr(encoder, "linear_inputs", False)) and hasattr(head, "linear")


def no_cudnn(device: torch.device):
    # cuDNN's RNN backward works only in training mode; the native kernels have no such limit.
    return (
        torch.backends.cudnn.flags(enabled=False)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )


def model_inputs(batch: dict, device: torch.device) -> dict:
    """The batch's model inputs on `device`, as fresh tensors (padding ids zeroed)."""
    mask = batch[MASK].to(device).clone().bool()
    summary = batch[SUMMARY].to(device).clone().float()
    static = batch.get(STATIC)
    static = torch.zeros(len(summary), 0, dtype=torch.long) if static is None else static
    return {
        EVENT_TYPE: batch[EVENT_TYPE].to(device).clone().long() * mask,
        NUMERIC: batch[NUMERIC].to(device).clone().float(),
        MASK: mask,
        SUMMARY: summary,
        STATIC: static.to(device).clone().long(),
    }


def coef_attr(model: nn.Module, x: dict) -> dict:
    """Coefficient x (standardized) feature; static columns as w . (embedding - mean embedding)."""
    w, b = model.head.linear.weight[0].detach(), model.head.linear.bias[0].detach()
    _, static_embs = model.encoder.embeddings
    n_s = x[SUMMARY].shape[1]  # linear_inputs: the user vector starts with the summary
    summary_attr = x[SUMMARY] * w[:n_s]
    static_attr, base = [], b
    col = n_s
    for j, emb in enumerate(static_embs):
        wj = w[col : col + emb.embedding_dim]
        col += emb.embedding_dim
        mean = emb.weight.detach().mean(0) @ wj
        static_attr.append(emb.weight.detach()[x[STATIC][:, j]] @ wj - mean)
        base = base + mean
    with torch.no_grad():
        logit = model(x)[:, 0]
    bsz, t = x[MASK].shape
    return {
        "summary": summary_attr,
        "numeric": torch.zeros(bsz, t, x[NUMERIC].shape[-1], device=logit.device),
        "type_pos": torch.zeros(bsz, t, device=logit.device),
        "static": torch.stack(static_attr, 1)
        if static_attr
        else torch.zeros(bsz, 0, device=logit.device),
        "logit": logit,
        "baseline_logit": base.expand(bsz),
    }


@contextlib.contextmanager
def _substitute(modules: list[nn.Module]) -> Iterator[dict]:
    """Forward hooks that replace the output of modules[i] by state["values"][i] while it is set."""
    state: dict = {"values": None}

    def hook(i: int):
        return lambda module, args, out: out if state["values"] is None else state["values"][i]

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        yield state
    finally:
        for h in handles:
            h.remove()


def gradient_attr(
    model: nn.Module,
    x: dict,
    method: str,
    n_steps: int,
    internal_batch_size: int | None,
    baseline_logit: bool = True,
) -> dict:
    """Integrated gradients or gradient x (input - baseline) on summary, numeric and embedded inputs."""
    type_emb, static_embs = getattr(model.encoder, "embeddings", (None, []))
    mask, m3 = x[MASK], x[MASK].unsqueeze(-1)
    modules = ([type_emb] if type_emb is not None else []) + list(static_embs)
    with torch.no_grad():
        embedded = [type_emb(x[EVENT_TYPE])] if type_emb is not None else []  # (B, T, d)
        embedded += [e(x[STATIC][:, j]) for j, e in enumerate(static_embs)]  # (B, dim) each
    inputs = (x[SUMMARY], x[NUMERIC], *embedded)
    # Padded slots keep their own value as baseline, so (input - baseline) is 0 there. A real
    # event's baseline is the average known type (not the zero padding vector, which would credit
    # every event for merely existing); a static column's is the mean of its embeddings.
    baselines = (torch.zeros_like(x[SUMMARY]), torch.where(m3, 0.0, x[NUMERIC]))
    if type_emb is not None:
        known = type_emb.weight.detach()[OOV_ID + 1 :]
        mean_type = known.mean(0) if len(known) else torch.zeros_like(type_emb.weight[0])
        baselines += (torch.where(m3, mean_type.detach(), embedded[0]),)
    baselines += tuple(
        e.weight.detach().mean(0).expand_as(v)
        for e, v in zip(static_embs, embedded[len(baselines) - 2 :])
    )
    extra = (x[EVENT_TYPE], mask, x[STATIC])

    with _substitute(modules) as sub:

        def f(summary, numeric, *rest):
            sub["values"], (event_type, mask_, static) = rest[: len(modules)], rest[len(modules) :]
            batch = {
                EVENT_TYPE: event_type,
                NUMERIC: numeric,
                MASK: mask_,
                SUMMARY: summary,
                STATIC: static,
            }
            try:
                out = model(batch)
            finally:
                sub["values"] = None
            # + 0 x each input keeps inputs the model ignores (e.g. use_summary=False) in the graph
            return out[:, 0] + sum(
                0.0 * v.flatten(1).sum(1) for v in (summary, numeric, *rest[: len(modules)])
            )

        if baseline_logit or method == "ig":
            with torch.no_grad():
                base = f(*baselines, *extra)
        else:  # grad x input needs no pass through the baseline
            base = torch.full(mask.shape[:1], float("nan"), device=mask.device)
        if method == "ig":
            with torch.no_grad():
                logit = f(*inputs, *extra)
            attrs = IntegratedGradients(f).attribute(
                inputs,
                baselines,
                additional_forward_args=extra,
                n_steps=n_steps,
                internal_batch_size=internal_batch_size,
            )
        else:
            leaves = [v.detach().requires_grad_(True) for v in inputs]
            out = f(*leaves, *extra)  # its value is the logit: no separate forward pass
            grads = torch.autograd.grad(out.sum(), leaves)
            logit = out.detach()
            attrs = [g * (v - b) for g, v, b in zip(grads, inputs, baselines)]
    attrs = [a.detach() for a in attrs]
    zeros = torch.zeros_like(mask, dtype=attrs[0].dtype)
    statics = [a.sum(-1) for a in attrs[len(attrs) - len(static_embs) :]] if static_embs else []
    return {
        "summary": attrs[0],
        "numeric": attrs[1] * m3,  # (B, T, F)
        "type_pos": attrs[2].sum(-1) * mask if type_emb is not None else zeros,  # (B, T)
        "static": torch.stack(statics, 1) if statics else zeros[:, :0],  # (B, A)
        "logit": logit,
        "baseline_logit": base,
    }


def channel_frame(
    parts: dict, event_ids: torch.Tensor, table: tuple[Feature, ...], vocab: dict
) -> pd.DataFrame:
    """(B, C) attribution per entry of the feature table, from the per-input parts (on CPU).

    Event-type entries sum the attribution of the positions holding their type; the unseen
    entry takes the out-of-vocabulary id and any id past the vocabulary.
    """
    n_ids = max(len(vocab) + 2, int(event_ids.max()) + 1 if event_ids.numel() else 0)
    per_type = torch.zeros(len(event_ids), n_ids, dtype=torch.float64).scatter_add_(
        1, event_ids, parts["type_pos"]
    )  # (B, V)
    unseen = per_type[:, OOV_ID] + per_type[:, len(vocab) + 2 :].sum(1)
    position = {Kind.SUMMARY: 0, Kind.SEQUENCE: 0, Kind.ATTRIBUTE: 0}
    columns = {}
    for f in table:
        if f.kind == Kind.EVENT_TYPE:
            columns[f.name] = unseen if f.event_type is None else per_type[:, vocab[f.event_type]]
            continue
        j = position[f.kind]
        position[f.kind] += 1
        if f.kind == Kind.SUMMARY:
            columns[f.name] = parts["summary"][:, j]
        elif f.kind == Kind.SEQUENCE:
            columns[f.name] = parts["numeric"][..., j].sum(1)
        else:
            columns[f.name] = parts["static"][:, j]
    return pd.DataFrame({k: v.numpy() for k, v in columns.items()})
