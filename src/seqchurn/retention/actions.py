"""Retention actions: one registry entry per action, read by the plan (DESIGN section 7).

An entry names the action, the settings it needs in `retention.actions.<name>` besides
`cost` and `acceptance`, and, when the plan carries something for its users (a coupon's
value, the recommended items), the plan column and how it is filled. The rules in
`retention.rules` choose among the actions. Adding an action is one `register(Action(...))`
call here, its settings in conf/retention/default.yaml and a rule that picks it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seqchurn.errors import DataError

NO_ACTION = "none"
BASE_SETTINGS = ("cost", "acceptance")


@dataclass(frozen=True)
class Targets:
    """The users one action is planned for, and what filling its column may read."""

    user_id: np.ndarray  # (n,) object
    cutoff: np.ndarray  # (n,) datetime64[ns], the plan date of each user
    events: pd.DataFrame | None  # cleaned events (category in event_type), None = not read


@dataclass(frozen=True)
class Action:
    """A retention action.

    Attributes:
        name: the name used in `retention.actions` and `retention.rules`.
        settings: keys of `retention.actions.<name>` besides cost and acceptance.
        column: the plan column this action fills for its users (None: nothing to add).
        fill: (settings, targets) -> (n,) values of `column` for the targeted users.
        empty: the value of `column` for every other user.
        builtin: always available, costs nothing and has no settings (the `none` action).
    """

    name: str
    settings: tuple[str, ...] = ()
    column: str | None = None
    fill: Callable[[Mapping, Targets], np.ndarray] | None = None
    empty: object = None
    builtin: bool = False


ACTIONS: dict[str, Action] = {}


def register(action: Action) -> Action:
    """Add an action to the registry; the plan knows it from then on."""
    if action.name in ACTIONS:
        raise ValueError(f"action {action.name!r} is registered already")
    if (action.column is None) != (action.fill is None):
        raise ValueError(f"action {action.name!r} needs both a column and a fill, or neither")
    ACTIONS[action.name] = action
    return action


def check_actions(actions: Mapping) -> dict[str, dict]:
    """Validate `retention.actions` against the registry; the built-in `none` is added.

    Returns:
        {name: settings} with float `cost` (>= 0) and `acceptance` (in [0, 1]).
    """
    configurable = [a.name for a in ACTIONS.values() if not a.builtin]
    out = {}
    for name, spec in dict(actions or {}).items():
        if name not in configurable:
            raise DataError(
                f"unknown action {name!r} in retention.actions: use {', '.join(configurable)}"
            )
        spec = dict(spec or {})
        allowed = {*BASE_SETTINGS, *ACTIONS[name].settings}
        if set(spec) - allowed:
            raise DataError(
                f"retention.actions.{name} has unknown key(s) {sorted(set(spec) - allowed)}; "
                f"allowed {sorted(allowed)}"
            )
        if allowed - set(spec):
            raise DataError(f"retention.actions.{name} lacks {sorted(allowed - set(spec))}")
        cost, acc = float(spec["cost"]), float(spec["acceptance"])
        if cost < 0 or not 0 <= acc <= 1:
            raise DataError(
                f"retention.actions.{name} needs cost >= 0 and acceptance in [0, 1], "
                f"got {cost} and {acc}"
            )
        out[name] = {**spec, "cost": cost, "acceptance": acc}
    if not out:
        raise DataError(
            "retention.actions is empty: define at least one of " + ", ".join(configurable)
        )
    for action in ACTIONS.values():
        if action.builtin:
            out[action.name] = {"cost": 0.0, "acceptance": 0.0}
    return out


def per_user(planned: np.ndarray, actions: Mapping[str, Mapping], key: str) -> np.ndarray:
    """(N,) float: the `key` setting (cost, acceptance) of each user's planned action."""
    return pd.Series(planned).map({k: v[key] for k, v in actions.items()}).to_numpy(np.float64)


def action_columns(planned: np.ndarray, actions: Mapping[str, Mapping], targets: Targets) -> dict:
    """The column of every registered action that has one, in registry order.

    An action's users get its `fill` values (when it is configured), everyone else `empty`.
    """
    out = {}
    for action in ACTIONS.values():
        if action.column is None:
            continue
        # a text column must stay object: a fixed-width numpy string would truncate values
        dtype = object if isinstance(action.empty, str) else np.float64
        values = np.full(len(planned), action.empty, dtype=dtype)
        rows = np.flatnonzero(planned == action.name)
        if action.name in actions and len(rows):
            part = Targets(targets.user_id[rows], targets.cutoff[rows], targets.events)
            values[rows] = action.fill(actions[action.name], part)
        out[action.column] = values
    return out


def recommend(
    events: pd.DataFrame, user_ids: np.ndarray, cutoff_day: int, n_items: int = 3
) -> np.ndarray:
    """Each user's `n_items` most frequent `event_type` values on or before the cutoff, "; "-joined.

    The caller puts the category (or item) in `event_type` when the data has one. Ties go to
    the more popular value overall; users with no history get the most popular values; when
    the data has a single value there is nothing to recommend and the result is "".
    """
    past = events.loc[events["day"].to_numpy() <= cutoff_day, ["user_id", "event_type"]]
    popularity = past["event_type"].value_counts()
    if len(popularity) < 2 or n_items < 1:
        return np.full(len(user_ids), "", dtype=object)
    popular = "; ".join(sorted(popularity.index[:n_items], key=lambda v: (-popularity[v], v)))
    wanted = past[past["user_id"].isin(set(user_ids))]
    counts = wanted.groupby(["user_id", "event_type"]).size().rename("n").reset_index()
    counts["pop"] = popularity.reindex(counts["event_type"]).to_numpy()
    counts = counts.sort_values(
        ["user_id", "n", "pop", "event_type"], ascending=[True, False, False, True]
    )
    counts["pos"] = counts.groupby("user_id").cumcount()
    top = counts[counts["pos"] < n_items].pivot(index="user_id", columns="pos", values="event_type")
    joined = top[0].astype(str)
    for j in range(1, top.shape[1]):
        nxt = top[j]
        joined = joined.where(nxt.isna(), joined + "; " + nxt.astype(str))
    return pd.Series(joined).reindex(user_ids).fillna(popular).to_numpy(dtype=object)


def _coupon_value(settings: Mapping, targets: Targets) -> np.ndarray:
    return np.full(len(targets.user_id), float(settings["coupon_value"]))


def _recommended(settings: Mapping, targets: Targets) -> np.ndarray:
    out = np.full(len(targets.user_id), "", dtype=object)
    if targets.events is None:
        return out
    days = targets.cutoff.astype("datetime64[D]").astype(np.int64)
    for day in np.unique(days):  # one pass over the log per plan date (usually one)
        rows = np.flatnonzero(days == day)
        out[rows] = recommend(
            targets.events,
            targets.user_id[rows],
            cutoff_day=int(day),
            n_items=int(settings["n_items"]),
        )
    return out


register(
    Action("coupon", ("coupon_value",), column="coupon_value", fill=_coupon_value, empty=np.nan)
)
register(Action("recommendation", ("n_items",), column="recommended", fill=_recommended, empty=""))
register(Action("care_contact"))
register(Action(NO_ACTION, builtin=True))
