"""What a training run shows while it runs, and the times of its phases.

On a terminal the epochs are a tqdm bar; anywhere else (a log file, a pipe, a CronJob's log)
each epoch is one plain line, so a log never holds carriage-return bars. Each labelled number
says what it measures (``valid_recall@20``, not ``r20``). The bar has no percentage: its end is
where early stopping will stop unless validation improves again, which moves when it does.
After the last epoch every phase (serving rules and reports, writing the bundle, exporting the
towers, logging the run) is announced as a numbered stage with its time, and :class:`Phases`
keeps every phase's wall time so that the final summary adds up to the wall time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

# no percentage: the end moves with early stopping (see the module docstring)
BAR_FORMAT = "{desc}: epoch {n_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def interactive() -> bool:
    """Whether progress goes to a terminal (a bar) or to a log (plain lines)."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None)) and stream.isatty()


def likely_last_epoch(best_epoch: int, patience: int, max_epochs: int) -> int:
    """The epoch at which early stopping ends training unless validation improves again."""
    return min(max_epochs, best_epoch + patience)


class EpochProgress:
    """A bar on a terminal, a line per epoch elsewhere, nothing when disabled."""

    def __init__(self, desc: str, *, max_epochs: int, patience: int, refit: bool,
                 enabled: bool) -> None:
        self.desc, self.max_epochs, self.patience, self.refit = desc, max_epochs, patience, refit
        self.enabled = enabled
        self.started = time.perf_counter()
        total = max_epochs if refit else likely_last_epoch(0, patience, max_epochs)
        self.bar = (tqdm(total=total, desc=desc, unit="epoch", bar_format=BAR_FORMAT,
                         file=sys.stderr)
                    if enabled and interactive() else None)

    def update(self, epoch: int, loss: float, seconds: float, *, valid: float | None = None,
               valid_seconds: float = 0.0, best: float | None = None,
               best_epoch: int = 0) -> None:
        """One finished epoch: its mean loss, its training (and validation) seconds, and for
        an early-stopped run the validation Recall@20 and the best so far."""
        if not self.enabled:
            return
        stop_by = (self.max_epochs if self.refit
                   else likely_last_epoch(best_epoch, self.patience, self.max_epochs))
        if self.bar is not None:
            self.bar.total = stop_by
            self.bar.update(1)
            shown = {"loss": f"{loss:.4f}"}
            if valid is not None:
                shown.update(valid_recall20=f"{valid:.4f}",
                             best_valid_recall20=f"{best:.4f}@{best_epoch}",
                             stops_by=f"{stop_by}/{self.max_epochs}")
            self.bar.set_postfix(shown)
            return
        line = f"{self.desc} epoch {epoch}/{self.max_epochs}: loss {loss:.4f}"
        if valid is not None:
            end = (f"max_epochs ends it at epoch {stop_by}" if stop_by == self.max_epochs else
                   f"early stop by epoch {stop_by} unless it improves")
            line += (f", valid_recall@20 {valid:.4f} (best {best:.4f} at epoch {best_epoch}; "
                     f"{end})")
        line += f", {seconds:.1f} s training"
        if valid is not None:
            line += f" + {valid_seconds:.1f} s validating"
        line += f", {time.perf_counter() - self.started:.0f} s elapsed"
        print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Phases:
    """Wall time of each phase of a run (``seconds``), and a numbered line per stage after
    training (``after``: how many there are) so the quiet part of a run shows what it does."""

    def __init__(self, *, show: bool = True, after: int = 1) -> None:
        self.show, self.after, self.done_after = show, after, 0
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, key: str, label: str | None = None) -> Iterator[None]:
        """Time ``key``; with a ``label`` it is a post-training stage and says so."""
        stage = ""
        if label is not None:
            self.done_after += 1
            stage = f"after training [{self.done_after}/{max(self.after, self.done_after)}]"
            self._say(f"{stage} {label} ...")
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - started
            if label is not None:
                self._say(f"{stage} {label}: {self.seconds[key]:.1f} s")

    def skip(self, label: str, why: str) -> None:
        """A post-training stage that does not apply to this run."""
        self.done_after += 1
        self._say(f"after training [{self.done_after}/{max(self.after, self.done_after)}] "
                  f"{label}: skipped ({why})")

    def _say(self, line: str) -> None:
        if self.show:
            print(line, file=sys.stderr, flush=True)
