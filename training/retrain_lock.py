"""One retrain (or bootstrap) per bundles root at a time, whoever starts it.

The hand command, the scheduler and a Kubernetes CronJob all take the same lock before they
touch ``<root>/candidates``: a PostgreSQL advisory lock when the store is PostgreSQL (the compose
and Kubernetes set-ups, where the root may be shared across machines), a ``flock`` on
``<root>/.retrain.lock`` otherwise. Both die with their holder, so a ``kill -9`` never leaves
the root locked. The file lock names its holder (pid, host, start) for the message a second
run prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

# pg advisory locks take a bigint key: a fixed one derived from the name, same in every process
LOCK_KEY = zlib.crc32(b"mmrec-service retrain")
LOCK_FILE = ".retrain.lock"


class RetrainLocked(RuntimeError):
    """Another retrain or bootstrap holds the lock of this bundles root."""


@contextlib.contextmanager
def run_lock(database_url: str, root: Path) -> Iterator[bool]:
    """Yields whether this process holds the retrain lock (held until the block ends)."""
    if database_url.startswith(("postgresql", "postgres")):
        url = "postgresql+psycopg://" + database_url.split("://", 1)[1]
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                         {"k": LOCK_KEY}).scalar())
                try:
                    yield held
                finally:
                    if held:
                        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
        finally:
            engine.dispose()
        return
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK_FILE).open("a+") as handle:  # "a+": never truncate the holder's line
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                         f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
            handle.flush()
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def holder(database_url: str, root: Path) -> str:
    """Who holds the lock, as far as this process can tell (for the message)."""
    if database_url.startswith(("postgresql", "postgres")):
        return "a process holding the PostgreSQL advisory lock"
    try:
        return (root / LOCK_FILE).read_text().strip() or "another process"
    except OSError:
        return "another process"


@contextlib.contextmanager
def exclusive_run(database_url: str, root: Path) -> Iterator[None]:
    """The lock, or :class:`RetrainLocked` naming its holder."""
    with run_lock(database_url, root) as held:
        if not held:
            raise RetrainLocked(f"another retrain or bootstrap of {root} is running "
                                f"({holder(database_url, root)}): this one does nothing")
        yield
