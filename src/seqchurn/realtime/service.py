"""The early-warning service without its HTTP layer: ingest, score, alert, sweep.

Scoring goes through `inference.Scorer`, the one scoring path of batch predict, on the
stored events of the users concerned, cleaned by the same `clean_events` as a file; so a
user's inputs at day t are those batch predict builds from the same events at cutoff t.
"Today" is the server's UTC day (`clock="server"`) or the latest event day stored
(`clock="events"`, for replays of old logs). A user's tier is compared with the tier
stored at their previous score; a rise writes an alert in the transaction that stores the
new score, so an alert is written once whatever crashes around it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from seqchurn.data.events import merge_same_day_events, read_users
from seqchurn.data.labels import to_date
from seqchurn.data.timestamps import config_day
from seqchurn.errors import DataError
from seqchurn.explain import explainer
from seqchurn.inference import Scorer, load_model
from seqchurn.realtime.groups import GroupCommit, Pending
from seqchurn.realtime.store import Store
from seqchurn.realtime.validation import (
    Conflict,
    Limits,
    NotFound,
    TooLarge,
    check_size,
    server_day,
    validate_events,
    validate_group,
)

__all__ = ["Conflict", "Limits", "NotFound", "RiskService", "TooLarge"]

CLOCKS = ("server", "events")
# Alert times as fixed-width UTC text, so that comparing the text compares the times.
STAMP = "%Y-%m-%dT%H:%M:%S.%f+00:00"


def checkpoint_hash(path: str | Path) -> str:
    """The model version: the first 12 hex digits of the checkpoint file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


