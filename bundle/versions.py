"""Published bundles: ``<root>/versions/<version>/`` and a ``current`` link swapped atomically.

A version is named ``<UTC time with microseconds>-<short content hash>`` (for example
``20261201T103000.123456Z-3f2a9c1e``), so names sort by publication time and two bundles
published in the same second differ. Publishing copies a verified candidate into a hidden
staging folder, writes the version into its manifest, renames the folder into ``versions/``
(atomic) and then replaces the ``current`` link with ``os.replace`` (atomic), so a ``kill -9``
at any point leaves ``current`` naming a complete, verified version: the old one or the new one.
Replicas follow ``current`` by resolving it (see the service's bundle poll).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from bundle.files import MANIFEST
from bundle.io import BundleError, read_manifest, verify

VERSIONS = "versions"
CURRENT = "current"
STAGING = ".staging-"


def version_name(bundle_dir: Path, now: float | None = None) -> str:
    """``<UTC time>.<microseconds>Z-<8 hex of the files' checksums>``."""
    now = time.time() if now is None else now
    files = read_manifest(bundle_dir).files
    content = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:8]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(round(now % 1 * 1e6)) % 1_000_000:06d}Z-{content}"


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


def publish(candidate: str | Path, root: str | Path, *, keep: int = 5) -> str:
    """Copy a verified bundle into ``root/versions`` and point ``current`` at it; keep the
    newest ``keep`` versions (never removing the current one). Returns the version name."""
    candidate, root = Path(candidate), Path(root)
    if keep < 2:
        raise ValueError("keep at least 2 versions, so that a rollback has a target")
    verify(candidate)
    folder = root / VERSIONS
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in folder.glob(f"{STAGING}*"):  # left by a publish that was killed
        shutil.rmtree(stale, ignore_errors=True)
    for link in root.glob(f".{CURRENT}-*"):
        link.unlink(missing_ok=True)
    name = version_name(candidate)
    staging = folder / f"{STAGING}{name}"
    shutil.copytree(candidate, staging, ignore=shutil.ignore_patterns(".*"))
    manifest = read_manifest(staging).model_copy(update={"version": name})
    (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2))
    verify(staging)
    _fsync_tree(staging)
    os.rename(staging, folder / name)
    point_current(root, name)
    prune(root, keep)
    return name


def point_current(root: str | Path, version: str) -> None:
    """Replace the ``current`` link atomically (a relative link, so the root can move)."""
    root = Path(root)
    if not (root / VERSIONS / version / MANIFEST).is_file():
        raise BundleError(f"{root / VERSIONS / version}: no such published version")
    tmp = root / f".{CURRENT}-{os.getpid()}-{time.monotonic_ns()}"
    os.symlink(Path(VERSIONS) / version, tmp)
    os.replace(tmp, root / CURRENT)
    _fsync_dir(root)


def rollback(root: str | Path, to: str | None = None) -> str:
    """Point ``current`` at ``to``, or at the version published before the current one."""
    root = Path(root)
    versions = list_versions(root)
    live = current_version(root)
    if to is None:
        older = [v for v in versions if live is None or v < live]
        if not older:
            raise BundleError(f"{root}: no version older than {live} to roll back to")
        to = older[-1]
    elif to not in versions:
        raise BundleError(f"{root}: no version {to!r}; published: {', '.join(versions) or 'none'}")
    verify(root / VERSIONS / to)  # never point current at a damaged folder
    point_current(root, to)
    return to


def prune(root: str | Path, keep: int) -> list[str]:
    """Remove the oldest versions beyond ``keep``; the current one always stays."""
    root = Path(root)
    live = current_version(root)
    removed = []
    for version in list_versions(root)[:-keep]:
        if version != live:
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
