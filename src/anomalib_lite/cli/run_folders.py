"""Run folders: where a run writes, the refusal to write over an earlier run or into a folder another
run is using, and error reporting (also of Hydra's own errors about the command line).

Importing this module registers the ``fresh_dir`` config resolver that the entry points' run
folders use (``hydra.run.dir: ${fresh_dir:outputs/<task>/<date>_<time>}``).
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import itertools
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra._internal.utils as hydra_utils
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import OmegaConfBaseException

from anomalib_lite.errors import AnomalibLiteError, ConfigError
from anomalib_lite.pipeline.progress import tagged_log_lines

try:
    import fcntl
except ImportError:  # Windows: no flock; runs then do not claim their folders
    fcntl = None

log = logging.getLogger("anomalib_lite")
# What Hydra itself writes into a run folder (its config record and the job's log).
HYDRA_FILES = frozenset({".hydra", "train.log", "eval.log", "predict.log", "export.log"})
# The file a run holds an exclusive lock on while it runs (see claim_run_folder); not an output.
CLAIM_FILE = ".run.lock"
# Folders this process has claimed: folder → the open lock file (the lock lasts while it is open).
_claims: dict[Path, int] = {}


class FolderInUseError(ConfigError):
    """Another process (a run, or a sweep) holds the run folder's claim."""


# An output that cannot be written: disk full, over quota, read-only or forbidden folder.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def fresh_dir(base: str) -> str:
    """``base``, or else ``base_2``, ``base_3``…: the first of them that does not exist, created now.

    Creating the folder claims it atomically, so two runs started in the same second (same
    ``${now:...}``) never share a folder. Registered as the config resolver ``fresh_dir``
    (cached: a config resolves it once).
    """
    path = Path(base)
    path.parent.mkdir(parents=True, exist_ok=True)
    for number in itertools.count(1):
        candidate = path if number == 1 else path.with_name(f"{path.name}_{number}")
        with contextlib.suppress(FileExistsError):
            candidate.mkdir()
            return str(candidate)
    raise AssertionError("unreachable")


if not OmegaConf.has_resolver("fresh_dir"):
    OmegaConf.register_new_resolver("fresh_dir", fresh_dir, use_cache=True)


def run_folder() -> Path:
    """The folder Hydra made for this run (or this multirun job)."""
    return Path(HydraConfig.get().runtime.output_dir)


def multirun_job_number() -> int | None:
    """This job's number in a Hydra multirun, ``None`` in a single run."""
    hydra = HydraConfig.get()
    return hydra.job.num if hydra.mode == RunMode.MULTIRUN else None


def check_run_folder(folder: Path, resume: bool = False, ignored: frozenset[str] = frozenset()) -> None:
    """Refuse to write over an earlier run; with ``resume``, require something to resume.

    Args:
        ignored: names in ``folder`` that do not count as an earlier run (inside a job,
            the files Hydra has just written for this run: :data:`HYDRA_FILES`).
    Raises:
        ConfigError: ``folder`` already holds files (and ``resume`` is off), or holds no
            checkpoint to resume (``resume`` on).
    """
    ignored = ignored | {CLAIM_FILE}
    held = sorted(p.name for p in folder.iterdir() if p.name not in ignored) if folder.is_dir() else []
    if resume and not (folder / "checkpoints").is_dir():
        raise ConfigError(
            f"trainer.resume=true but {folder} holds no checkpoints. Point hydra.run.dir at the "
            "interrupted run's folder, e.g. hydra.run.dir=outputs/<task>/<date>_<time>."
        )
    if held and not resume:
        resume_hint = "Pass trainer.resume=true to continue it, or choose" if "checkpoints" in held else "Choose"
        raise ConfigError(
            f"Run folder {folder} already holds a run ({', '.join(held[:5])}); nothing was written into it. "
            f"{resume_hint} another folder (hydra.run.dir=…, hydra.sweep.dir=… for a sweep, or leave it out "
            "for a new dated one)."
        )


