"""Published bundles: ``<root>/versions/<version>/`` and a ``current`` link swapped atomically.

A version is named ``<UTC time with microseconds>-<short content hash>`` (for example
``20261201T103000.123456Z-3f2a9c1e``), so names sort by publication time and two bundles
published in the same second differ. Publishing copies a verified candidate into a hidden
staging folder, writes the version into its manifest, renames the folder into ``versions/``
(atomic) and then replaces the ``current`` link with ``os.replace`` (atomic), so a ``kill -9``
at any point leaves ``current`` naming a complete, verified version: the old one or the new one.
Replicas follow ``current`` by resolving it (see the service's bundle poll).

Every move of ``current`` is recorded in the root's publish history (:mod:`bundle.history`), and
a rollback goes to the version that was live before the current one by that history, not by
name: after publish A, publish B, rollback (A), publish C, a rollback returns to A, never to B.
"""


from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from bundle import history
from bundle.files import MANIFEST
from bundle.io import BundleError, read_manifest, verify

VERSIONS = "versions"
CURRENT = "current"
STAGING = ".staging-"


def version_name(bundle_dir: Path, now: float | None = None) -> str:
    """``<UTC time>.<microseconds>Z-<8 hex of the files' checksums>``."""
    now = time.time() if now is None else now
    content = content_hash(read_manifest(bundle_dir).files)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(round(now % 1 * 1e6)) % 1_000_000:06d}Z-{content}"


def content_hash(files: dict[str, str]) -> str:
    """8 hex of a bundle's file checksums (the manifest's ``files``): the suffix of the version
    it is published as, known from the moment it is written."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:8]


def list_versions(root: str | Path) -> list[str]:
    """Published versions, oldest first (staging folders left by a crash are not versions)."""
    folder = Path(root) / VERSIONS
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def current_version(root: str | Path) -> str | None:
    """The version ``current`` points to, or None before the first publish."""
    link = Path(root) / CURRENT
    if not link.is_symlink():
        return None
    return Path(os.readlink(link)).name


def current_path(root: str | Path) -> Path | None:
    version = current_version(root)
    return None if version is None else Path(root) / VERSIONS / version


def publish(candidate: str | Path, root: str | Path, *, keep: int = 5,
            reason: str = "") -> str:
    """Copy a verified bundle into ``root/versions`` and point ``current`` at it; keep the
    newest ``keep`` versions (never the current one nor its rollback target). Returns the
    version name; the move is recorded in the publish history with ``reason``."""
    candidate, root = Path(candidate), Path(root)
    if keep < 2:
        raise ValueError("keep at least 2 versions, so that a rollback has a target")
    verify(candidate)
    folder = root / VERSIONS
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with history.publish_lock(root):  # one publish at a time: staging is never another's
        clean_leftovers(root)
        name = version_name(candidate)
        staging = folder / f"{STAGING}{name}"
        shutil.copytree(candidate, staging, ignore=shutil.ignore_patterns(".*"))
        manifest = read_manifest(staging).model_copy(update={"version": name})
        (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2))
        verify(staging)
        _fsync_tree(staging)
        os.rename(staging, folder / name)
        _move_current(root, name, "publish", reason)
        prune(root, keep)
    return name


def clean_leftovers(root: str | Path) -> list[Path]:
    """Remove what killed publishes left: staging folders and temporary links (call under the
    publish lock, so none of them belongs to a publish still running)."""
    root = Path(root)
    removed = []
    for stale in (root / VERSIONS).glob(f"{STAGING}*"):
        shutil.rmtree(stale, ignore_errors=True)
        removed.append(stale)
    for link in root.glob(f".{CURRENT}-*"):
        link.unlink(missing_ok=True)
        removed.append(link)
    return removed


def _move_current(root: Path, version: str, action: str, reason: str) -> None:
    previous = current_version(root)
    point_current(root, version)
    history.record(root, action, version, previous, reason)


def point_current(root: str | Path, version: str) -> None:
    """Replace the ``current`` link atomically (a relative link, so the root can move)."""
    root = Path(root)
    if not (root / VERSIONS / version / MANIFEST).is_file():
        raise BundleError(f"{root / VERSIONS / version}: no such published version")
    tmp = root / f".{CURRENT}-{os.getpid()}-{time.monotonic_ns()}"
    os.symlink(Path(VERSIONS) / version, tmp)
    os.replace(tmp, root / CURRENT)
    _fsync_dir(root)


def rollback_target(root: str | Path) -> str | None:
    """Where a rollback goes: the version live before the current one, by the publish history
    (skipping versions pruned since). A root published before the history existed falls back
    to the newest version older than current by name."""
    root = Path(root)
    present = set(list_versions(root))
    live = current_version(root)
    if not (root / history.HISTORY).is_file():
        older = [v for v in sorted(present) if live is None or v < live]
        return older[-1] if older else None
    stack = history.live_stack(history.read_history(root), live)[:-1]
    while stack and stack[-1] not in present:
        stack.pop()
    return stack[-1] if stack else None


def rollback(root: str | Path, to: str | None = None, reason: str = "") -> str:
    """Point ``current`` at ``to`` (a manual move), or at the version that was live before
    the current one (a rollback); recorded in the publish history."""
    root = Path(root)
    with history.publish_lock(root):
        versions = list_versions(root)
        if to is None:
            target = rollback_target(root)
            if target is None:
                raise BundleError(f"{root}: no earlier live version to roll back to from "
                                  f"{current_version(root)}; name one with --to")
            action = "rollback"
        elif to in versions:
            target, action = to, "manual"
        else:
            raise BundleError(f"{root}: no version {to!r}; published: "
                              f"{', '.join(versions) or 'none'}")
        verify(root / VERSIONS / target)  # never point current at a damaged folder
        _move_current(root, target, action, reason)
    return target


def prune(root: str | Path, keep: int) -> list[str]:
    """Remove the oldest versions beyond ``keep``; the current one and its rollback target
    always stay."""
    root = Path(root)
    protected = {current_version(root), rollback_target(root)}
    removed = []
    for version in list_versions(root)[:-keep]:
        if version not in protected:
            shutil.rmtree(root / VERSIONS / version, ignore_errors=True)
            removed.append(version)
    return removed


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
