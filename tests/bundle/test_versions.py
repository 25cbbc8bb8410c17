"""Publishing versions, the current link, rollback, pruning, and kill -9 during a publish."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import bundle as bf
from bundle import history, versions

ROOT = Path(__file__).resolve().parents[2]


def _candidate(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    return bf.write_bundle(
        path,
        manifest={"model": "toy"},
        user_embeddings=rng.normal(size=(3, 4)).astype(np.float32),
        item_embeddings=rng.normal(size=(50, 4)).astype(np.float32),
        user_ids=["a", "b", "c"],
        item_ids=[str(i) for i in range(50)],
        interactions=sp.csr_matrix(np.eye(3, 50)),
        overwrite=True,
    )


def test_publish_points_current_at_a_verified_copy_named_by_time_and_content(tmp_path) -> None:
    root = tmp_path / "bundles"
    first = versions.publish(_candidate(tmp_path / "c1", 1), root)
    second = versions.publish(_candidate(tmp_path / "c2", 2), root)
    assert versions.list_versions(root) == [first, second] and first < second
    assert versions.current_version(root) == second
    assert first.split("-")[-1] != second.split("-")[-1]  # the content hash differs
    served = bf.load_bundle(root / versions.CURRENT)  # through the link, checksums verified
    assert served.version == second
    assert (root / versions.CURRENT).resolve() == (root / "versions" / second).resolve()


def test_rollback_goes_to_the_previous_version_or_a_named_one(tmp_path) -> None:
    root = tmp_path / "bundles"
    names = [versions.publish(_candidate(tmp_path / f"c{n}", n), root) for n in range(3)]
    assert versions.rollback(root) == names[1]
    assert versions.rollback(root) == names[0]
    with pytest.raises(bf.BundleError, match="no earlier live version"):
        versions.rollback(root)
    assert versions.rollback(root, to=names[2]) == names[2]
    with pytest.raises(bf.BundleError, match="no version 'nope'"):
        versions.rollback(root, to="nope")
    assert versions.current_version(root) == names[2]


def test_prune_keeps_the_newest_and_the_current(tmp_path) -> None:
    root = tmp_path / "bundles"
    names = [versions.publish(_candidate(tmp_path / f"c{n}", n), root, keep=3) for n in range(5)]
    assert versions.list_versions(root) == names[2:]
    versions.rollback(root, to=names[2])
    versions.prune(root, keep=2)
    assert versions.list_versions(root) == names[2:]  # the oldest is current: kept
    latest = versions.publish(_candidate(tmp_path / "c9", 9), root, keep=2)
    # beyond the newest two, the version live before the latest stays: it is the rollback target
    assert versions.list_versions(root) == [names[2], names[4], latest]
    assert versions.rollback_target(root) == names[2]


def test_rollback_returns_to_the_version_live_before_not_the_newest_older_by_name(
    tmp_path,
) -> None:
    """publish A, publish B, rollback (A), publish C, rollback: A, never B (rolled away from)."""
    root = tmp_path / "bundles"
    a = versions.publish(_candidate(tmp_path / "a", 1), root)
    b = versions.publish(_candidate(tmp_path / "b", 2), root)
    assert versions.rollback(root, reason="bad day") == a
    c = versions.publish(_candidate(tmp_path / "c", 3), root)
    assert versions.rollback(root) == a
    assert versions.current_version(root) == a and b < c
    moves = [(m.action, m.previous, m.version) for m in history.read_history(root)]
    assert moves == [("publish", None, a), ("publish", a, b), ("rollback", b, a),
                     ("publish", a, c), ("rollback", c, a)]
    assert history.read_history(root)[2].reason == "bad day"


def test_a_version_that_never_went_live_is_never_a_rollback_target(tmp_path) -> None:
    """A publish killed between the copy into versions/ and the link switch leaves a complete
    version that nobody served: rollback skips it; naming it still works."""
    root = tmp_path / "bundles"
    a = versions.publish(_candidate(tmp_path / "a", 1), root)
    b = versions.publish(_candidate(tmp_path / "b", 2), root)
    orphan = "29991231T000000.000000Z-deadbeef"  # sorts after every real version
    shutil.copytree(root / "versions" / b, root / "versions" / orphan)
    assert versions.rollback_target(root) == a
    assert versions.rollback(root) == a
    assert orphan not in history.ever_live(history.read_history(root))
    assert versions.rollback(root, to=orphan) == orphan  # an operator may still name it
    assert history.read_history(root)[-1].action == "manual"


def test_a_move_whose_history_line_was_cut_by_a_kill_is_taken_from_the_link(tmp_path) -> None:
    root = tmp_path / "bundles"
    a = versions.publish(_candidate(tmp_path / "a", 1), root)
    b = versions.publish(_candidate(tmp_path / "b", 2), root)
    c = versions.publish(_candidate(tmp_path / "c", 3), root)
    lines = (root / history.HISTORY).read_text().splitlines()
    (root / history.HISTORY).write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # cut
    assert versions.current_version(root) == c
    assert versions.rollback(root) == b and versions.rollback(root) == a


def test_a_broken_candidate_is_refused_and_current_stays(tmp_path) -> None:
    root = tmp_path / "bundles"
    live = versions.publish(_candidate(tmp_path / "c1", 1), root)
    broken = _candidate(tmp_path / "c2", 2)
    np.save(broken / bf.ITEM_EMBEDDINGS, np.zeros((50, 4), np.float32))
    with pytest.raises(bf.BundleError, match="sha256"):
        versions.publish(broken, root)
    assert versions.current_version(root) == live and versions.list_versions(root) == [live]


PUBLISH_FOREVER = """
import sys
from pathlib import Path
from bundle import history, versions
candidates, root = [Path(p) for p in sys.argv[1:3]], Path(sys.argv[3])
n = 0
while True:
    versions.publish(candidates[n % 2], root, keep=3)
    n += 1
"""


@pytest.mark.parametrize("round_", range(8))
def test_kill_9_at_any_point_of_a_publish_leaves_a_valid_current(tmp_path, round_) -> None:
    root = tmp_path / "bundles"
    candidates = [_candidate(tmp_path / f"c{n}", n) for n in range(2)]
    versions.publish(candidates[0], root)
    process = subprocess.Popen(
        [sys.executable, "-c", PUBLISH_FOREVER, *map(str, candidates), str(root)], cwd=ROOT
    )
    time.sleep(0.4 + 0.07 * round_)  # different points of the publish loop
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    served = bf.load_bundle(root / versions.CURRENT)  # complete and verified
    assert served.version == versions.current_version(root)
    assert served.version in versions.list_versions(root)
    versions.publish(candidates[1], root)  # and the next publish cleans up after the crash
    assert not list((root / "versions").glob(".*"))
