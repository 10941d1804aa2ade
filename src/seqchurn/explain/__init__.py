"""Per-user reasons behind p_churn: attributions of the churn logit to the inputs, in words.

`explain_batch` attributes (explain/attribution.py) and, given the batch's raw inputs, writes
the top reasons (explain/sentences.py); `global_attribution` summarizes many batches
(plotted by `seqchurn.plots.plot_global`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from seqchurn.data.sequences import (
    EVENT_TYPE,
    INDEX,
    MASK,
    STATIC,
    SUMMARY,
    USER_ID,
    Preprocessor,
    RawInputs,
)
from seqchurn.errors import DataError
from seqchurn.explain.attribution import (
    METHODS,
    channel_frame,
    coef_attr,
    gradient_attr,
    is_linear,
    model_inputs,
    no_cudnn,
)
from seqchurn.explain.sentences import Reasons

__all__ = ["METHODS", "ExplainResult", "explain_batch", "explainer", "global_attribution"]


@dataclass
class ExplainResult:
    """Attributions of the churn logit for one batch of users, and their top reasons in words."""

    method: str
    # (B,) up to top_k sentences joined by "; ", "" when nothing raises the risk; None without
    # the batch's raw inputs
    reasons: list[str] | None
    channel_attr: pd.DataFrame  # (B, C) per entry of the feature table, index = user_id
    # (B, T) per event position, in the batch's alignment (real events oldest first), 0 on padding
    position_attr: np.ndarray
    logit: np.ndarray  # (B,) churn logit of the inputs
    baseline_logit: np.ndarray  # (B,) churn logit of the baseline (NaN when not asked for)
    mask: np.ndarray  # (B, T) bool, True on real events
    index: np.ndarray | None = None  # (B,) batch[INDEX] when given, to align with predictions

    @property
    def lengths(self) -> np.ndarray:
        return self.mask.sum(1)


def explain_batch(
    model: nn.Module,
    batch: dict,
    preprocessor: Preprocessor | dict | None = None,
    method: str = "ig",
    n_steps: int = 32,
    top_k: int = 3,
    events_per_pass: int | None = 1 << 21,
    currency: str = "$",
    raw: RawInputs | None = None,
    baseline_logit: bool = True,
) -> ExplainResult:
    """Attribute each user's churn logit to its inputs and positions; render the top reasons.

    Args:
        model: batch dict -> (B, K-1) hazard logits (e.g. ChurnModule), on any device, any mode.
        batch: the keys of data/sequences.py; padded batches are fine.
        preprocessor: the fitted Preprocessor (or its state dict); default model.preprocessing.
        method: "ig" (integrated gradients, n_steps passes), "grad_x_input" (one pass) or "coef";
            a model with linear inputs (the logistic encoder) always uses "coef" (exact, cheapest).
        n_steps: integration steps of "ig" (Gauss-Legendre); 32 keeps completeness within ~1%.
        top_k: sentences per user.
        events_per_pass: padded events (users x steps x length) per forward pass of "ig": as
            many integration steps per pass as fit, at least one step of every user; None =
            all B x n_steps rows at once.
        currency: prefix of money amounts.
        raw: the batch's raw inputs (`SnapshotDataset.raw(rows)`), which the sentences quote;
            without them `reasons` is None.
        baseline_logit: run the baselines through the model for `.baseline_logit`; the
            sentences do not need it, so scoring skips that pass of "grad_x_input" (NaN).

    Returns:
        ExplainResult with `.reasons` (B,), `.channel_attr` (B, C), `.position_attr` (B, T).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    prep = _preprocessor(model, preprocessor)
    if is_linear(model):
        method = "coef"
    elif method == "coef":
        raise ValueError("method='coef' needs the logistic encoder; use 'ig' or 'grad_x_input'")
    device = next(model.parameters()).device
    was_training = model.training
    # Dropout off: attributions must be deterministic. Switching modes walks every module,
    # which costs more than a small batch's attribution: only when something is training.
    switch = any(m.training for m in model.modules())
    if switch:
        model.eval()
    try:
        # Outside inference mode so a batch made under torch.inference_mode() can be differentiated.
        with torch.inference_mode(False), torch.enable_grad(), no_cudnn(device):
            x = model_inputs(batch, device)
            if method == "coef":
                parts = coef_attr(model, x)
            else:
                parts = gradient_attr(
                    model,
                    x,
                    method=method,
                    n_steps=n_steps,
                    internal_batch_size=_rows_per_pass(x, n_steps, events_per_pass),
                    baseline_logit=baseline_logit,
                )
    finally:
        if switch:
            model.train(was_training)
    parts = {k: v.detach().double().cpu() for k, v in parts.items()}
    x = {k: v.cpu() for k, v in x.items()}
    frame = channel_frame(parts, event_ids=x[EVENT_TYPE], table=prep.inputs, vocab=prep.vocab)
    reasons = None
    if raw is not None:
        inputs = {k: x[k].numpy() for k in (EVENT_TYPE, MASK, SUMMARY, STATIC)}
        reasons = Reasons(frame, raw=raw, batch=inputs, prep=prep, currency=currency)
        reasons = reasons.sentences(top_k)
    user_id = batch.get(USER_ID)
    if user_id is not None:
        frame.index = pd.Index(list(user_id), name="user_id")
    index = batch.get(INDEX)
    return ExplainResult(
        method=method,
        reasons=reasons,
        channel_attr=frame,
        position_attr=(parts["numeric"].sum(-1) + parts["type_pos"]).numpy(),
        logit=parts["logit"].numpy(),
        baseline_logit=parts["baseline_logit"].numpy(),
        mask=x[MASK].numpy(),
        index=None if index is None else np.asarray(torch.as_tensor(index).cpu()),
    )


