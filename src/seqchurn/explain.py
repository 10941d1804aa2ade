"""Per-user reasons behind p_churn: attributions of the churn logit to input channels, in words.

Attributions are on the logit of bin 0 (p_churn = sigmoid(logit)), relative to a baseline: the
average training user (standardized summary = 0, mean static embedding) with average events
(standardized numeric = 0, mean embedding of the known types) at the user's own real positions.
So `baseline_logit + channel_attr.sum(1) == logit`: exactly for "coef" (the logistic encoder
is linear in its inputs for bin 0), approximately for "ig", not at all for "grad_x_input".
Padded positions equal their baseline and get zero attribution.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from captum.attr import IntegratedGradients
from torch import nn

from seqchurn.data.sequences import (
    EVENT_TYPE,
    INDEX,
    MASK,
    NUMERIC,
    NUMERIC_CHANNELS,
    OOV_ID,
    STATIC,
    SUMMARY,
    USER_ID,
    Preprocessor,
)
from seqchurn.models.common import EventInputEmbedding, StaticEmbedding
from seqchurn.models.heads import HazardHead
from seqchurn.models.logistic import LogisticEncoder

METHODS = ("ig", "grad_x_input", "coef")
SEQ_CHANNELS = tuple("seq_" + c.removeprefix("log_") for c in NUMERIC_CHANNELS)
TYPE_PREFIX, STATIC_PREFIX, UNSEEN = "seq_type:", "static:", "<unseen>"


@dataclass
class ExplainResult:
    """Attributions of the churn logit for one batch of users, and their top reasons in words."""

    method: str
    reasons: list[str]  # (B,) up to top_k sentences joined by "; ", "" when nothing raises the risk
    channel_attr: pd.DataFrame  # (B, C) per input channel, index = user_id
    # (B, T) per event position, in the batch's alignment (real events oldest first), 0 on padding
    position_attr: np.ndarray
    logit: np.ndarray  # (B,) churn logit of the inputs
    baseline_logit: np.ndarray  # (B,) churn logit of the baseline
    mask: np.ndarray  # (B, T) bool, True on real events
    index: np.ndarray | None = None  # (B,) batch[INDEX] when given, to align with predictions

    @property
    def lengths(self) -> np.ndarray:
        return self.mask.sum(1)


def is_logistic(model: nn.Module) -> bool:
    """True for a model whose churn logit is exactly linear in summary and static embeddings."""
    return isinstance(getattr(model, "encoder", None), LogisticEncoder) and isinstance(
        getattr(model, "head", None), HazardHead
    )


def explain_batch(
    model: nn.Module,
    batch: dict,
    preprocessor: Preprocessor | dict | None = None,
    method: str = "ig",
    n_steps: int = 32,
    top_k: int = 3,
    internal_batch_size: int | None = 4096,
    currency: str = "$",
) -> ExplainResult:
    """Attribute each user's churn logit to its input channels and positions; render the top reasons.

    Args:
        model: batch dict -> (B, K-1) hazard logits (e.g. ChurnModule), on any device, any mode.
        batch: the keys of data/sequences.py; padded batches are fine.
        preprocessor: the fitted Preprocessor (or its state dict); default model.preprocessing.
        method: "ig" (integrated gradients, n_steps passes), "grad_x_input" (one pass) or "coef";
            the logistic encoder always uses "coef" (exact and cheapest).
        n_steps: integration steps of "ig" (Gauss-Legendre); 32 keeps completeness within ~1%.
        top_k: sentences per user.
        internal_batch_size: rows per forward pass of "ig" (users x steps, at least one step of
            every user), bounding memory; None = all B x n_steps rows at once.
        currency: prefix of money amounts.

    Returns:
        ExplainResult with `.reasons` (B,), `.channel_attr` (B, C), `.position_attr` (B, T).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    prep = _preprocessor(model, preprocessor)
    if is_logistic(model):
        method = "coef"
    elif method == "coef":
        raise ValueError("method='coef' needs the logistic encoder; use 'ig' or 'grad_x_input'")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # dropout off: attributions must be deterministic
    try:
        # Outside inference mode so a batch made under torch.inference_mode() can be differentiated.
        with torch.inference_mode(False), torch.enable_grad(), _no_cudnn(device):
            inputs = _inputs(batch, device)
            if method == "coef":
                parts = _coef_attr(model, inputs)
            else:
                parts = _gradient_attr(model, inputs, method, n_steps, internal_batch_size)
    finally:
        model.train(was_training)
    return _result(parts, inputs, batch, prep, method, top_k, currency)


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


