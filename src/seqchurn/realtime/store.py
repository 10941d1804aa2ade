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

    # The statements a POST /events runs go to the driver as text with plain tuples:
    # SQLAlchemy's per-row parameter processing cost more than the database on batches of 100.

    def _sql(self, text: str) -> str:
        """`?` placeholders in the driver's style (psycopg's %s on PostgreSQL)."""
        return text.replace("?", "%s") if self.dialect == "postgresql" else text

    def _select_in(self, conn: Connection, head: str, column: str, ids: list, tail: str = ""):
        """Rows of `head WHERE column IN ids tail`, the ids in chunks a statement can bind.
        One placeholder per id, on PostgreSQL too: there `= ANY(array)` compares the column
        cast to text, and its index goes unused."""
        rows = []
        for part in _chunks(ids, _IDS_PER_QUERY):
            where = self._sql(f"{column} IN ({','.join('?' * len(part))})")
            rows += conn.exec_driver_sql(f"{head} WHERE {where} {tail}", tuple(part)).all()
        return rows

    def _many(self, conn: Connection, text: str, rows: list[tuple]) -> None:
        if rows:
            conn.exec_driver_sql(self._sql(text), rows)

    def add_events(self, conn: Connection, frame: pd.DataFrame) -> pd.DataFrame:
        """Insert the rows whose `event_id` is new; returns those rows (the rest were stored before).

        `frame` has EVENT_COLUMNS; an id repeated within the frame counts once.
        """
        frame = frame.drop_duplicates("event_id", keep="first")
        ids = frame["event_id"].tolist()
        seen = {r[0] for r in self._select_in(conn, "SELECT event_id FROM events", "event_id", ids)}
        new = frame[~frame["event_id"].isin(seen)] if seen else frame
        columns = ", ".join(EVENT_COLUMNS)
        # The conflict clause keeps a concurrent writer of the same id from failing the batch.
        self._many(
            conn,
            f"INSERT INTO events ({columns}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))}) "
            "ON CONFLICT (event_id) DO NOTHING",
            _tuples(new, EVENT_COLUMNS),
        )
        if len(new):
            last = new.groupby("user_id", sort=False)["day"].max()
            bigger = "max" if self.dialect == "sqlite" else "greatest"
            self._many(
                conn,
                "INSERT INTO users (user_id, last_day) VALUES (?, ?) ON CONFLICT (user_id) "
                f"DO UPDATE SET last_day = {bigger}(users.last_day, excluded.last_day)",
                list(zip(last.index.tolist(), last.tolist())),
            )
            self._raise_meta_int(conn, "max_day", int(new["day"].max()))
        return new

    def user_events(self, conn: Connection, user_ids: Sequence[str]) -> pd.DataFrame:
        """The stored events of `user_ids` as `clean_events` leaves a file: sorted by user (by
        code point, as Python sorts text), then time, then arrival; columns of a cleaned log."""
        by_code_point = 'user_id COLLATE "C"' if self.dialect == "postgresql" else "user_id"
        rows = self._select_in(
            conn,
            f"SELECT {', '.join(EVENT_COLUMNS[1:])} FROM events",
            "user_id",
            list(user_ids),
            f"ORDER BY {by_code_point}, ts_ns, seq",
        )
        if len(user_ids) > _IDS_PER_QUERY:  # each chunk is sorted, the chunks are not
            rows.sort(key=lambda r: (r[0], r[1]))
        user, ts, day, kind, amount, quantity = zip(*rows) if rows else ((),) * 6
        return pd.DataFrame(
            {
                "user_id": np.array(user, dtype=object),
                "timestamp": np.array(ts, dtype=np.int64).astype("datetime64[ns]"),
                "day": np.array(day, dtype=np.int64),
                "event_type": np.array(kind, dtype=object),
                "amount": np.array(amount, dtype=np.float64),
                "quantity": np.array(quantity, dtype=np.float64),
            },
            copy=False,
        )

    def count_events(self, conn: Connection) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one())

    # -- users and their scores -----------------------------------------------------------

    def user_rows(self, conn: Connection, user_ids: Sequence[str]) -> pd.DataFrame:
        """users rows of `user_ids` (absent users have no row), indexed by user_id."""
        names = [c.name for c in users.columns]
        head = f"SELECT {', '.join(names)} FROM users"
        rows = self._select_in(conn, head, "user_id", list(user_ids))
        return pd.DataFrame(rows, columns=names).set_index("user_id")

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
        rows = [
            (
                int(day),
                None if pd.isna(t) else int(t),  # no tier: no activity to score yet
                None if pd.isna(p) else float(p),
                version,
                j if isinstance(j, str) else None,
                u,
            )
            for u, t, p, j in zip(
                scores["user_id"].tolist(),
                scores["tier_rank"].tolist(),
                scores["p_churn"].tolist(),
                scores["score"].tolist(),
            )
        ]
        self._many(
            conn,
            "UPDATE users SET scored_day = ?, tier_rank = ?, p_churn = ?, model_version = ?, "
            "score = ? WHERE user_id = ?",
            rows,
        )

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


def _tuples(frame: pd.DataFrame, columns: Sequence[str]) -> list[tuple]:
    """Plain Python values (the drivers refuse numpy scalars on some back ends)."""
    return list(zip(*(frame[c].tolist() for c in columns)))


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