def claim_run_folder(folder: Path) -> bool:
    """Claim ``folder`` for this process: an exclusive lock (``flock``) on its :data:`CLAIM_FILE`, held until
    :func:`release_run_folder` or the end of the process (a killed process loses it: a stale file blocks nothing).

    Two runs started together into one folder both find it empty; only one of them gets the claim.

    Returns:
        Whether the claim was taken now (``False``: this process already held it, or the file system
        cannot lock, which is logged).
    Raises:
        FolderInUseError: another process holds the claim (nothing was written).
    """
    key = folder.resolve()
    if key in _claims or fcntl is None:
        return False
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        lock_file = folder / CLAIM_FILE
        descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(descriptor)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                log.warning("Cannot lock %s (%s): this run does not claim its folder", lock_file, exc.strerror)
                _claims[key] = -1  # said once
                return False
            raise FolderInUseError(
                f"Run folder {folder} is in use by another run (started at the same time, or still running); "
                "nothing was written into it. Wait for that run to end, or choose another folder (hydra.run.dir=…, "
                "hydra.sweep.dir=… for a sweep, or leave it out for a new dated one)."
            ) from None
        try:  # the file may have been removed (its folder discarded) before the lock: then claim anew
            current = os.stat(lock_file)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(current, os.fstat(descriptor)):
            _claims[key] = descriptor
            return True
        os.close(descriptor)


def release_run_folder(folder: Path) -> None:
    """Give up this process's claim of ``folder`` (see :func:`claim_run_folder`); nothing if it holds none."""
    descriptor = _claims.pop(folder.resolve(), -1)
    if descriptor >= 0:
        os.close(descriptor)  # closing the file ends its lock


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and check that a file can be made in it.

    Raises:
        ConfigError: naming ``folder`` and the reason (read-only, forbidden, disk full).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(
            f"Cannot write into the run folder {folder}: {exc.strerror or exc}. "
            "Choose a writable folder with hydra.run.dir=… (or hydra.sweep.dir=…)."
        ) from exc


def output_error_message(exc: OSError, folder: Path) -> str:
    """One line for a file that could not be written (``exc.errno`` in :data:`WRITE_ERRNOS`)."""
    where = exc.filename or folder
    return (
        f"Cannot write {where}: {exc.strerror or exc}. Free disk space or make that folder writable "
        f"(this run's outputs go to {folder}: hydra.run.dir=…); the files written before are kept."
    )


def discard_if_fresh(folder: Path) -> None:
    """Remove a run folder that holds nothing but Hydra's own files and its claim (the run failed before any
    work; call it only on a folder this process has claimed)."""
    if folder.is_dir() and {p.name for p in folder.iterdir()} <= HYDRA_FILES | {CLAIM_FILE}:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # the task folder, if this run was its only one
            folder.parent.rmdir()