def _no_cudnn(device: torch.device):
    # cuDNN's RNN backward works only in training mode; the native kernels have no such limit.
    return (
        torch.backends.cudnn.flags(enabled=False)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )


def _inputs(batch: dict, device: torch.device) -> dict:
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


def _coef_attr(model: nn.Module, x: dict) -> dict:
    """Coefficient x (standardized) feature; static columns as w . (embedding - mean embedding)."""
    w, b = model.head.linear.weight[0].detach(), model.head.linear.bias[0].detach()
    user = model.encoder.user
    n_s = user.n_summary if user.use_summary else 0
    summary_attr = x[SUMMARY] * w[:n_s] if n_s else torch.zeros_like(x[SUMMARY])
    static_attr, base = [], b
    col = n_s
    for j, emb in enumerate(user.static.embs):
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
        "numeric": torch.zeros(bsz, t, len(NUMERIC_CHANNELS), device=logit.device),
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


def _embeddings(model: nn.Module) -> tuple[nn.Embedding | None, list[nn.Embedding]]:
    events = [m for m in model.modules() if isinstance(m, EventInputEmbedding)]
    statics = [m for m in model.modules() if isinstance(m, StaticEmbedding)]
    if len(events) > 1 or len(statics) > 1:
        raise ValueError("explain supports one event embedding and one static embedding per model")
    return (events[0].type_emb if events else None), (list(statics[0].embs) if statics else [])


def _gradient_attr(
    model: nn.Module, x: dict, method: str, n_steps: int, internal_batch_size
) -> dict:
    """Integrated gradients or gradient x (input - baseline) on summary, numeric and embedded inputs."""
    type_emb, static_embs = _embeddings(model)
    mask, m3 = x[MASK], x[MASK].unsqueeze(-1)
    modules = ([type_emb] if type_emb is not None else []) + static_embs
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
            try:
                out = model(
                    {
                        EVENT_TYPE: event_type,
                        NUMERIC: numeric,
                        MASK: mask_,
                        SUMMARY: summary,
                        STATIC: static,
                    }
                )
            finally:
                sub["values"] = None
            # + 0 x each input keeps inputs the model ignores (e.g. use_summary=False) in the graph
            return out[:, 0] + sum(
                0.0 * v.flatten(1).sum(1) for v in (summary, numeric, *rest[: len(modules)])
            )

        with torch.no_grad():
            logit, base = f(*inputs, *extra), f(*baselines, *extra)
        if method == "ig":
            attrs = IntegratedGradients(f).attribute(
                inputs,
                baselines,
                additional_forward_args=extra,
                n_steps=n_steps,
                internal_batch_size=None
                if internal_batch_size is None
                else max(internal_batch_size, len(mask)),
            )
        else:
            leaves = [v.detach().requires_grad_(True) for v in inputs]
            grads = torch.autograd.grad(f(*leaves, *extra).sum(), leaves)
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


def _result(
    parts: dict, x: dict, batch: dict, prep: Preprocessor, method: str, top_k: int, currency: str
) -> ExplainResult:
    parts = {k: v.detach().double().cpu() for k, v in parts.items()}
    ids, mask = x[EVENT_TYPE].cpu(), x[MASK].cpu()
    bsz = len(mask)
    types = prep.count_types
    n_ids = max(len(types) + 2, int(ids.max()) + 1 if ids.numel() else 0)
    per_type = torch.zeros(bsz, n_ids, dtype=torch.float64).scatter_add_(
        1, ids, parts["type_pos"]
    )  # (B, V)
    columns = {name: parts["summary"][:, j] for j, name in enumerate(prep.summary_names)}
    columns.update({name: parts["numeric"][..., j].sum(1) for j, name in enumerate(SEQ_CHANNELS)})
    columns.update({TYPE_PREFIX + t: per_type[:, prep.vocab[t]] for t in types})
    columns[TYPE_PREFIX + UNSEEN] = per_type[:, OOV_ID] + per_type[:, len(types) + 2 :].sum(1)
    columns.update(
        {STATIC_PREFIX + c: parts["static"][:, j] for j, c in enumerate(prep.static_columns)}
    )
    user_id = batch.get(USER_ID)
    frame = pd.DataFrame({k: v.numpy() for k, v in columns.items()})
    if user_id is not None:
        frame.index = pd.Index(list(user_id), name="user_id")
    position = (parts["numeric"].sum(-1) + parts["type_pos"]).numpy()
    facts = _Facts(prep, x, currency)
    reasons = [facts.reasons(i, frame.iloc[i], top_k) for i in range(bsz)]
    index = batch.get(INDEX)
    return ExplainResult(
        method=method,
        reasons=reasons,
        channel_attr=frame,
        position_attr=position,
        logit=parts["logit"].numpy(),
        baseline_logit=parts["baseline_logit"].numpy(),
        mask=mask.numpy(),
        index=None if index is None else np.asarray(torch.as_tensor(index).cpu()),
    )


