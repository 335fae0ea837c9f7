"""Progress of the long loops of fitting: a live tqdm bar on a terminal, a few log lines otherwise.

`fit`, `report` and `forecast` spend their time in bootstrap refits (the two-variable law's
batched L-BFGS, the saturating law's profile fits) and run them for every form and again for
every backtest (144 runs with 2,000 resamples: ~6 s per metric on two busy cores, growing with
both), silently until now.
The fitting code only wraps its loops (`track` over forms, `batches` over resamples); this
module decides how that is shown:

- stderr is a terminal: a tqdm bar per loop, nested loops as nested bars (inner ones vanish when
  done), and log records routed through tqdm while a bar is live so they do not tear it.
- otherwise (a log file, CI, a Slurm job): no bar and no terminal control codes, but plain
  `logging` INFO lines: one when a loop starts ("fitting loss (500 bootstrap draws): 4 forms..."),
  one every `LOG_EVERY_S` seconds while it runs ("... 2/4 forms after 10 s (now: chinchilla)"),
  one when it ends ("... 4 forms done in 3.2 s"). A loop nested in another logs at DEBUG, so a
  study writes four lines per metric, not one per bootstrap batch.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from types import TracebackType
from typing import Any, TypeVar

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger(__name__)
T = TypeVar("T")

LOG_EVERY_S = 10.0  # without a terminal: at most one "still running" line per loop this often
_depth = threading.local()


def _current_depth() -> int:
    return int(getattr(_depth, "value", 0))


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)  # sys.stderr may be None (pythonw) or a bare object
    return bool(isatty()) if callable(isatty) else False


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


class Progress:
    """Progress of one loop of `total` units (a context manager); see the module docstring."""

    def __init__(self, desc: str, total: int, *, unit: str = "step") -> None:
        self.desc, self.total, self.unit = desc, int(total), unit
        self.done = 0
        self._now = ""
        self._bar: Any = None
        self._stack = ExitStack()
        self._started = self._last_line = 0.0
        self._level = logging.INFO

    def __enter__(self) -> Progress:
        depth = _current_depth()
        _depth.value = depth + 1
        self._started = self._last_line = time.perf_counter()
        if _stderr_is_terminal():
            if depth == 0:  # log records during the bar go through tqdm.write, above it
                self._stack.enter_context(logging_redirect_tqdm())
            self._bar = self._stack.enter_context(
                tqdm(total=self.total, desc=self.desc, unit=self.unit, file=sys.stderr, leave=depth == 0,
                     dynamic_ncols=True)
            )
        else:
            self._level = logging.INFO if depth == 0 else logging.DEBUG
            log.log(self._level, "%s: %s...", self.desc, _plural(self.total, self.unit))
        return self

    def now(self, what: str) -> None:
        """Name the unit being worked on (shown beside the bar, or in the next log line)."""
        self._now = what
        if self._bar is not None:
            self._bar.set_postfix_str(what, refresh=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        clock = time.perf_counter()
        if clock - self._last_line >= LOG_EVERY_S and self.done < self.total:
            self._last_line = clock
            now = f" (now: {self._now})" if self._now else ""
            log.log(self._level, "%s: %d/%d %ss after %.0f s%s", self.desc, self.done, self.total, self.unit,
                    clock - self._started, now)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _depth.value = _current_depth() - 1
        self._stack.close()
        if self._bar is not None:
            return
        elapsed = time.perf_counter() - self._started
        if exc_type is None:
            log.log(self._level, "%s: %s done in %.1f s", self.desc, _plural(self.total, self.unit), elapsed)
        else:
            # An error, or the caller left the loop (GeneratorExit): either way the loop did not finish.
            log.log(self._level, "%s: stopped after %d/%d %ss (%.1f s)", self.desc, self.done, self.total,
                    self.unit, elapsed)


def track(items: Iterable[T], *, desc: str, unit: str = "step", label: Callable[[T], str] | None = None) -> Iterator[T]:
    """Yield `items`, one progress unit each; `label(item)` names the item being worked on."""
    seq = list(items)
    with Progress(desc, len(seq), unit=unit) as progress:
        for i, item in enumerate(seq):
            if label is not None:
                progress.now(label(item))
            if i:  # the previous item is done; counted after naming this one, so a line says what runs now
                progress.update(1)
            yield item
        if seq:
            progress.update(1)


def batches(n: int, size: int, *, desc: str, unit: str = "resample") -> Iterator[slice]:
    """Slices of range(n) of at most `size` rows, progress counted in rows (e.g. resamples).

    Nothing is reported for a single batch: a loop that cannot show progress is not one.
    """
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    if n <= size:
        if n > 0:
            yield slice(0, n)
        return
    with Progress(desc, n, unit=unit) as progress:
        for start in range(0, n, size):
            stop = min(start + size, n)
            yield slice(start, stop)
            progress.update(stop - start)