def _preprocessor(model: nn.Module, preprocessor) -> Preprocessor:
    if preprocessor is None:
        state = getattr(model, "preprocessing", None) or {}
        preprocessor = state.get("preprocessor")
        if preprocessor is None:
            raise ValueError("pass the preprocessor: the model carries no preprocessing state")
    return (
        Preprocessor.from_state_dict(preprocessor)
        if isinstance(preprocessor, dict)
        else preprocessor
    )


def global_attribution(results: list[ExplainResult]) -> tuple[pd.DataFrame, np.ndarray]:
    """Mean |attribution| per input (and the signed mean), and per position back from the latest event.

    Returns:
        per_channel: DataFrame indexed by input with `mean_abs` and `mean`, largest mean_abs first.
        per_position: (L,) mean |attribution| at 0 = the most recent event, 1 = the one before, ...,
            over the users that have that many events.
    """
    attr = pd.concat([r.channel_attr for r in results], ignore_index=True).fillna(0.0)
    per_channel = pd.DataFrame({"mean_abs": attr.abs().mean(), "mean": attr.mean()})
    per_channel = per_channel.sort_values("mean_abs", ascending=False, kind="stable")
    longest = max(int(r.lengths.max(initial=0)) for r in results)
    total, count = np.zeros(longest), np.zeros(longest)
    for r in results:
        # Real events run oldest first from position 0: reverse each row's real part.
        back = _steps_back(r.mask)
        real = r.mask
        np.add.at(total, back[real], np.abs(r.position_attr[real]))
        np.add.at(count, back[real], 1)
    return per_channel, total / np.maximum(count, 1)


def _steps_back(mask: np.ndarray) -> np.ndarray:
    """(B, T) how many events back from the user's latest each position is (left-aligned mask)."""
    return mask.sum(1, keepdims=True) - 1 - np.arange(mask.shape[1])[None, :]


CHOICES = ("ig", "grad_x_input")  # what scoring.explain may name; "coef" follows from the model


def _rows_per_pass(x: dict, n_steps: int, events_per_pass: int | None) -> int | None:
    """Rows of users x steps per pass: whole steps, within `events_per_pass` padded events."""
    if events_per_pass is None:
        return None
    users, length = x[MASK].shape
    steps = min(n_steps, max(1, events_per_pass // max(users * length, 1)))
    return users * steps


def explainer(method: str | None, n_steps: int = 32) -> Callable | None:
    """The per-batch reasons function for `Scorer`: integrated gradients or gradient x input.

    Logistic models always get their exact coefficient x feature reasons; the method used
    goes to the `explain_method` column.
    """
    if method is None:
        return None
    if method not in CHOICES:
        raise DataError(f"unknown explain method {method!r}: use {', '.join(CHOICES)} or none")

    def reasons(model, batch, preprocessor, raw) -> tuple[list[str], str]:
        result = explain_batch(
            model,
            batch,
            preprocessor,
            method=method,
            n_steps=n_steps,
            raw=raw,
            baseline_logit=False,
        )
        return result.reasons, result.method

    return reasons
