"""`retention.rules`: the first matching rule maps (tier, segment, value) to an action."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from seqchurn.errors import DataError
from seqchurn.retention.actions import NO_ACTION

RULE_KEYS = ("tier", "segment", "min_value", "max_value", "action")


def check_rules(rules: Sequence[Mapping], actions: Mapping) -> list[dict]:
    """Validate `retention.rules`: each names an action of `actions` and only known conditions."""
    out = []
    for i, rule in enumerate(list(rules or [])):
        rule = dict(rule)
        extra = set(rule) - set(RULE_KEYS)
        if extra:
            raise DataError(
                f"retention.rules[{i}] has unknown key(s) {sorted(extra)}; "
                f"allowed {sorted(RULE_KEYS)}"
            )
        if rule.get("action") not in actions:
            raise DataError(
                f"unknown action {rule.get('action')!r} in retention.rules[{i}]: "
                f"use one of {list(actions)}"
            )
        out.append(rule)
    if not out:
        raise DataError(
            "retention.rules is empty: add at least one rule mapping (tier, segment, value) "
            "to an action"
        )
    return out


def _as_list(value) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def apply_rules(
    tier: np.ndarray,
    segment: np.ndarray,
    value: np.ndarray,
    rules: Sequence[Mapping],
) -> np.ndarray:
    """Action of each user: the first rule whose conditions all hold; `none` when none does.

    A rule's conditions are `tier` and `segment` (a name or a list of names), `min_value`
    and `max_value` (on the 12-month value, inclusive); a condition a rule leaves out holds.
    """
    n = len(tier)
    action = np.full(n, NO_ACTION, dtype=object)
    open_ = np.ones(n, dtype=bool)
    tier, segment = np.asarray(tier).astype(str), np.asarray(segment).astype(str)
    for rule in rules:
        hit = open_.copy()
        if (tiers := _as_list(rule.get("tier"))) is not None:
            hit &= np.isin(tier, tiers)
        if (segs := _as_list(rule.get("segment"))) is not None:
            hit &= np.isin(segment, segs)
        if rule.get("min_value") is not None:
            hit &= value >= float(rule["min_value"])
        if rule.get("max_value") is not None:
            hit &= value <= float(rule["max_value"])
        action[hit] = rule["action"]
        open_ &= ~hit
    return action
