"""SQL (SQLAlchemy): the durable copy of everything that arrives online.

SQLite in WAL mode by default, PostgreSQL by URL. Every write commits before the caller answers,
so an accepted item, delete or interaction survives a ``kill -9``; on start the service replays
this store on top of the bundle. Every write also appends to a change feed (``changes``: a
monotonic id, the kind, the keys, the writing replica) in the same transaction, which the other
replicas poll to converge on the same catalog and histories.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

CATALOG_GENERATION = "catalog_generation"


@dataclass
class StoredItem:
    item_id: str
    features: np.ndarray | None  # float32 [F] in ``layout`` order; None for a bare tombstone
    layout: str  # "audio:128,image:128": modality names and dims, in concatenation order
    embedding: np.ndarray | None
    history_state: np.ndarray | None
    model_version: str  # bundle whose item tower computed embedding and history_state
    deleted: bool = False
    updated_at: float = 0.0
    text: str | None = None  # the raw text of an item posted as text (its title); written only


@dataclass
class Change:
    """One entry of the change feed: every write appends one, in the write's transaction."""

    id: int  # monotonic (commit order may differ from id order under concurrent writers)
    kind: str  # "item" (upsert), "delete" or "interaction"
    item_id: str
    user_id: str | None
    origin: str  # the replica that wrote it
    ref: int | None  # the interaction's row id


@dataclass
class StoredInteraction:
    user_id: str
    item_id: str
    ts: float
    logged_at: float


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (psycopg2 is not a dependency)."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _blob(array: np.ndarray | None) -> bytes | None:
    return None if array is None else np.ascontiguousarray(array, dtype=np.float32).tobytes()


