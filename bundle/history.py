"""The publish history of a bundles root: who was live when, and why.

``<root>/history.jsonl`` gets one line each time ``current`` moves: ``{"at", "action",
"version", "previous", "reason"}`` with ``action`` one of ``publish`` (a new version went live),
``rollback`` (back to the version live before) or ``manual`` (an operator named a version).
Lines are appended and fsynced after the link moved, under the root's publish lock, so readers
never see a half line from a writer of this module.

The history is a stack of live versions: a publish or a manual switch pushes, a rollback pops.
:func:`live_stack` replays it; its top is ``current`` (a move whose line a kill cut off is
taken from the link itself), and the version under the top is where a rollback goes. A version
that was copied into ``versions/`` but never went live (a publish killed before the link moved)
is in no line, so it is never a rollback target unless named.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HISTORY = "history.jsonl"
PUBLISH_LOCK = ".publish.lock"
ACTIONS = ("publish", "rollback", "manual")


@dataclass(frozen=True)
class Move:
    """One move of ``current``."""

    at: float  # UNIX time
    action: str  # one of ACTIONS
    version: str  # live after the move
    previous: str | None  # live before it
    reason: str


def read_history(root: str | Path) -> list[Move]:
    """Every recorded move, oldest first (an unreadable last line, cut by a crash, is skipped)."""
    path = Path(root) / HISTORY
    if not path.is_file():
        return []
    moves = []
    for line in path.read_text().splitlines():
        try:
            fields = json.loads(line)
            moves.append(Move(float(fields["at"]), fields["action"], fields["version"],
                              fields.get("previous"), fields.get("reason", "")))
        except (ValueError, KeyError, TypeError):
            continue
    return moves


def record(root: str | Path, action: str, version: str, previous: str | None,
           reason: str = "") -> Move:
    """Append one move (the caller holds :func:`publish_lock`)."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
    move = Move(time.time(), action, version, previous, reason)
    line = json.dumps({"at": round(move.at, 6), "action": action, "version": version,
                       "previous": previous, "reason": reason})
    with (Path(root) / HISTORY).open("a") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return move


def live_stack(moves: list[Move], current: str | None) -> list[str]:
    """The versions that were live, each above the one it replaced; the top is ``current``."""
    stack: list[str] = []
    for move in moves:
        if move.action == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != move.version:
                stack.append(move.version)
        else:
            stack.append(move.version)
    if current is not None and (not stack or stack[-1] != current):
        stack.append(current)  # the link moved but the line was never written (a kill)
    return stack


def ever_live(moves: list[Move]) -> set[str]:
    return {move.version for move in moves} | {m.previous for m in moves if m.previous}


@contextlib.contextmanager
def publish_lock(root: str | Path) -> Iterator[None]:
    """Serialise every move of ``current`` under one root (a publish beside a rollback)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    with (Path(root) / PUBLISH_LOCK).open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel if the holder dies
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
