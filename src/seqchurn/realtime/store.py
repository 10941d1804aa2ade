"""The service's state: every stored event, each user's latest score, the alerts, in one database.

SQLAlchemy Core over SQLite (the embedded default: one file, WAL, `synchronous=FULL`, so an
acknowledged batch survives a power cut) or PostgreSQL (`postgresql+psycopg://...`); the
same statements run on both. A user's events are kept whole rather than as the last
`max_len` plus running aggregates: `event_id` must be remembered for idempotency anyway, a
late event then lands where it belongs, and scoring reads exactly what the batch pipeline
would read for the same log, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from seqchurn.errors import DataError

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite's rowid is INTEGER
_DOUBLE = sa.Float(precision=53)  # amounts round-trip as float64 on both back ends

metadata = sa.MetaData()
events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", _BIGINT, primary_key=True, autoincrement=True),  # arrival order
    sa.Column("event_id", sa.String, nullable=False, unique=True),
    sa.Column("user_id", sa.String, nullable=False),
    sa.Column("ts_ns", sa.BigInteger, nullable=False),  # naive UTC, ns since 1970
    sa.Column("day", sa.Integer, nullable=False),
    sa.Column("event_type", sa.String, nullable=False),
    sa.Column("amount", _DOUBLE, nullable=False),
    sa.Column("quantity", _DOUBLE, nullable=False),
    sa.Index("events_by_user", "user_id", "ts_ns", "seq"),
)
users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.String, primary_key=True),
    sa.Column("last_day", sa.Integer, nullable=False),  # the latest stored event's day
    sa.Column("scored_day", sa.Integer),  # the day the stored score is as of
    sa.Column("tier_rank", sa.Integer),  # 0 = the highest-risk tier
    sa.Column("p_churn", _DOUBLE),
    sa.Column("model_version", sa.String),
    sa.Column("score", sa.Text),  # the prediction row as of scored_day, JSON
    sa.Index("users_by_scored_day", "scored_day"),
)
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("alert_id", _BIGINT, primary_key=True, autoincrement=True),
    sa.Column("raised_at", sa.String, nullable=False),  # server time, ISO 8601 UTC
    sa.Column("as_of", sa.Integer, nullable=False),  # the day the user was scored at
    sa.Column("user_id", sa.String, nullable=False),
    sa.Column("old_tier", sa.String, nullable=False),
    sa.Column("new_tier", sa.String, nullable=False),
    sa.Column("p_churn", _DOUBLE, nullable=False),
    sa.Column("reasons", sa.Text),
    sa.Column("model_version", sa.String, nullable=False),
)
meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("value", sa.String, nullable=False),
)

EVENT_COLUMNS = ("event_id", "user_id", "ts_ns", "day", "event_type", "amount", "quantity")
# Rows per statement: SQLite allows 32,766 bound parameters, 8 columns a row.
_ROWS_PER_INSERT = 2000
_IDS_PER_QUERY = 5000


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers go on while one writer commits
    cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged commit is on disk
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def open_engine(url: str) -> Engine:
    """An engine for `store.url`, the tables created if missing; DataError if unusable."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as err:
        raise DataError(f"store.url {url!r} is not a database URL: {err}") from err
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DataError(
            f"store.url must be sqlite:///FILE or postgresql+psycopg://..., got {url!r}"
        )
    kwargs = {"connect_args": {"check_same_thread": False}} if backend == "sqlite" else {}
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, **kwargs)
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    try:
        metadata.create_all(engine)
    except sa.exc.SQLAlchemyError as err:
        first = str(err.orig if getattr(err, "orig", None) else err).strip().splitlines()[0]
        raise DataError(f"cannot open the store {parsed.render_as_string()}: {first}") from err
    return engine


def _insert(table: sa.Table, dialect: str):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