def _array(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()


class Store:
    def __init__(self, url: str, table_prefix: str = ""):
        url = normalize_url(url)
        self.table_prefix = table_prefix
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        if self.dialect == "sqlite":
            self.engine: Engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=8)
        self.metadata = MetaData()
        big_id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER
        self.items = Table(
            f"{table_prefix}items",
            self.metadata,
            Column("item_id", String(256), primary_key=True),
            Column("features", LargeBinary, nullable=True),
            Column("layout", String(1024), nullable=False, default=""),
            Column("embedding", LargeBinary, nullable=True),
            Column("history_state", LargeBinary, nullable=True),
            Column("model_version", String(128), nullable=False, default=""),
            Column("deleted", Boolean, nullable=False, default=False),
            Column("updated_at", Float, nullable=False, index=True),
        )
        self.interactions = Table(
            f"{table_prefix}interactions",
            self.metadata,
            Column("id", big_id, primary_key=True, autoincrement=True),
            Column("user_id", String(256), nullable=False, index=True),
            Column("item_id", String(256), nullable=False),
            Column("ts", Float, nullable=False),
            Column("logged_at", Float, nullable=False, index=True),
        )
        self.changes = Table(
            f"{table_prefix}changes",
            self.metadata,
            Column("id", big_id, primary_key=True, autoincrement=True),
            Column("kind", String(16), nullable=False),
            Column("item_id", String(256), nullable=False),
            Column("user_id", String(256), nullable=True),
            Column("origin", String(64), nullable=False),
            Column("ref", BigInteger, nullable=True),
            Column("created_at", Float, nullable=False),
        )
        self.texts = Table(  # the raw text of items posted as text: their titles
            f"{table_prefix}item_texts",
            self.metadata,
            Column("item_id", String(256), primary_key=True),
            Column("text", Text, nullable=False),
        )
        self.served = Table(  # lists served to users, sampled (eventlog.served)
            f"{table_prefix}served",
            self.metadata,
            Column("id", big_id, primary_key=True, autoincrement=True),
            Column("user_id", String(256), nullable=False),
            Column("model_version", String(128), nullable=False),
            Column("served_at", Float, nullable=False, index=True),
            Column("items", Text, nullable=False),  # JSON array of item ids, in list order
            Column("flags", Text, nullable=False),  # one of w/n/r (eventlog.served) per item
            Index(f"{table_prefix}served_user_time", "user_id", "served_at"),
        )
        self.meta = Table(
            f"{table_prefix}meta",
            self.metadata,
            Column("key", String(64), primary_key=True),
            Column("value", BigInteger, nullable=False),
        )

    def create(self) -> None:
        self.metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            found = conn.execute(
                select(self.meta.c.value).where(self.meta.c.key == CATALOG_GENERATION)
            ).first()
            if found is None:
                conn.execute(self.meta.insert().values(key=CATALOG_GENERATION, value=0))

    def drop(self) -> None:
        self.metadata.drop_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def upsert_items(self, items: list[StoredItem], origin: str = "") -> None:
        """Insert or replace items by id, all in one transaction (with their feed entries)."""
        now = time.time()
        rows = [
            {
                "item_id": item.item_id,
                "features": _blob(item.features),
                "layout": item.layout,
                "embedding": _blob(item.embedding),
                "history_state": _blob(item.history_state),
                "model_version": item.model_version,
                "deleted": item.deleted,
                "updated_at": now,
            }
            for item in items
        ]
        texts = [{"item_id": i.item_id, "text": i.text} for i in items if i.text is not None]
        with self.engine.begin() as conn:
            self._upsert(conn, rows)
            conn.execute(self.texts.delete().where(  # an upsert replaces the text too
                self.texts.c.item_id.in_([r["item_id"] for r in rows])))
            if texts:
                conn.execute(self.texts.insert(), texts)
            self._feed(conn, [{"kind": "item", "item_id": r["item_id"]} for r in rows], origin)

    def delete_item(self, item_id: str, origin: str = "") -> int:
        """Mark an item deleted (a tombstone also hides bundle items); returns the new catalog
        generation, bumped in the same transaction so cache keys change with the delete."""
        row = {
            "item_id": item_id,
            "features": None,
            "layout": "",
            "embedding": None,
            "history_state": None,
            "model_version": "",
            "deleted": True,
            "updated_at": time.time(),
        }
        with self.engine.begin() as conn:
            self._upsert(conn, [row])
            conn.execute(self.texts.delete().where(self.texts.c.item_id == item_id))
            self._feed(conn, [{"kind": "delete", "item_id": item_id}], origin)
            conn.execute(
                update(self.meta)
                .where(self.meta.c.key == CATALOG_GENERATION)
                .values(value=self.meta.c.value + 1)
            )
            return int(
                conn.execute(
                    select(self.meta.c.value).where(self.meta.c.key == CATALOG_GENERATION)
                ).scalar_one()
            )

    def catalog_generation(self) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(self.meta.c.value).where(self.meta.c.key == CATALOG_GENERATION)
            ).scalar()
        return int(value or 0)

    def get_item(self, item_id: str) -> StoredItem | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(self.items).where(self.items.c.item_id == item_id)).first()
        return None if row is None else _item(row)

    def iter_items(self) -> Iterator[StoredItem]:
        """Every stored item and tombstone, oldest change first."""
        with self.engine.connect() as conn:
            query = select(self.items).order_by(self.items.c.updated_at)
            for row in conn.execution_options(yield_per=1000).execute(query):
                yield _item(row)

    def item_texts(self, ids: list[str] | None = None) -> dict[str, str]:
        """The stored texts (titles) of the given items, or of every item posted as text."""
        query = select(self.texts.c.item_id, self.texts.c.text)
        if ids is not None:
            if not ids:
                return {}
            query = query.where(self.texts.c.item_id.in_(ids))
        with self.engine.connect() as conn:
            return {row.item_id: row.text for row in conn.execute(query)}

    def add_interaction(
        self, user_id: str, item_id: str, ts: float | None = None, origin: str = ""
    ) -> float:
        now = time.time()
        with self.engine.begin() as conn:
            result = conn.execute(
                self.interactions.insert().values(
                    user_id=user_id, item_id=item_id, ts=now if ts is None else ts, logged_at=now
                )
            )
            ref = int(result.inserted_primary_key[0])
            self._feed(conn, [{"kind": "interaction", "item_id": item_id, "user_id": user_id,
                               "ref": ref}], origin)
        return now

    def last_interaction_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(self.interactions.c.id))).scalar() or 0)

    # ---- change feed: how replicas learn about each other's writes ----------------------

    def _feed(self, conn, entries: list[dict], origin: str) -> None:
        now = time.time()
        conn.execute(self.changes.insert(), [
            {"user_id": None, "ref": None, **e, "origin": origin, "created_at": now}
            for e in entries
        ])

    def last_change_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(self.changes.c.id))).scalar() or 0)

    def changes_after(self, cursor: int, limit: int = 10_000) -> list[Change]:
        query = (select(self.changes).where(self.changes.c.id > cursor)
                 .order_by(self.changes.c.id).limit(limit))
        with self.engine.connect() as conn:
            return [Change(r.id, r.kind, r.item_id, r.user_id, r.origin, r.ref)
                    for r in conn.execute(query)]

    def iter_interactions(self, logged_after: float = 0.0) -> Iterator[StoredInteraction]:
        """Interactions logged after a time, in the order they were accepted."""
        query = (
            select(self.interactions)
            .where(self.interactions.c.logged_at > logged_after)
            .order_by(self.interactions.c.id)
        )
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=5000).execute(query):
                yield StoredInteraction(row.user_id, row.item_id, row.ts, row.logged_at)

    def user_interactions(self, user_id: str, logged_after: float = 0.0,
                          limit: int | None = None) -> list[StoredInteraction]:
        """One user's interactions logged after a time, newest first."""
        table = self.interactions
        query = (select(table).where(table.c.user_id == user_id, table.c.logged_at > logged_after)
                 .order_by(table.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [StoredInteraction(r.user_id, r.item_id, r.ts, r.logged_at)
                    for r in conn.execute(query)]

    def _upsert(self, conn, rows: list[dict]) -> None:
        dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(self.dialect)
        if dialect is None:  # portable fallback for other databases
            ids = [r["item_id"] for r in rows]
            conn.execute(self.items.delete().where(self.items.c.item_id.in_(ids)))
            conn.execute(self.items.insert(), rows)
            return
        statement = dialect.insert(self.items)
        replace = {c.name: statement.excluded[c.name] for c in self.items.c if c.name != "item_id"}
        upsert = statement.on_conflict_do_update(index_elements=["item_id"], set_=replace)
        conn.execute(upsert, rows)


def _item(row) -> StoredItem:
    return StoredItem(
        item_id=row.item_id,
        features=_array(row.features),
        layout=row.layout,
        embedding=_array(row.embedding),
        history_state=_array(row.history_state),
        model_version=row.model_version,
        deleted=bool(row.deleted),
        updated_at=float(row.updated_at),
    )


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.execute("PRAGMA synchronous=FULL")  # commit = on disk, before the 2xx
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