def report_errors(job: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Wrap a Hydra task: a user error, or an output that cannot be written (disk full,
    read-only folder), is printed as one message (no traceback).

    The job first claims its folder (:func:`claim_run_folder`; a single run's was claimed by
    :class:`RunFolderGuard`, a multirun job's is claimed here and given up when the job ends), so that
    no other process works in it meanwhile. A run that failed before any work leaves no folder behind.
    In a single run the process exits with status 1; in a multirun the error is raised so Hydra goes on
    with the other jobs and reports the failure at the end. Every log line of a multirun job, its error too,
    starts with the job's tag (``[job 3 brick]``: :func:`~anomalib_lite.pipeline.progress.tagged_log_lines`).
    """

    def wrapped(cfg: DictConfig) -> Any:
        job_number = multirun_job_number()
        with tagged_log_lines(job_number) if job_number is not None else contextlib.nullcontext():
            return _run_reporting_errors(job, cfg)

    return wrapped


def _run_reporting_errors(job: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """:func:`report_errors`' work: claim the folder, run ``job``, report a user error in one line."""
    folder = run_folder()
    claimed = False
    try:
        claimed = claim_run_folder(folder)
        return job(cfg)
    except (AnomalibLiteError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in WRITE_ERRNOS:
            raise
        log.error("%s", exc if isinstance(exc, AnomalibLiteError) else output_error_message(exc, folder))
        if not isinstance(exc, FolderInUseError):  # never remove a folder another process is using
            discard_if_fresh(folder)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        sys.exit(1)
    finally:
        if claimed and HydraConfig.get().mode == RunMode.MULTIRUN:
            release_run_folder(folder)


def keep_swept_keys_in_names(config: DictConfig) -> None:
    """Keep in the job folders' names every override that the sweep varies.

    ``hydra.job.config.override_dirname.exclude_keys`` leaves noisy options (``data.root``,
    ``trainer.device``…) out of the names; when a sweep varies one of them, its jobs would
    share a folder. This adds a Hydra override, applied to every job, that removes the varied
    keys from the exclusion.
    """
    excluded = list(config.hydra.job.config.override_dirname.exclude_keys)
    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    swept = {o.key_or_group for o in overrides if o.is_sweep_override()}
    kept = [key for key in excluded if key not in swept]
    if kept != excluded:
        with read_write(config.hydra):
            config.hydra.overrides.hydra.append(f"hydra.job.config.override_dirname.exclude_keys=[{','.join(kept)}]")


def _os_error_behind(exc: BaseException) -> OSError | None:
    """The ``OSError`` that a config error was raised while handling (OmegaConf does not chain it as the cause)."""
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__context__
    return exc


def _refuse(message: str) -> None:
    log.error("%s", message)
    sys.exit(1)


class RunFolderGuard(Callback):
    """Hydra callback: checks the run folder *before* Hydra writes anything into it, and claims it.

    Hydra makes the folder, opens the log and saves ``.hydra/`` before the task starts; a check
    inside the task would come after those writes into an earlier run. A single run is refused
    when its folder already holds anything; a multirun when its sweep folder holds anything
    (``trainer.resume=true`` lets a run, or a sweep, continue its own folder). Either is refused
    when another process has claimed the folder (:func:`claim_run_folder`), and when an option
    without a default (``???``, e.g. ``ckpt_path``) is not given: before any folder is made.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse (exit status 1, one message) a run whose folder is taken or not writable; claim it."""
        self._guard(config, "hydra.run.dir", self.check)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a sweep whose folder is taken or not writable, claim it; name each job's folder apart."""
        self._guard(config, "hydra.sweep.dir", lambda folder, cfg: resume(cfg) or check_run_folder(folder))
        keep_swept_keys_in_names(config)

    def check(self, folder: Path, config: DictConfig) -> None:
        """The checks of one run's ``folder`` (given the composed ``config``); raises ConfigError."""
        check_run_folder(folder, resume(config))

    def _guard(self, config: DictConfig, key: str, check: Callable[[Path, DictConfig], None]) -> None:
        missing = missing_options(config)
        if missing:
            _refuse(missing_options_message(missing))
        try:
            folder = Path(str(OmegaConf.select(config, key)))
            check(folder, config)  # nothing made yet in an earlier run's folder
            check_writable(folder)
            claim_run_folder(folder)
            check(folder, config)  # again, the folder now ours: another run may have used it meanwhile
        except OmegaConfBaseException as exc:  # fresh_dir could not create the folder
            cause = _os_error_behind(exc)
            if cause is None:
                raise
            _refuse(
                f"Cannot create the run folder {cause.filename}: {cause.strerror}. Choose a writable "
                f"folder with {key}=…"
            )
        except FolderInUseError as exc:  # the folder is another run's: leave it as it is
            _refuse(str(exc))
        except ConfigError as exc:
            with contextlib.suppress(OSError):  # an empty folder (fresh_dir's, or made here), and its claim
                if {p.name for p in folder.iterdir()} == {CLAIM_FILE} and folder.resolve() in _claims:
                    (folder / CLAIM_FILE).unlink()
                folder.rmdir()
            _refuse(str(exc))


def missing_options(config: DictConfig) -> list[str]:
    """The dotted names of the options left at ``???`` (no default, not given), Hydra's own left out.

    Read without resolving anything (resolving ``hydra.run.dir`` would make the run folder).
    """
    found: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                walk(value, f"{prefix}{name}.")
        elif node == "???":
            found.append(prefix.rstrip("."))

    plain = OmegaConf.to_container(config, resolve=False)
    walk({k: v for k, v in plain.items() if k != "hydra"}, "")
    return found


def missing_options_message(missing: list[str]) -> str:
    """One line naming the options that must be given, e.g. ``ckpt_path=… is required``."""
    given = " ".join(f"{name}=…" for name in missing)
    verb = "is" if len(missing) == 1 else "are"
    return f"{given} {verb} required (no default): python {Path(sys.argv[0]).name} {given}"


def _nearest(name: str, choices: list[str], prefix: str = "") -> str:
    """`` (did you mean <prefix>X?)`` for the choice X nearest to ``name`` (difflib), or nothing."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def hydra_error_message(exc: Exception, prefixed: tuple[str, ...] = ()) -> str | None:
    """One line for one of Hydra's own errors about the command line, or ``None`` (Hydra's message stays).

    - an unknown option of a config group (``model=hfrr``): the group's options, the nearest one first;
    - an unknown key (``model.lrr=0.1``): the valid keys there, the nearest one first, not Hydra's advice
      to add it with ``+`` (the run would refuse it);
    - a value Hydra's grammar cannot read unquoted (non-ASCII letters, spaces: ``input=…/é.png``): how to quote it.

    Args:
        prefixed: top-level keys that this command takes only with a leading ``+`` (eval.py's ``model``).
    """
    script = Path(sys.argv[0]).name
    if isinstance(exc, MissingConfigException) and exc.options and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        return (
            f"{group}={option}: no such option of {group}{_nearest(option, list(exc.options), f'{group}=')}; "
            f"choose one of {', '.join(exc.options)}"
        )
    cause = exc.__cause__
    if isinstance(exc, ConfigCompositionException) and isinstance(cause, OmegaConfBaseException):
        match = re.match(r"Could not override '([^']+)'", str(exc))
        parent = cause.parent_node
        if match is None or not isinstance(parent, DictConfig) or cause.key is None:
            return None
        override = next((o for o in sys.argv[1:] if o.split("=", 1)[0] == match.group(1)), match.group(1))
        where = parent._get_full_key(None)
        if not where and str(cause.key) in prefixed:
            return f"{override}: {script} takes {cause.key} options with a leading +: +{override}"
        keys = sorted(str(k) for k in parent if k != "hydra")
        unknown = f"{where}.{cause.key}" if where else str(cause.key)
        owner = where or script
        return (
            f"{override}: unknown option {unknown}{_nearest(str(cause.key), keys, f'{where}.' if where else '')}; "
            f"the options of {owner} are: {', '.join(keys)}"
        )
    if isinstance(exc, OverrideParseException):
        match = re.fullmatch(r"([+~]{0,2}[\w.@/-]+)=(.*)", exc.override, re.DOTALL)
        if match is None:
            return None
        key, value = match.groups()
        if value.isascii() and not any(c.isspace() for c in value):
            return None
        quoted = f'{key}="{_hydra_quoted(value)}"'
        try:
            (parsed,) = OverridesParser.create().parse_overrides([quoted])
        except OverrideParseException:
            return None
        if parsed.value() != value:
            return None
        return (
            f"{exc.override}: Hydra reads a value with non-ASCII letters or spaces only in quotes; "
            f"write it as {shlex.quote(quoted)} (double quotes inside single quotes)"
        )
    return None


def _hydra_quoted(value: str) -> str:
    """``value`` for Hydra's double-quoted strings: backslashes before a quote or at the end doubled, quotes escaped."""
    value = re.sub(r'(\\*)"', lambda m: m.group(1) * 2 + '\\"', value)
    return re.sub(r"(\\+)$", lambda m: m.group(1) * 2, value)


def run_main(main: Callable[[], Any], prefixed: tuple[str, ...] = ()) -> None:
    """Run an entry point's ``@hydra.main`` function with Hydra's own errors about the command line as one line
    each (see :func:`hydra_error_message`; exit status 1); every other error is reported as Hydra reports it.

    ``HYDRA_FULL_ERROR=1`` keeps Hydra's messages and tracebacks.
    """
    report = hydra_utils.run_and_report

    def clear(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except (OverrideParseException, ConfigCompositionException) as exc:
            message = None if os.environ.get("HYDRA_FULL_ERROR") == "1" else hydra_error_message(exc, prefixed)
            if message is None:
                raise
            sys.stderr.write(f"Error: {message}\n")
            sys.exit(1)

    hydra_utils.run_and_report = lambda func: report(lambda: clear(func))
    try:
        main()
    finally:
        hydra_utils.run_and_report = report


class TrainingRunGuard(RunFolderGuard):
    """:class:`RunFolderGuard` for train.py: a resumed run must also keep its training options."""

    def check(self, folder: Path, config: DictConfig) -> None:
        """The run-folder checks, then (with ``trainer.resume``) the stored configs against the command's."""
        super().check(folder, config)
        if config.trainer.resume:
            # Imported here, not above: the other checks come before the seconds that importing torch takes.
            from anomalib_lite.pipeline.config import task_config
            from anomalib_lite.pipeline.training import check_resume_config, run_config

            check_resume_config(folder, run_config(task_config(config))[1])


def resume(config: DictConfig) -> bool:
    """Whether the command continues an earlier run (``trainer.resume``; absent: no)."""
    return bool(OmegaConf.select(config, "trainer.resume", default=False))
