"""The nightly retraining scheduler: ``python -m training schedule``.

APScheduler's cron trigger in a configured time zone runs ``python -m training retrain`` as a
child process (a crash or an out-of-memory kill of a run never takes the scheduler down, and
the memory of a run is returned when it ends). Overlaps are refused twice: inside the process
(``max_instances=1``, missed runs coalesced into one) and across processes and machines by the
retrain lock (:mod:`training.retrain_lock`), which the child ``retrain`` takes for its whole
run like a hand run does: the scheduler only looks first, to skip without starting a child, and
a child that finds the lock taken exits ``LOCKED_EXIT`` (skipped). On SIGTERM the scheduler
stops its running child (SIGTERM, then SIGKILL after ``stop_timeout_s``) and exits 0; what the
child left is cleaned by the next run. A run that could not
start on time (the scheduler was down or busy) still starts if it is less than
``grace_s`` late, and is skipped (and logged) otherwise. Prometheus metrics on ``metrics_port``.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from training.errors import LOCKED_EXIT, STOPPED_EXIT
from training.retrain_lock import run_lock

log = logging.getLogger(__name__)

JOB_ID = "retrain"


class SchedulerSettings(BaseSettings):
    """``RECSYS_*`` environment variables, like the service's."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore")

    retrain_cron: str = Field("0 3 * * *", description="crontab line: minute hour dom mon dow")
    retrain_timezone: str = Field("UTC", description="IANA zone of the cron line")
    retrain_grace_s: int = Field(3600, ge=1, description="latest start after a missed time")
    bundles_root: Path = Field(Path("bundles"), description="versions/ and the current link")
    data: str = Field("tiktok", description="base dataset name or folder")
    train_config: Path | None = Field(None, description="TrainConfig file of the candidate")
    database_url: str = Field("sqlite:///recsys.db", description="the service's store")
    table_prefix: str = Field("", description="prefix of the store's tables (as the service's)")
    retrain_args: str = Field("", description="extra flags of `training retrain`")
    metrics_port: int = Field(9102, ge=0, description="Prometheus port; 0 disables")
    stop_timeout_s: float = Field(3.0, gt=0, description="wait for a child after SIGTERM")


class RetrainMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.runs = Counter("recsys_retrain_runs", "Retrain runs by result (published, "
                            "rejected, failed, stopped, skipped_locked, missed).", ["result"],
                            registry=self.registry)
        self.running = Gauge("recsys_retrain_running", "1 while a retrain runs.",
                             registry=self.registry)
        self.last_seconds = Gauge("recsys_retrain_last_duration_seconds",
                                  "Duration of the last run.", registry=self.registry)
        self.last_finished = Gauge("recsys_retrain_last_finished_timestamp_seconds",
                                   "End of the last run (UNIX time).", registry=self.registry)
        self.gate_accepted = Gauge("recsys_gate_accepted", "1 when the last candidate passed "
                                   "the quality gate.", registry=self.registry)
        self.gate_recall = Gauge("recsys_gate_recall", "Recall@20 of the last gate.",
                                 ["split", "bundle"], registry=self.registry)

    def record_gate(self, decision: dict) -> None:
        self.gate_accepted.set(1.0 if decision.get("accepted") else 0.0)
        for split in ("valid", "holdout"):
            for who, value in decision.get(split, {}).items():
                if who != "rows":
                    self.gate_recall.labels(split=split, bundle=who).set(value)


def retrain_command(settings: SchedulerSettings) -> list[str]:
    command = [sys.executable, "-m", "training", "retrain", "--quiet",
               "--root", str(settings.bundles_root), "--data", settings.data,
               "--database-url", settings.database_url, "--table-prefix", settings.table_prefix]
    if settings.train_config is not None:
        command += ["--config", str(settings.train_config)]
    return command + settings.retrain_args.split()


_children: set[subprocess.Popen] = set()  # the running retrain, for the SIGTERM handler
_children_lock = threading.Lock()


def run_retrain(settings: SchedulerSettings, metrics: RetrainMetrics,
                command: Sequence[str] | None = None) -> str:
    """One run (the child takes the lock); returns its result label."""
    with run_lock(settings.database_url, settings.bundles_root) as free:
        pass  # only a look: the child holds the lock for its run
    code = LOCKED_EXIT
    if free:
        metrics.running.set(1)
        started = time.monotonic()
        try:
            code = _run_child(list(command or retrain_command(settings)))
        finally:
            metrics.running.set(0)
            metrics.last_seconds.set(time.monotonic() - started)
            metrics.last_finished.set(time.time())
    if code == LOCKED_EXIT:
        log.warning("another retrain holds the lock: this run is skipped")
        metrics.runs.labels(result="skipped_locked").inc()
        return "skipped_locked"
    result = {0: "published", 1: "rejected", STOPPED_EXIT: "stopped",
              -signal.SIGTERM: "stopped"}.get(code, "failed")
    gate = settings.bundles_root / "gate" / "gate.json"
    if result != "failed" and gate.exists():
        metrics.record_gate(json.loads(gate.read_text()))
    metrics.runs.labels(result=result).inc()
    log.info("retrain finished: %s (exit %d)", result, code)
    return result


def _run_child(argv: list[str]) -> int:
    child = subprocess.Popen(argv)
    with _children_lock:
        _children.add(child)
    try:
        return child.wait()
    finally:
        with _children_lock:
            _children.discard(child)


def stop_children(timeout_s: float) -> None:
    """SIGTERM every running child, SIGKILL what is left after ``timeout_s``."""
    with _children_lock:
        children = list(_children)
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def build_scheduler(
    settings: SchedulerSettings,
    metrics: RetrainMetrics,
    scheduler: BaseScheduler | None = None,
    job: Callable[[SchedulerSettings, RetrainMetrics], object] = run_retrain,
) -> BaseScheduler:
    """The scheduler with its one job (tests pass their own scheduler, on a fake clock)."""
    scheduler = scheduler or BlockingScheduler(timezone=settings.retrain_timezone)
    trigger = CronTrigger.from_crontab(settings.retrain_cron, timezone=settings.retrain_timezone)
    scheduler.add_job(job, trigger, args=(settings, metrics), id=JOB_ID,
                      max_instances=1, coalesce=True, misfire_grace_time=settings.retrain_grace_s,
                      replace_existing=True)

    def missed(event: JobEvent) -> None:
        log.warning("retrain scheduled for %s missed its grace time: skipped",
                    getattr(event, "scheduled_run_time", "?"))
        metrics.runs.labels(result="missed").inc()

    scheduler.add_listener(missed, EVENT_JOB_MISSED)
    return scheduler


def serve(settings: SchedulerSettings | None = None) -> None:
    settings = settings or SchedulerSettings()
    metrics = RetrainMetrics()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=metrics.registry)
    scheduler = build_scheduler(settings, metrics)

    def stop(signum: int, _frame: object) -> None:
        log.info("%s: stopping the scheduler and any running retrain",
                 signal.Signals(signum).name)
        stop_children(settings.stop_timeout_s)
        if not scheduler.running:  # a signal before start(): nothing to shut down
            raise SystemExit(0)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    job = scheduler.get_job(JOB_ID)
    now = datetime.now(ZoneInfo(settings.retrain_timezone))
    log.info("retrain scheduled '%s' (%s), next run %s", settings.retrain_cron,
             settings.retrain_timezone, job.trigger.get_next_fire_time(None, now))

    scheduler.start()
