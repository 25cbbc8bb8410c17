"""The retrain scheduler on a fake clock: time zone, grace time, coalescing, the run lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import apscheduler.executors.base as executor_base
import apscheduler.schedulers.base as scheduler_base
import pytest
from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.base import BaseScheduler

from training.retrain_lock import run_lock
from training.scheduler import (
    JOB_ID,
    RetrainMetrics,
    SchedulerSettings,
    build_scheduler,
    run_retrain,
)

BERLIN = ZoneInfo("Europe/Berlin")


class FakeClock:
    now = datetime(2026, 12, 1, 10, 0, tzinfo=BERLIN)

    class Datetime(datetime):
        @classmethod
        def now(cls, tz=None):  # what APScheduler reads as the time
            return FakeClock.now.astimezone(tz)


class ManualScheduler(BaseScheduler):
    """APScheduler's own logic, driven by the test instead of a thread."""

    def _create_default_executor(self):
        return DebugExecutor()  # runs the job inline

    def wakeup(self):
        pass

    def shutdown(self, wait=True):
        super().shutdown(wait)


@pytest.fixture
def clock(monkeypatch) -> type[FakeClock]:
    monkeypatch.setattr(scheduler_base, "datetime", FakeClock.Datetime)
    monkeypatch.setattr(executor_base, "datetime", FakeClock.Datetime)
    FakeClock.now = datetime(2026, 12, 1, 10, 0, tzinfo=BERLIN)
    return FakeClock


def _scheduler(tmp_path: Path, grace_s: int):
    settings = SchedulerSettings(retrain_cron="0 3 * * *", retrain_timezone="Europe/Berlin",
                                 retrain_grace_s=grace_s, bundles_root=tmp_path)
    metrics, runs = RetrainMetrics(), []
    scheduler = build_scheduler(settings, metrics, ManualScheduler(timezone=BERLIN),
                                job=lambda *_: runs.append(FakeClock.now))
    scheduler.start()
    return scheduler, metrics, runs


def _missed(metrics: RetrainMetrics) -> float:
    return metrics.registry.get_sample_value("recsys_retrain_runs_total", {"result": "missed"}) or 0


def test_runs_at_3_in_the_configured_zone_and_skips_a_run_past_its_grace(clock, tmp_path):
    scheduler, metrics, runs = _scheduler(tmp_path, grace_s=600)
    job = scheduler.get_job(JOB_ID)
    assert job.next_run_time == datetime(2026, 12, 2, 3, 0, tzinfo=BERLIN)
    assert job.max_instances == 1 and job.coalesce
    clock.now = datetime(2026, 12, 2, 3, 0, 30, tzinfo=BERLIN)  # 30 s late: within the grace
    scheduler._process_jobs()
    assert runs == [clock.now]
    clock.now = datetime(2026, 12, 3, 4, 0, tzinfo=BERLIN)  # an hour late: skipped
    scheduler._process_jobs()
    assert len(runs) == 1 and _missed(metrics) == 1
    assert scheduler.get_job(JOB_ID).next_run_time == datetime(2026, 12, 4, 3, 0, tzinfo=BERLIN)


def test_missed_nights_within_the_grace_run_once(clock, tmp_path):
    scheduler, _, runs = _scheduler(tmp_path, grace_s=5 * 86400)
    clock.now = datetime(2026, 12, 5, 9, 0, tzinfo=BERLIN)  # down for four nights
    scheduler._process_jobs()
    assert len(runs) == 1  # coalesced
    assert scheduler.get_job(JOB_ID).next_run_time == datetime(2026, 12, 6, 3, 0, tzinfo=BERLIN)


def test_the_cron_line_follows_daylight_saving_time(clock, tmp_path):
    clock.now = datetime(2027, 3, 27, 12, 0, tzinfo=BERLIN)
    scheduler, _, _ = _scheduler(tmp_path, grace_s=600)
    before = scheduler.get_job(JOB_ID).next_run_time  # 28 March, the night clocks go forward
    assert before.hour == 3 and before.utcoffset() == timedelta(hours=2)


def test_one_run_at_a_time_and_exit_codes_become_results(tmp_path):
    settings = SchedulerSettings(bundles_root=tmp_path, database_url="sqlite:///x.db")
    metrics = RetrainMetrics()
    exits = {code: [sys.executable, "-c", f"raise SystemExit({code})"]
             for code in (0, 1, 2, 3, 143)}
    assert run_retrain(settings, metrics, exits[0]) == "published"
    assert run_retrain(settings, metrics, exits[1]) == "rejected"
    assert run_retrain(settings, metrics, exits[2]) == "failed"
    assert run_retrain(settings, metrics, exits[143]) == "stopped"
    # the child found the lock taken (it started between the scheduler's look and its own)
    assert run_retrain(settings, metrics, exits[3]) == "skipped_locked"
    with run_lock(settings.database_url, tmp_path) as held:
        assert held  # a hand run holds it: the scheduler does not even start a child
        assert run_retrain(settings, metrics, exits[0]) == "skipped_locked"
    assert metrics.registry.get_sample_value("recsys_retrain_runs_total",
                                             {"result": "skipped_locked"}) == 2
    assert metrics.registry.get_sample_value("recsys_retrain_running") == 0


def test_the_postgresql_advisory_lock_excludes_a_second_holder(tmp_path):
    url = "postgresql://postgres@127.0.0.1:5432/test"
    try:
        with run_lock(url, tmp_path) as first:
            assert first
            with run_lock(url, tmp_path) as second:
                assert not second
        with run_lock(url, tmp_path) as again:
            assert again  # released
    except Exception as error:  # noqa: BLE001
        if "connect" in str(error).lower():
            pytest.skip(f"PostgreSQL not reachable: {error}")
        raise


def test_schedule_once_runs_one_retrain_and_reports_it_in_the_exit_code(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from training.cli import app

    monkeypatch.setenv("RECSYS_BUNDLES_ROOT", str(tmp_path / "empty"))  # nothing published
    monkeypatch.setenv("RECSYS_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("RECSYS_METRICS_PORT", "0")
    result = CliRunner().invoke(app, ["schedule", "--once"])
    assert result.exit_code == 2  # the retrain failed (run bootstrap first), nothing published
    assert not (tmp_path / "empty" / "current").exists()


def test_stop_children_terminates_a_running_retrain(tmp_path):
    import threading

    from training import scheduler

    codes = []
    thread = threading.Thread(target=lambda: codes.append(scheduler._run_child(
        [sys.executable, "-c", "import time; time.sleep(60)"])))
    thread.start()
    deadline = time.monotonic() + 10
    while not scheduler._children and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    scheduler.stop_children(timeout_s=3.0)
    thread.join(5)
    assert codes == [-signal.SIGTERM] and time.monotonic() - started < 3.0
    assert not scheduler._children


def test_the_scheduler_exits_0_on_sigterm_within_5_s(tmp_path):
    env = {**os.environ, "RECSYS_METRICS_PORT": "0", "RECSYS_BUNDLES_ROOT": str(tmp_path),
           "RECSYS_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    process = subprocess.Popen([sys.executable, "-m", "training", "schedule"], env=env,
                               stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:  # wait until it is scheduling
            if "retrain scheduled" in line:
                break
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        process.kill()