# -- words ----------------------------------------------------------------------------------------
_PURCHASE_LIKE = {"purchase", "order", "buy", "transaction", "sale"}
_WINDOWED = re.compile(r"(?:count_(?P<type>.+)|spend)_(?P<days>\d+)d")


class _Facts:
    """The user's own numbers (inverted scalers, recomputed from the batch) and sentence templates."""

    def __init__(self, prep: Preprocessor, x: dict, currency: str):
        self.prep, self.currency = prep, currency
        z = x[SUMMARY].detach().double().cpu().numpy()
        self.z = z
        self.raw = np.clip(
            np.expm1(z * np.asarray(prep.summary_std) + np.asarray(prep.summary_mean)), 0, None
        )
        num = x[NUMERIC].detach().double().cpu().numpy()
        self.seq = np.expm1(
            num * np.asarray(prep.numeric_std) + np.asarray(prep.numeric_mean)
        )  # (B, T, F)
        self.mask, self.ids = x[MASK].cpu().numpy(), x[EVENT_TYPE].cpu().numpy()
        self.static_ids = x[STATIC].cpu().numpy()
        self.col = {name: j for j, name in enumerate(prep.summary_names)}
        act = prep.activity_event_types
        self.all_activity = act is None
        self.activity = set(act or prep.vocab)
        orders = act is None or any(t.lower() in _PURCHASE_LIKE for t in act)
        self.noun, self.nouns = ("order", "orders") if orders else ("active day", "active days")
        self.none_for = "no order for" if orders else "no activity for"
        self.every = "usually orders every" if orders else "usually active every"
        self.per = "order" if orders else "spend per active day"
        self.static_names = {
            c: {v: k for k, v in prep.static_vocab[c].items()} for c in prep.static_columns
        }

    def group(self, channel: str) -> str:
        """Channels that state one fact share a reason."""
        if channel == "recency_days" or (channel == SEQ_CHANNELS[3] and self.all_activity):
            return "recency"
        if channel == SEQ_CHANNELS[3]:
            return "last_seen"
        m = _WINDOWED.fullmatch(channel)
        if m and channel in self.col:
            return f"count:{m['type']}" if m["type"] else "spend"
        return channel

    def value(self, i: int, name: str) -> float:
        return float(self.raw[i, self.col[name]]) if name in self.col else float("nan")

    def reasons(self, i: int, attr: pd.Series, top_k: int) -> str:
        """Up to top_k sentences for the groups that raise user i's churn logit most, joined by '; '."""
        groups: dict[str, float] = {}
        best: dict[str, tuple[float, str]] = {}  # strongest channel of a group, for its time window
        for channel, a in attr.items():
            g = self.group(channel)
            groups[g] = groups.get(g, 0.0) + float(a)
            if g not in best or a > best[g][0]:
                best[g] = (float(a), channel)
        for g in list(groups):
            target = self.merge_target(i, g, best[g][1], groups)
            if target is not None and target != g:
                groups[target] = groups.get(target, 0.0) + groups.pop(g)
        out: list[str] = []
        for g in sorted(groups, key=lambda k: -groups[k]):
            if len(out) >= top_k or groups[g] <= 0:
                break
            text = self.sentence(i, g, best[g][1])
            if text and text not in out:
                out.append(text)
        return "; ".join(out)

    def merge_target(self, i: int, group: str, channel: str, groups: dict) -> str | None:
        """The group whose sentence already states this group's fact for user i, if any."""
        rec, freq = round(self.value(i, "recency_days")), round(self.value(i, "frequency_days"))
        window = _WINDOWED.fullmatch(channel)
        is_activity = window is not None and (
            window["type"] is None or self.all_activity or window["type"] in self.activity
        )
        n = self.value(i, channel)
        if is_activity and rec >= int(window["days"]) and round(n) == 0:
            return "recency"  # nothing in a window shorter than the silence
        if group == "last_seen" and self.last_seen(i) == rec:
            return "recency"  # the latest event was activity
        if (group == "spend" and abs(n - self.value(i, "monetary_total")) < 0.005) or (
            group == "monetary_mean" and freq <= 1
        ):
            return "monetary_total"  # all spend fell inside the window, or in one order
        if (
            (group.startswith("count:") and is_activity and round(n) == freq)
            or (freq <= 1 and group in ("mean_gap_days", "last_gap_days", SEQ_CHANNELS[2]))
            or (
                group.startswith(TYPE_PREFIX)
                and self.seq_count(i, group) == freq
                and (self.all_activity or group[len(TYPE_PREFIX) :] in self.activity)
            )
        ):
            return "frequency_days"
        if group == "mean_gap_days" and groups.get("recency", 0.0) > 0:
            return "recency"  # the recency sentence gives the usual gap
        return None

    def sentence(self, i: int, group: str, channel: str) -> str | None:
        v, days, money = self.value, _days, self.money
        only = "only " if channel in self.col and self.z[i, self.col[channel]] < 0 else ""
        freq = round(v(i, "frequency_days"))
        if group == "recency":
            rec = round(v(i, "recency_days"))
            text = f"{self.none_for} {days(rec)}" if rec > 0 else f"last {self.noun} today"
            gap = round(v(i, "mean_gap_days"))
            return f"{text}, {self.every} {days(gap)}" if freq > 1 and gap > 0 else text
        if group == "frequency_days":
            return f"{only}{freq} {self.noun if freq == 1 else self.nouns} in total"
        if group == "tenure_days":
            return f"customer for {only}{days(round(v(i, group)))}"
        if group == "monetary_mean":
            return f"average {self.per} {only}{money(v(i, group))}"
        if group == "monetary_total":
            return f"{only}{money(v(i, group))} spent in total"
        if group == "mean_gap_days":
            return f"{self.every} {days(round(v(i, group)))}"
        if group == "last_gap_days":
            return f"last two {self.nouns} {days(round(v(i, group)))} apart"
        if group.startswith("count:"):
            t, w = group[len("count:") :], _WINDOWED.fullmatch(channel)["days"]
            n = round(v(i, channel))
            what = f"no {_plural(t, 2)}" if n == 0 else f"{only}{n} {_plural(t, n)}"
            return f"{what} in the last {w} days"
        if group == "spend":
            w, s = int(_WINDOWED.fullmatch(channel)["days"]), v(i, channel)
            usual = v(i, "monetary_total") * w / max(v(i, "tenure_days"), w)
            if s < 0.5 * usual:
                return (
                    f"spend in the last {w} days fell to {money(s)} (usually about {money(usual)})"
                )
            return f"{only}{money(s)} spent in the last {w} days"
        if group in self.col:
            return f"{group.replace('_', ' ')} {v(i, group):.4g}"
        if group.startswith(STATIC_PREFIX):
            c = group[len(STATIC_PREFIX) :]
            j = self.prep.static_columns.index(c)
            return f"{c}: {self.static_names[c].get(int(self.static_ids[i, j]), 'unknown')}"
        return self.sequence_sentence(i, group)

    def sequence_sentence(self, i: int, group: str) -> str | None:
        pos = np.flatnonzero(self.mask[i])
        if len(pos) == 0:
            return None
        n_ev = "the only event" if len(pos) == 1 else f"the last {len(pos)} events"
        seq = self.seq[i, pos]  # (L, F) raw amount, quantity, gap days, days before the cutoff
        if group == "last_seen":
            return f"last seen {_ago(seq[-1, 3])}"
        if group.startswith(TYPE_PREFIX):
            t, hit = group[len(TYPE_PREFIX) :], self.type_hits(i, group)
            name = t if t != UNSEEN else "unknown type"
            n = int(hit.sum())
            if not n:
                return None
            if len(pos) == 1:
                return f"only event: a {_plural(name, 1)} {_ago(seq[0, 3])}"
            return f"{n} {_plural(name, n)} among {n_ev}, latest {_ago(seq[hit, 3].min())}"
        if group == SEQ_CHANNELS[0]:
            paid = seq[seq[:, 0] >= 0.005, 0]
            if len(pos) == 1 and len(paid):
                return f"a single order of {self.money(paid[0])}"
            return (
                f"average {self.money(paid.mean())} per order in {n_ev}"
                if len(paid)
                else f"no spend in {n_ev}"
            )
        if group == SEQ_CHANNELS[1]:
            items = seq[seq[:, 1] > 0, 1]
            return (
                f"{items.mean():.1f} items per order in {n_ev}"
                if len(items)
                else f"no items in {n_ev}"
            )
        if group == SEQ_CHANNELS[2]:
            if len(pos) < 2:
                return "only 1 event so far"
            return f"{n_ev} came {_days(round(seq[1:, 2].mean()))} apart on average"
        return None

    def type_hits(self, i: int, group: str) -> np.ndarray:
        """(L,) which of user i's real events have the type of a TYPE_PREFIX channel."""
        t, ids = group[len(TYPE_PREFIX) :], self.ids[i, self.mask[i]]
        if t == UNSEEN:
            return (ids == OOV_ID) | (ids >= len(self.prep.vocab) + 2)
        return ids == self.prep.vocab[t]

    def seq_count(self, i: int, group: str) -> int:
        return int(self.type_hits(i, group).sum())

    def last_seen(self, i: int) -> int | None:
        pos = np.flatnonzero(self.mask[i])
        return int(np.floor(self.seq[i, pos[-1], 3] + 1e-6)) if len(pos) else None

    def money(self, value: float) -> str:
        if value >= 100 or abs(value - round(value)) < 0.005:
            return f"{self.currency}{value:,.0f}"
        return f"{self.currency}{value:,.2f}"


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _ago(days_before: float) -> str:
    d = int(np.floor(days_before + 1e-6))  # an event on the cutoff day itself is today
    return "today" if d <= 0 else f"{_days(d)} ago"