@dataclass
class Store:
    """Typed reads and writes of the tables above; writes happen inside `transaction()`."""

    engine: Engine

    @classmethod
    def open(cls, url: str) -> "Store":
        return cls(open_engine(url))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    # -- events ---------------------------------------------------------------------------

    def add_events(self, conn: Connection, frame: pd.DataFrame) -> pd.DataFrame:
        """Insert the rows whose `event_id` is new; returns those rows (the rest were stored before).

        `frame` has EVENT_COLUMNS; an id repeated within the frame counts once.
        """
        frame = frame.drop_duplicates("event_id", keep="first")
        ids = frame["event_id"].tolist()
        seen = set()
        for part in _chunks(ids, _IDS_PER_QUERY):
            rows = conn.execute(sa.select(events.c.event_id).where(events.c.event_id.in_(part)))
            seen.update(r[0] for r in rows)
        new = frame[~frame["event_id"].isin(seen)]
        records = _records(new, EVENT_COLUMNS)
        # The conflict clause keeps a concurrent writer of the same id from failing the batch.
        stmt = _insert(events, self.dialect).on_conflict_do_nothing(index_elements=["event_id"])
        for part in _chunks(records, _ROWS_PER_INSERT):
            conn.execute(stmt, part)
        if len(new):
            last = new.groupby("user_id", sort=False)["day"].max()
            self._raise_last_day(conn, last)
            self._raise_meta_int(conn, "max_day", int(new["day"].max()))
        return new

    def _raise_last_day(self, conn: Connection, last: pd.Series) -> None:
        stmt = _insert(users, self.dialect)
        stmt = stmt.on_conflict_do_update(
            index_elements=["user_id"],
            set_={"last_day": sa.func.max(users.c.last_day, stmt.excluded.last_day)}
            if self.dialect == "sqlite"
            else {"last_day": sa.func.greatest(users.c.last_day, stmt.excluded.last_day)},
        )
        records = [{"user_id": u, "last_day": int(d)} for u, d in last.items()]
        for part in _chunks(records, _ROWS_PER_INSERT):
            conn.execute(stmt, part)

    def user_events(self, conn: Connection, user_ids: Sequence[str]) -> pd.DataFrame:
        """The stored events of `user_ids` as `clean_events` leaves a file: sorted by user (by
        code point, as Python sorts text), then time, then arrival; columns of a cleaned log."""
        frames = []
        user = events.c.user_id
        by_code_point = user.collate("C") if self.dialect == "postgresql" else user
        for part in _chunks(list(user_ids), _IDS_PER_QUERY):
            query = (
                sa.select(*[events.c[c] for c in EVENT_COLUMNS[1:]])
                .where(user.in_(part))
                .order_by(by_code_point, events.c.ts_ns, events.c.seq)
            )
            frames.append(pd.DataFrame(conn.execute(query).all(), columns=list(EVENT_COLUMNS[1:])))
        if not frames:
            frames.append(pd.DataFrame(columns=list(EVENT_COLUMNS[1:])))
        out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return pd.DataFrame(
            {
                "user_id": out["user_id"].astype(object),
                "timestamp": pd.to_datetime(out["ts_ns"].astype(np.int64), unit="ns"),
                "day": out["day"].astype(np.int64),
                "event_type": out["event_type"].astype(object),
                "amount": out["amount"].astype(np.float64),
                "quantity": out["quantity"].astype(np.float64),
            }
        )

    def count_events(self, conn: Connection) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one())

    # -- users and their scores -----------------------------------------------------------

    def user_rows(self, conn: Connection, user_ids: Sequence[str]) -> pd.DataFrame:
        """users rows of `user_ids` (absent users have no row), indexed by user_id."""
        frames = []
        for part in _chunks(list(user_ids), _IDS_PER_QUERY):
            rows = conn.execute(sa.select(users).where(users.c.user_id.in_(part))).all()
            frames.append(pd.DataFrame(rows, columns=[c.name for c in users.columns]))
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if out.empty:
            out = pd.DataFrame(columns=[c.name for c in users.columns])
        return out.set_index("user_id")

    def unscored_before(self, conn: Connection, day: int, limit: int) -> list[str]:
        """Up to `limit` users whose stored score is older than `day` (or who have none)."""
        query = (
            sa.select(users.c.user_id)
            .where(sa.or_(users.c.scored_day.is_(None), users.c.scored_day < day))
            .order_by(users.c.user_id)
            .limit(limit)
        )
        return [r[0] for r in conn.execute(query)]

    def save_scores(self, conn: Connection, scores: pd.DataFrame, day: int, version: str) -> None:
        """Store each user's score as of `day`: columns user_id, tier_rank, p_churn, score (JSON)."""
        records = [
            {
                "uid": u,
                "scored_day": int(day),
                "tier_rank": None if pd.isna(t) else int(t),
                "p_churn": None if pd.isna(p) else float(p),
                "model_version": version,
                "score": j if isinstance(j, str) else None,
            }
            for u, t, p, j in zip(
                scores["user_id"], scores["tier_rank"], scores["p_churn"], scores["score"]
            )
        ]
        stmt = (
            users.update()
            .where(users.c.user_id == sa.bindparam("uid"))
            .values(
                scored_day=sa.bindparam("scored_day"),
                tier_rank=sa.bindparam("tier_rank"),
                p_churn=sa.bindparam("p_churn"),
                model_version=sa.bindparam("model_version"),
                score=sa.bindparam("score"),
            )
        )
        for part in _chunks(records, _ROWS_PER_INSERT):
            conn.execute(stmt, part)

    def tier_counts(self, conn: Connection, day: int) -> dict[int, int]:
        """Users per tier rank among those scored as of `day`."""
        query = (
            sa.select(users.c.tier_rank, sa.func.count())
            .where(users.c.scored_day == day)
            .group_by(users.c.tier_rank)
        )
        return {int(r): int(n) for r, n in conn.execute(query) if r is not None}

    def p_churn_of_day(self, conn: Connection, day: int) -> np.ndarray:
        query = sa.select(users.c.p_churn).where(users.c.scored_day == day)
        return np.array([r[0] for r in conn.execute(query)], dtype=np.float64)

    def count_users(self, conn: Connection) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one())

    # -- alerts ---------------------------------------------------------------------------

    def add_alerts(self, conn: Connection, rows: Iterable[dict]) -> int:
        rows = list(rows)
        for part in _chunks(rows, _ROWS_PER_INSERT):
            conn.execute(alerts.insert(), part)
        return len(rows)

    def read_alerts(
        self, conn: Connection, since: str | None, tier: str | None, limit: int
    ) -> list[dict]:
        """Alerts newest first, raised at or after `since` (ISO time), into `tier` if given."""
        query = sa.select(alerts).order_by(alerts.c.alert_id.desc()).limit(limit)
        if since is not None:
            query = query.where(alerts.c.raised_at >= since)
        if tier is not None:
            query = query.where(alerts.c.new_tier == tier)
        out = []
        for row in conn.execute(query).mappings():
            item = dict(row)
            item["reasons"] = json.loads(item["reasons"]) if item["reasons"] else None
            out.append(item)
        return out

    # -- meta -----------------------------------------------------------------------------

    def meta_int(self, conn: Connection, key: str) -> int | None:
        value = conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar()
        return None if value is None else int(value)

    def _raise_meta_int(self, conn: Connection, key: str, value: int) -> None:
        current = self.meta_int(conn, key)
        if current is None:
            conn.execute(meta.insert().values(key=key, value=str(value)))
        elif value > current:
            conn.execute(meta.update().where(meta.c.key == key).values(value=str(value)))


def _records(frame: pd.DataFrame, columns: Sequence[str]) -> list[dict]:
    """Plain Python values (the drivers refuse numpy scalars on some back ends)."""
    cols = {c: frame[c].tolist() for c in columns}
    return [dict(zip(columns, values)) for values in zip(*cols.values())]


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
