"""Where a run stands, in its log: a ``[job N category]`` tag on every line of a multirun job (whose lines
interleave with other jobs' when they run in parallel), and the run's progress through its categories (elapsed
time and an estimate of the time left)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

log = logging.getLogger("anomalib_lite")


class LogTag:
    """The tag of a job's log lines: ``[job 3 brick]`` (``[job 3]`` before its first category).

    Args:
        job: the job's number in the multirun.
    """

    def __init__(self, job: int) -> None:
        self.job = job
        self.category: str | None = None

    def __str__(self) -> str:
        return f"[job {self.job} {self.category}]" if self.category else f"[job {self.job}]"


class TaggedFormatter(logging.Formatter):
    """A handler's formatter with :class:`LogTag` in front of every line it formats.

    Args:
        inner: the handler's own formatter (``None``: logging's default). tag: the tag, read at each line.
    """

    def __init__(self, inner: logging.Formatter | None, tag: LogTag) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.tag = tag

    def format(self, record: logging.LogRecord) -> str:
        """The inner formatter's text, after the tag."""
        return f"{self.tag} {self.inner.format(record)}"


# The tags of the jobs running in this process (set_log_category names their category).
_active: list[LogTag] = []


@contextlib.contextmanager
def tagged_log_lines(job: int) -> Iterator[LogTag]:
    """While inside, every line of the root logger's handlers (Hydra's console and ``<command>.log``) starts with
    job ``job``'s :class:`LogTag`; their formatters are put back on exit (a worker process may run another job)."""
    tag = LogTag(job)
    handlers = [(handler, handler.formatter) for handler in logging.getLogger().handlers]
    for handler, formatter in handlers:
        handler.setFormatter(TaggedFormatter(formatter, tag))
    _active.append(tag)
    try:
        yield tag
    finally:
        _active.remove(tag)
        for handler, formatter in handlers:
            handler.setFormatter(formatter)


def set_log_category(category: str | None) -> None:
    """Name ``category`` in the tags of the jobs running in this process (none outside a multirun)."""
    for tag in _active:
        tag.category = category


def duration(seconds: float) -> str:
    """``seconds`` for people: ``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class RunProgress:
    """A run's progress through its categories, logged as each one starts: ``category 2/4: grass (elapsed 1 min
    05 s, about 2 min 10 s left)``. The time left is the mean time of the categories trained so far in this
    session, times the categories left to train.

    Args:
        categories: the run's categories, in order. done: those an earlier session finished (not trained again).
    """

    def __init__(self, categories: list[str], done: set[str]) -> None:
        self.categories = categories
        self.to_train = sum(category not in done for category in categories)
        self.trained = 0
        self.started = time.monotonic()

    def start(self, category: str, trains: bool) -> None:
        """Log that ``category`` begins (``trains``: it is trained now, else it was finished before) and name it in
        the log tags."""
        set_log_category(category)
        number = self.categories.index(category) + 1
        elapsed = time.monotonic() - self.started
        if not trains:
            state = "finished in an earlier session"
        elif self.trained:
            left = elapsed / self.trained * (self.to_train - self.trained)
            state = f"elapsed {duration(elapsed)}, about {duration(left)} left"
        else:
            state = f"elapsed {duration(elapsed)}, time left known after the first category"
        log.info("category %d/%d: %s (%s)", number, len(self.categories), category, state)

    def finish(self, category: str, trained: bool) -> None:
        """Count ``category`` as done (``trained``: it was trained in this session)."""
        self.trained += trained
        if category == self.categories[-1]:
            count = len(self.categories)
            elapsed = duration(time.monotonic() - self.started)
            log.info("%d categor%s done in %s", count, "y" if count == 1 else "ies", elapsed)