def _plural(word: str, n: int) -> str:
    word = word.replace("_", " ")
    if " " in word or word.endswith(("ed", "ing")):  # "add to cart", "discounted": not a noun
        return f"{word} event" + ("" if n == 1 else "s")
    if n == 1 or word.endswith("s"):
        return word
    if word.endswith("y") and word[-2:-1] not in tuple("aeiou"):
        return word[:-1] + "ies"
    return word + "s"


# -- outputs and the global view -----------------------------------------------------------------
def reasons_frame(results: list[ExplainResult]) -> pd.DataFrame:
    """One row per explained user: user_id, index (when known), top_reasons, explain_method."""
    frames = []
    for r in results:
        f = pd.DataFrame(
            {
                "user_id": list(r.channel_attr.index),
                "top_reasons": r.reasons,
                "explain_method": r.method,
            }
        )
        if r.index is not None:
            f.insert(1, INDEX, r.index)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def global_attribution(results: list[ExplainResult]) -> tuple[pd.DataFrame, np.ndarray]:
    """Mean |attribution| per channel (and the signed mean), and per position back from the latest event.

    Returns:
        per_channel: DataFrame indexed by channel with `mean_abs` and `mean`, largest mean_abs first.
        per_position: (L,) mean |attribution| at 0 = the most recent event, 1 = the one before, ...,
            over the users that have that many events.
    """
    attr = pd.concat([r.channel_attr for r in results], ignore_index=True).fillna(0.0)
    per_channel = pd.DataFrame({"mean_abs": attr.abs().mean(), "mean": attr.mean()})
    per_channel = per_channel.sort_values("mean_abs", ascending=False, kind="stable")
    longest = max(int(r.lengths.max(initial=0)) for r in results)
    total, count = np.zeros(longest), np.zeros(longest)
    for r in results:
        for row, real in zip(r.position_attr, r.mask):
            back = np.abs(row[real][::-1])  # real events run oldest first
            total[: len(back)] += back
            count[: len(back)] += 1
    return per_channel, total / np.maximum(count, 1)


def plot_global(
    results: list[ExplainResult], path: str | Path, top_n: int = 20, max_positions: int = 50
) -> Path:
    """Save a PNG with mean |attribution| per input channel and per event position (latest = 0)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    per_channel, per_position = global_attribution(results)
    top = per_channel.head(top_n)[::-1]
    fig = Figure(figsize=(11, max(4, 0.3 * len(top) + 1.5)))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
    ax1.barh(top.index, top["mean_abs"], color="tab:red")
    ax1.set_xlabel("mean |attribution| to the churn logit")
    ax1.set_title("per input channel")
    pos = per_position[:max_positions]
    ax2.bar(np.arange(len(pos)), pos, color="tab:gray")
    ax2.set_xlabel("events back from the most recent (0 = latest)")
    ax2.set_ylabel("mean |attribution|")
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_title("per event position")
    methods = sorted({r.method for r in results})
    fig.suptitle(
        f"global attribution of p_churn ({', '.join(methods)}, {sum(len(r.reasons) for r in results)} users)"
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