class RiskService:
    """A checkpoint, a store and a clock; every public method is one request's work."""

    def __init__(
        self,
        ckpt_path: str | Path,
        store: Store,
        clock: str = "server",
        explain: str | None = "grad_x_input",
        explain_steps: int = 32,
        batch_size: int = 4096,
        limits: Limits = Limits(),
        timestamp_format: str | None = None,
        users_path: str | None = None,
        sweep_batch_users: int = 4096,
        group_wait_s: float = 0.01,
        store_reasons: bool = False,
    ):
        if clock not in CLOCKS:
            raise DataError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
        model = load_model(ckpt_path)
        state = model.preprocessing
        tiers = state.get("tiers")
        if not tiers or not tiers.get("names"):
            raise DataError(
                f"checkpoint {ckpt_path} has no risk tiers: retrain it with scripts/train.py"
            )
        self.tier_names = [str(n) for n in tiers["names"]]
        self.version = checkpoint_hash(ckpt_path)
        self.store, self.clock, self.limits = store, clock, limits
        self.timestamp_format = timestamp_format
        self.merge = bool(state.get("merge_same_day", False))
        self.users = read_users(users_path) if users_path else None
        self.sweep_batch_users = int(sweep_batch_users)
        self.store_reasons = bool(store_reasons)
        self.plain = Scorer(model, batch_size=batch_size)
        explain = None if explain in (None, "none") else explain
        self.explained = Scorer(
            model, batch_size=batch_size, explain=explainer(explain, explain_steps)
        )
        # The reasons hook a model's embeddings for their own batch, so a model scores one
        # batch at a time; reads (GET /risk, POST /score) get a copy of their own and never
        # wait for a write's scoring.
        self.reader = Scorer(
            copy.deepcopy(model), batch_size=batch_size, explain=self.explained.explain
        )
        self._read = threading.Lock()
        # One writer at a time: SQLite has one anyway, and a user rescored by two requests at
        # once could compare against a tier the other has not committed yet.
        self._write = threading.Lock()
        self._model = threading.Lock()
        self.commits = GroupCommit(self._write_group, self._write, group_wait_s)
        self.counters = {"events_ingested": 0, "alerts_raised": 0}

    # -- time -----------------------------------------------------------------------------

    def today(self, conn) -> int:
        if self.clock == "events":
            latest = self.store.meta_int(conn, "max_day")
            return server_day() if latest is None else latest
        return server_day()

    # -- input ----------------------------------------------------------------------------

    def validate(self, items: Sequence[Mapping], need_ids: bool = True) -> pd.DataFrame:
        """JSON events -> the store's columns (`validation.validate_events`)."""
        return validate_events(items, self.limits, self.timestamp_format, need_ids)

    # -- scoring --------------------------------------------------------------------------

    def _clean(self, events: pd.DataFrame) -> pd.DataFrame:
        """Validated events (from the store or a request) merged per day when training did so;
        they are checked and ordered already, as `clean_events` leaves a file."""
        return merge_same_day_events(events) if self.merge else events

    def _score(
        self, events: pd.DataFrame, day: int, explain: bool, read: bool = False
    ) -> pd.DataFrame:
        """Prediction rows (inference.Scorer's columns) of the users of raw contract `events`;
        `read` scores on the readers' model (always with reasons)."""
        if events.empty:
            return pd.DataFrame()
        writer = self.explained if explain else self.plain
        scorer, lock = (self.reader, self._read) if read else (writer, self._model)
        clean = self._clean(events)
        with lock:
            return scorer.score(clean, day, self.users)

    def inputs(self, user_ids: Sequence[str], day: int):
        """(snapshots, dataset) the model reads for `user_ids` at `day`, from the store."""
        with self.store.reading() as conn:
            events = self.store.user_events(conn, user_ids)
        return self.plain.inputs(self._clean(events), day, self.users)

    def _rank(self, tiers: pd.Series) -> np.ndarray:
        lookup = {name: i for i, name in enumerate(self.tier_names)}
        return tiers.map(lookup).to_numpy(dtype=np.float64)

    def _scored(self, events: pd.DataFrame, day: int, explain: bool) -> pd.DataFrame:
        """user_id, tier_rank, p_churn, reasons and the JSON row of each user scored."""
        scored = self._score(events, day, explain)
        if scored.empty:
            return pd.DataFrame(columns=["user_id", "tier_rank", "p_churn", "score", "reasons"])
        return pd.DataFrame(
            {
                "user_id": scored["user_id"],
                "tier_rank": self._rank(scored["risk_tier"]),
                "p_churn": scored["p_churn"],
                "score": self._json_rows(scored),
                "reasons": scored.get("top_reasons") if explain else None,
            }
        )

    def _rescore(
        self, conn, user_ids: Sequence[str], day: int, all_reasons: bool = True
    ) -> list[str]:
        """Score `user_ids` as of `day`, store the scores, alert on tier rises; returns the
        users alerted.

        With `all_reasons` every stored score carries its reasons, so GET /risk answers from
        the store all day; otherwise only the users whose tier rose get reasons, for their
        alerts, and GET /risk works out the others' when asked. The reasons (a backward pass
        and the sentences) cost ingest more than the rest of its scoring.
        """
        events = self.store.user_events(conn, user_ids)
        scored = self._scored(events, day, explain=all_reasons)
        before = self.store.user_rows(conn, user_ids)["tier_rank"].astype(np.float64)
        old = before.reindex(scored["user_id"]).to_numpy()
        rose = scored["tier_rank"].to_numpy(dtype=np.float64) < old
        if rose.any() and not all_reasons:
            risen = scored["user_id"][rose]
            explained = self._scored(events[events["user_id"].isin(set(risen))], day, True)
            scored = pd.concat([scored[~rose], explained], ignore_index=True)
        # users without activity on or before `day` get no tier, and are not rescored today
        ranked = pd.DataFrame({"user_id": list(user_ids)}).merge(scored, how="left")
        old = before.reindex(ranked["user_id"]).to_numpy()
        rose = ranked["tier_rank"].to_numpy(dtype=np.float64) < old
        stamp = pd.Timestamp.now(tz="UTC").strftime(STAMP)
        rows = [
            {
                "raised_at": stamp,
                "as_of": int(day),
                "user_id": user,
                "old_tier": self.tier_names[int(old_rank)],
                "new_tier": self.tier_names[int(new_rank)],
                "p_churn": float(p),
                "reasons": json.dumps(why if isinstance(why, str) else None),
                "model_version": self.version,
            }
            for user, new_rank, p, why, old_rank in zip(
                ranked["user_id"][rose],
                ranked["tier_rank"][rose],
                ranked["p_churn"][rose],
                ranked["reasons"][rose],
                old[rose],
            )
        ]
        self.store.save_scores(conn, ranked, day, self.version)
        self.store.add_alerts(conn, rows)
        return [row["user_id"] for row in rows]

    def _json_rows(self, scored: pd.DataFrame) -> list[str]:
        """Each prediction row as the JSON GET /risk returns (dates as YYYY-MM-DD, NaN as null)."""
        frame = scored.drop(columns=["tier_rank"], errors="ignore").rename(
            columns={"cutoff": "as_of"}
        )
        for col in ("as_of", "expected_churn_date"):
            days = frame[col].to_numpy().astype("datetime64[D]")
            text = np.datetime_as_string(days).astype(object)
            text[np.isnat(days)] = None
            frame[col] = text
        frame["model_version"] = self.version
        return frame.to_json(orient="records", lines=True, double_precision=15).splitlines()

    # -- requests -------------------------------------------------------------------------

    def ingest(self, items: Sequence[Mapping]) -> dict:
        """Store the new events (by event_id), rescore their users, alert, all in one transaction
        (which requests arriving meanwhile share: `groups.GroupCommit`); the events are
        checked (`validation.validate_group`) with the group's."""
        check_size(items, self.limits)
        pending = self.commits.submit(items)
        if pending.error is not None:
            raise pending.error
        return {"received": len(items), **pending.reply}

    def _write_group(self, group: list[Pending]) -> None:
        frame, refused = validate_group(
            [p.events for p in group], self.limits, self.timestamp_format
        )
        for p, err in zip(group, refused):
            p.error = err
        if frame.empty:  # every request refused
            return
        try:
            with self.store.transaction() as conn:
                new = self.store.add_events(conn, frame)  # a repeated id: the first request's
                touched = list(pd.unique(new["user_id"]))
                day = self.today(conn)
                alerted = self._rescore(conn, touched, day, self.store_reasons) if touched else []
                # in the transaction: a failure here must not report stored events as refused
                replies = _replies(new, alerted, len(group), to_date(day))
        except Exception as err:  # nothing was committed: every request of the group fails
            for p in group:
                p.error = p.error or err
            return
        for p, reply in zip(group, replies):  # a refused request's counts are all 0
            if p.error is None:
                p.reply = reply
        self.counters["events_ingested"] += len(new)
        self.counters["alerts_raised"] += len(alerted)

    def risk(self, user_id: str, as_of: str | None = None) -> dict:
        """One user's prediction as of today or `as_of`, from the stored events."""
        with self.store.reading() as conn:
            rows = self.store.user_rows(conn, [user_id])
            if rows.empty:
                raise NotFound(f"unknown user {user_id!r}: the store has no event of theirs")
            last = int(rows["last_day"].iloc[0])
            if as_of is None:
                day = max(self.today(conn), last)
            else:
                day = config_day(as_of, "as_of")
                if day < last:
                    raise Conflict(
                        f"as_of {to_date(day)} is before user {user_id!r}'s latest stored event "
                        f"({to_date(last)}); the store keeps no earlier state"
                    )
            stored = rows.iloc[0]
            if as_of is None and stored["scored_day"] == day and stored["score"]:
                score = json.loads(stored["score"])
                explained = score.get("top_reasons") or self.explained.explain is None
                if explained and stored["model_version"] == self.version:
                    return score
            events = self.store.user_events(conn, [user_id])
        return self._one(self._score(events, day, explain=True, read=True), user_id, day)

    def _one(self, scored: pd.DataFrame, user_id: str, day: int) -> dict:
        if scored.empty:
            raise NotFound(f"user {user_id!r} has no activity on or before {to_date(day)}")
        return json.loads(self._json_rows(scored)[0])

    def what_if(self, items: Sequence[Mapping], as_of: str | None = None) -> list[dict]:
        """Score the users of the request's events alone; nothing is read from or written to the store."""
        frame = self.validate(items, need_ids=False)
        latest = int(frame["day"].max())
        day = max(server_day() if self.clock == "server" else latest, latest)
        if as_of is not None:
            day = config_day(as_of, "as_of")
            if day < latest:
                raise Conflict(
                    f"as_of {to_date(day)} is before the latest event ({to_date(latest)})"
                )
        scored = self._score(
            frame.drop(columns=["ts_ns", "event_id"]), day, explain=True, read=True
        )
        return [json.loads(row) for row in self._json_rows(scored)] if len(scored) else []

    def sweep(self) -> dict:
        """Rescore, in batches, every user not yet scored today, so silence raises alerts too."""
        users = raised = 0
        with self.store.reading() as conn:
            # fixed for the whole sweep: under clock=events ingest moves "today" meanwhile,
            # and a moving target would sweep the same users again and again
            day = self.today(conn)
        while True:
            with self._write:
                with self.store.transaction() as conn:
                    ids = self.store.unscored_before(conn, day, self.sweep_batch_users)
                    if not ids:
                        break
                    alerted = len(self._rescore(conn, ids, day, all_reasons=False))
                # counted once committed, under the lock that ingest counts under
                self.counters["alerts_raised"] += alerted
            raised += alerted
            users += len(ids)
        return {"users_rescored": users, "alerts": raised, "as_of": to_date(day)}

    def alerts(self, since: str | None = None, tier: str | None = None, limit: int = 100) -> list:
        if tier is not None and tier not in self.tier_names:
            raise DataError(f"unknown tier {tier!r}; the tiers are {', '.join(self.tier_names)}")
        if since is not None:
            try:
                since = pd.Timestamp(since)
            except ValueError:
                raise DataError(f"since must be an ISO 8601 time, got {since!r}") from None
            since = since.tz_localize("UTC") if since.tzinfo is None else since.tz_convert("UTC")
            since = since.strftime(STAMP)
        with self.store.reading() as conn:
            rows = self.store.read_alerts(conn, since, tier, limit)
        for row in rows:
            row["as_of"] = to_date(row["as_of"])
        return rows

    def summary(self) -> dict:
        """Users per tier among those scored today, for the page and the metrics."""
        with self.store.reading() as conn:
            day = self.today(conn)
            counts = self.store.tier_counts(conn, day)
            users = self.store.count_users(conn)
        return {
            "as_of": to_date(day),
            "model_version": self.version,
            "users": users,
            "tiers": {name: counts.get(i, 0) for i, name in enumerate(self.tier_names)},
        }

    def p_churn_today(self) -> np.ndarray:
        with self.store.reading() as conn:
            p = self.store.p_churn_of_day(conn, self.today(conn))
        return p[np.isfinite(p)]


def _replies(new: pd.DataFrame, alerted: list[str], n: int, as_of: str) -> list[dict]:
    """Per request of a group: its new events, their users, and the alerts of the users it
    was the first in the group to touch (`new` keeps the requests' order)."""
    request = new["_request"].to_numpy()
    codes, users = pd.factorize(new["user_id"])
    _, first_row = np.unique(codes, return_index=True)
    first = request[first_row]
    events = np.bincount(request, minlength=n)
    pairs = np.unique(request * len(users) + codes) // max(len(users), 1)
    rescored = np.bincount(pairs, minlength=n)
    alerts = np.bincount(first[np.isin(users, alerted)], minlength=n)
    return [
        {"new": int(e), "users_rescored": int(u), "alerts": int(a), "as_of": as_of}
        for e, u, a in zip(events, rescored, alerts)
    ]
