"""Reason sentences: the input groups that raise each user's churn logit most, in words.

Sentences quote the user's own raw numbers (data/sequences.RawInputs, never an inverted
scaler) and read what a feature is from the feature table (data/feature_table.py). Each
template is evaluated column-wise over all users of a batch at once; the only loops run
over groups and ranks, never over users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seqchurn.data.feature_table import SEQUENCE_CHANNELS, Feature, Kind, Unit
from seqchurn.data.sequences import (
    EVENT_TYPE,
    MASK,
    OOV_ID,
    STATIC,
    SUMMARY,
    Preprocessor,
    RawInputs,
)

RECENCY, LAST_SEEN, SPEND = "recency", "last_seen", "spend"
_PURCHASE_LIKE = {"purchase", "order", "buy", "transaction", "sale"}
_CHANNEL = {f.name: j for j, f in enumerate(SEQUENCE_CHANNELS)}


@dataclass
class Group:
    """Inputs that state one fact and so share one reason (e.g. the spend of every window)."""

    key: str
    members: list[int]  # positions in the feature table and the attribution frame
    feature: Feature  # the first member, whose fields say what the group is about


def group_inputs(table: Sequence[Feature], all_activity: bool) -> list[Group]:
    """The groups of `table`, in order of their first member."""
    groups: dict[str, Group] = {}
    for j, f in enumerate(table):
        if f.name == "recency_days" or (f.name == "seq_days_before_cutoff" and all_activity):
            key = RECENCY  # the latest event is the latest activity: one fact
        elif f.name == "seq_days_before_cutoff":
            key = LAST_SEEN
        elif f.kind == Kind.SUMMARY and f.window_days is not None:
            key = SPEND if f.event_type is None else f"count:{f.event_type}"
        else:
            key = f.name
        groups.setdefault(key, Group(key, [], f)).members.append(j)
    return list(groups.values())


def _text(values) -> np.ndarray:
    return np.asarray(values).astype(str).astype(object)


def _days(n: np.ndarray) -> np.ndarray:
    return _text(n) + np.where(n == 1, " day", " days").astype(object)


def _ago(days_before: np.ndarray) -> np.ndarray:
    d = np.floor(days_before + 1e-6).astype(np.int64)  # an event on the cutoff day itself is today
    return np.where(d <= 0, "today", _days(d) + " ago").astype(object)


def _format(template: str, values: np.ndarray) -> np.ndarray:
    fmt = template.format
    return np.array([fmt(v) for v in np.asarray(values, np.float64).tolist()], dtype=object)


def _plural(word: str, many: bool) -> str:
    word = word.replace("_", " ")
    if " " in word or word.endswith(("ed", "ing")):  # "add to cart", "discounted": not a noun
        return f"{word} event" + ("s" if many else "")
    if not many or word.endswith("s"):
        return word
    if word.endswith("y") and word[-2:-1] not in tuple("aeiou"):
        return word[:-1] + "ies"
    return word + "s"


def _noun(word: str, n: np.ndarray) -> np.ndarray:
    return np.where(n == 1, _plural(word, False), _plural(word, True)).astype(object)


def _rint(values) -> np.ndarray:
    # Halves round up: a mean gap of exactly 4.5 days reads "5 days", not (to even) "4 days".
    return np.floor(np.nan_to_num(np.asarray(values, np.float64)) + 0.5).astype(np.int64)


class Reasons:
    """The sentences of one batch: attributions, raw inputs and the fitted preprocessor.

    Args:
        attr: (B, C) attributions, one column per entry of `prep.inputs`.
        raw: the batch's raw inputs; summary (B, S) and numeric (B, T, F).
        batch: the batch's EVENT_TYPE ids, MASK, SUMMARY (standardized) and STATIC, as numpy.
        prep: the fitted Preprocessor (vocabularies, activity types).
        currency: prefix of money amounts.
    """

    def __init__(
        self,
        attr: pd.DataFrame,
        raw: RawInputs,
        batch: dict[str, np.ndarray],
        prep: Preprocessor,
        currency: str,
    ):
        self.table, self.prep, self.currency = prep.inputs, prep, currency
        act = prep.activity_event_types
        self.all_activity = act is None
        self.activity = set(act or prep.vocab)
        orders = act is None or any(t.lower() in _PURCHASE_LIKE for t in act)
        self.noun, self.nouns = ("order", "orders") if orders else ("active day", "active days")
        self.none_for = "no order for" if orders else "no activity for"
        self.every = "usually orders every" if orders else "usually active every"
        self.per = "order" if orders else "spend per active day"

        self.attr = attr.to_numpy(np.float64)
        self.col = {name: j for j, name in enumerate(raw.summary.columns)}
        self.value = raw.summary.to_numpy(np.float64)  # (B, S)
        self.z = np.asarray(batch[SUMMARY], np.float64)  # (B, S), below 0 = below average
        self.mask, self.ids = np.asarray(batch[MASK], bool), np.asarray(batch[EVENT_TYPE])
        self.static_ids = np.asarray(batch[STATIC])
        self.seq = raw.numeric  # (B, T, F)
        self.length = self.mask.sum(1)
        self.rec = _rint(self.raw("recency_days"))
        self.freq = _rint(self.raw("frequency_days"))
        # Per table entry: its column in the raw summary (-1: none) and its window (0: none).
        self.summary_col = np.array([self.col.get(f.name, -1) for f in self.table])
        self.window_of = np.array([f.window_days or 0 for f in self.table], np.int64)
        self.groups = group_inputs(self.table, self.all_activity)
        self.position = {g.key: k for k, g in enumerate(self.groups)}

    def raw(self, name: str) -> np.ndarray:
        return self.value[:, self.col[name]]

    def channel(self, name: str) -> np.ndarray:
        return np.where(self.mask, self.seq[..., _CHANNEL[name]], 0.0)  # (B, T)

    def money(self, v: np.ndarray) -> np.ndarray:
        whole = (v >= 100) | (np.abs(v - np.rint(v)) < 0.005)
        return self.currency + np.where(whole, _format("{:,.0f}", v), _format("{:,.2f}", v))

    def sentences(self, top_k: int) -> list[str]:
        """(B,) up to top_k distinct sentences per user, strongest group first, joined by '; '."""
        bsz = len(self.attr)
        sums = np.zeros((bsz, len(self.groups)))
        best = []  # per group, the (B,) table position of its strongest member
        for k, g in enumerate(self.groups):
            for j in g.members:  # summed in table order, as floats add
                sums[:, k] += self.attr[:, j]
            members = np.asarray(g.members)
            best.append(members[np.argmax(self.attr[:, members], axis=1)])
        total = self.merge(sums, best)
        # A group's sentences are written only once some user could still pick them: on the
        # service's small batches most groups are nobody's top reason.
        texts = np.full((bsz, len(self.groups)), None, dtype=object)
        written = np.zeros(len(self.groups), bool)
        order = np.argsort(-total, axis=1, kind="stable")
        chosen = np.full((bsz, top_k), None, dtype=object)
        count = np.zeros(bsz, np.int64)
        rows = np.arange(bsz)
        for rank in range(order.shape[1]):
            g = order[:, rank]
            wanted = (total[rows, g] > 0) & (count < top_k)
            if not wanted.any():
                break
            for k in np.unique(g[wanted & ~written[g]]):
                texts[:, k] = self.text(self.groups[k], best[k])
                written[k] = True
            text = texts[rows, g]
            ok = wanted & (text != None)  # noqa: E711
            ok &= ~(chosen == text[:, None]).any(1)
            chosen[rows[ok], count[ok]] = text[ok]
            count[ok] += 1
        filled = np.where(chosen == None, "", chosen)  # noqa: E711
        out = filled[:, 0] if top_k else np.full(bsz, "", dtype=object)
        for j in range(1, top_k):
            out = np.where(count > j, out + "; " + filled[:, j], out)
        return [str(s) for s in out]

    def merge(self, sums: np.ndarray, best: list[np.ndarray]) -> np.ndarray:
        """Move a group's weight into the group whose sentence already states its fact."""
        total, rows = sums.copy(), np.arange(len(sums))
        for k, g in enumerate(self.groups):
            target = self.merge_target(g, best[k], total[:, self.position[RECENCY]])
            moved = target != k
            total[rows[moved], target[moved]] += total[moved, k]
            total[moved, k] = -np.inf
        return total

    def windowed(self, best: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B,) window days and raw value of each user's strongest member of a windowed group."""
        return self.window_of[best], self.value[np.arange(len(best)), self.summary_col[best]]

    def merge_target(self, g: Group, best: np.ndarray, recency: np.ndarray) -> np.ndarray:
        pos, f = self.position, g.feature
        target = np.full(len(best), pos[g.key])
        windowed = f.kind == Kind.SUMMARY and f.window_days is not None
        # Spend windows sum activity; a count or an event type is activity if its type is.
        counts_activity = (
            self.all_activity
            or f.event_type in self.activity
            or (windowed and f.event_type is None)
        )
        to_recency = np.zeros(len(best), bool)
        to_total = np.zeros(len(best), bool)
        to_freq = np.zeros(len(best), bool)
        if windowed:
            window, n = self.windowed(best)
            if counts_activity:  # nothing in a window shorter than the silence
                to_recency = (self.rec >= window) & (_rint(n) == 0)
            if g.key == SPEND:  # all spend fell inside the window
                to_total = np.abs(n - self.raw("monetary_total")) < 0.005
            elif counts_activity:
                to_freq = _rint(n) == self.freq
        elif g.key == LAST_SEEN:  # the latest event was activity
            to_recency = self.last_seen() == self.rec
        elif g.key == "monetary_mean":  # one order: its mean is the total
            to_total = self.freq <= 1
        elif g.key in ("mean_gap_days", "last_gap_days", "seq_gap_prev_days"):
            to_freq = self.freq <= 1
            if g.key == "mean_gap_days":  # the recency sentence gives the usual gap
                to_recency = ~to_freq & (recency > 0)
        elif f.kind == Kind.EVENT_TYPE and counts_activity:
            to_freq = self.type_hits(f).sum(1) == self.freq
        target = np.where(to_freq, pos["frequency_days"], target)
        target = np.where(to_total, pos["monetary_total"], target)
        return np.where(to_recency, pos[RECENCY], target)

    def last_seen(self) -> np.ndarray:
        last = np.maximum(self.length - 1, 0)
        before = self.seq[np.arange(len(last)), last, _CHANNEL["seq_days_before_cutoff"]]
        return np.where(self.length > 0, np.floor(before + 1e-6), -1).astype(np.int64)

    def type_hits(self, f: Feature) -> np.ndarray:
        """(B, T) the real events of the entry's type (the unseen entry: out of vocabulary)."""
        if f.event_type is None:
            return self.mask & ((self.ids == OOV_ID) | (self.ids >= len(self.prep.vocab) + 2))
        return self.mask & (self.ids == self.prep.vocab[f.event_type])

    def only(self, best: np.ndarray) -> np.ndarray:
        """'only ' where the user's value of the summary input `best` is below the training mean."""
        cols = self.summary_col[best]
        below = (cols >= 0) & (self.z[np.arange(len(best)), np.maximum(cols, 0)] < 0)
        return np.where(below, "only ", "").astype(object)

    def text(self, g: Group, best: np.ndarray) -> np.ndarray:
        """(B,) the group's sentence for every user, None where it has nothing to say."""
        f = g.feature
        if f.kind == Kind.SEQUENCE or f.kind == Kind.EVENT_TYPE or g.key == LAST_SEEN:
            return np.where(self.length > 0, self.sequence_text(g), None)
        if f.kind == Kind.ATTRIBUTE:
            vocab = self.prep.static_vocab[f.column]
            names = np.full(len(vocab) + 1, "unknown", dtype=object)  # id 0 = unknown
            for value, code in vocab.items():
                names[code] = value
            ids = self.static_ids[:, self.prep.static_columns.index(f.column)]
            known = (ids >= 0) & (ids < len(names))
            return f"{f.column}: " + np.where(known, names[np.where(known, ids, 0)], "unknown")
        only, freq, days = self.only(best), self.freq, _days
        if g.key == RECENCY:
            text = np.where(
                self.rec > 0, f"{self.none_for} " + days(self.rec), f"last {self.noun} today"
            )
            gap = _rint(self.raw("mean_gap_days"))
            return np.where((freq > 1) & (gap > 0), text + f", {self.every} " + days(gap), text)
        if g.key == "frequency_days":
            return (
                only + _text(freq) + " " + np.where(freq == 1, self.noun, self.nouns) + " in total"
            )
        if f.window_days is not None:
            return self.window_text(g, best, only)
        v = self.raw(f.name)
        templates = {
            "tenure_days": lambda: "customer for " + only + days(_rint(v)),
            "monetary_mean": lambda: f"average {self.per} " + only + self.money(v),
            "monetary_total": lambda: only + self.money(v) + " spent in total",
            "mean_gap_days": lambda: f"{self.every} " + days(_rint(v)),
            "last_gap_days": lambda: f"last two {self.nouns} " + days(_rint(v)) + " apart",
        }
        if f.name in templates:
            return templates[f.name]()
        return f"{f.name.replace('_', ' ')} " + self.quantity(f, v)

    def quantity(self, f: Feature, v: np.ndarray) -> np.ndarray:
        """A raw value in words by its unit, for inputs without a sentence of their own."""
        if f.unit == Unit.CURRENCY:
            return self.money(v)
        return _days(_rint(v)) if f.unit == Unit.DAYS else _format("{:.4g}", v)

    def window_text(self, g: Group, best: np.ndarray, only: np.ndarray) -> np.ndarray:
        window, s = self.windowed(best)
        last = " in the last " + _text(window) + " days"
        if g.key != SPEND:
            n, t = _rint(s), g.feature.event_type
            what = np.where(n == 0, f"no {_plural(t, True)}", only + _text(n) + " " + _noun(t, n))
            return what + last
        usual = self.raw("monetary_total") * window / np.maximum(self.raw("tenure_days"), window)
        usually = " (usually about " + self.money(usual) + ")"
        fell = "spend" + last + " fell to " + self.money(s) + usually
        return np.where(s < 0.5 * usual, fell, only + self.money(s) + " spent" + last)

    def sequence_text(self, g: Group) -> np.ndarray:
        """(B,) sentences about the user's last events; only read where the user has events."""
        n_ev = np.where(
            self.length == 1, "the only event", "the last " + _text(self.length) + " events"
        )
        before = self.channel("seq_days_before_cutoff")
        if g.key == LAST_SEEN:
            return "last seen " + _ago(self.latest(before))
        f = g.feature
        if f.kind == Kind.EVENT_TYPE:
            hits = self.type_hits(f)
            n = hits.sum(1)
            name = f.event_type or "unknown type"
            latest = np.where(hits, before, np.inf).min(1, initial=np.inf)
            latest = np.where(n > 0, latest, 0.0)  # no such event: no sentence either
            alone = "only event: a " + _plural(name, False) + " " + _ago(before[:, 0])
            many = _text(n) + " " + _noun(name, n) + " among " + n_ev + ", latest " + _ago(latest)
            return np.where(n == 0, None, np.where(self.length == 1, alone, many))
        values = self.channel(f.name)
        if f.name == "seq_amount":
            paid = self.mask & (values >= 0.005)
            mean = self.masked_mean(values, paid)
            per_order = "average " + self.money(mean) + " per order in " + n_ev
            text = np.where(paid.any(1), per_order, "no spend in " + n_ev)
            single = (self.length == 1) & paid[:, 0]
            return np.where(single, "a single order of " + self.money(values[:, 0]), text)
        if f.name == "seq_quantity":
            items = self.mask & (values > 0)
            tenths = np.floor(self.masked_mean(values, items) * 10 + 0.5) / 10  # halves up
            mean = _format("{:.1f}", tenths)
            return np.where(
                items.any(1), mean + " items per order in " + n_ev, "no items in " + n_ev
            )
        if f.name == "seq_gap_prev_days":
            gaps = self.mask.copy()
            gaps[:, 0] = False  # the first event has no previous one
            apart = (
                n_ev + " came " + _days(_rint(self.masked_mean(values, gaps))) + " apart on average"
            )
            return np.where(self.length < 2, "only 1 event so far", apart)
        words = f.name.removeprefix("seq_").replace("_", " ")
        mean = self.quantity(f, self.masked_mean(values, self.mask))
        return f"average {words} " + mean + " in " + n_ev

    def latest(self, before: np.ndarray) -> np.ndarray:
        return before[np.arange(len(before)), np.maximum(self.length - 1, 0)]

    @staticmethod
    def masked_mean(values: np.ndarray, where: np.ndarray) -> np.ndarray:
        return np.where(where, values, 0.0).sum(1) / np.maximum(where.sum(1), 1)
