"""prometheus_client's multiprocess mode, set up the way a supervisor needs it.

Each process writes its metric values to memory-mapped files in one
directory; the supervisor sums them when scraped. Two rules matter:

- ``PROMETHEUS_MULTIPROC_DIR`` must be set before a process first imports
  prometheus_client, so the supervisor sets it before the fork server (and
  hence every worker) starts.
- Files are named after a *process identifier*. The default is the pid, so
  every recycled worker would leave its files behind and scrapes would slow
  down for ever. Workers use their slot instead ("worker3"): a replacement
  reopens its predecessor's files and keeps adding to the same counters, so
  totals stay exact and the file count stays proportional to the pool size.
  The supervisor never runs two live processes with one slot number.

The directory must be this user's alone (``dir_problem``): prometheus_client
opens its files by name, so anyone else able to write there could plant a
symbolic link the supervisor would then write through. A file is also
created here before prometheus_client opens it, refusing a symbolic link
(``O_NOFOLLOW``), and with mode 0600.

- A gauge is a process's state, not a running total: when a worker exits
  (recycled, crashed, killed by the OOM killer or for its memory or time),
  ``forget_gauges`` deletes every gauge file of its slot, whatever the
  gauge's ``multiprocess_mode``, before the slot is reused. Left in place,
  its last values would stay in the aggregate for ever (an in-progress
  gauge stuck at 1), and the replacement, which reopens the same files,
  would start from them. ``mark_process_dead`` would not do: it only
  deletes ``live*`` gauges, and of a pid, not of a slot. Counter and
  histogram files stay (that keeps counters monotonic).
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from workflow_sdk.errors import ConfigError

if TYPE_CHECKING:
    from workflow_sdk.metrics.metrics import Metrics

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"

#: Temporary directories choose_dir made in this process and not yet removed.
_created: set[str] = set()


def choose_dir(configured: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The configured directory, else ``$RUNTIME_DIRECTORY/metrics`` (systemd's
    ``RuntimeDirectory=``), else a fresh temporary directory."""
    env = os.environ if environ is None else environ
    if configured:
        return configured
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return os.path.join(runtime, "metrics")
    path = tempfile.mkdtemp(prefix="rochallor-metrics-")
    _created.add(path)
    return path


def release_dir(path: str | None) -> None:
    """Remove ``path`` if ``choose_dir`` created it. A configured directory or
    systemd's ``RuntimeDirectory`` is left in place (wiped at the next start;
    systemd removes its own at stop)."""
    if path is None or path not in _created:
        return
    _created.discard(path)
    shutil.rmtree(path, ignore_errors=True)


def _release_all() -> None:
    for path in list(_created):
        release_dir(path)


# For the exit paths that never reach the supervisor's release_dir call (an
# exception escaping it, sys.exit elsewhere in the program).
atexit.register(_release_all)


def dir_problem(path: str) -> str | None:
    """Why ``path`` may not hold the metric files, or None (also when it does
    not exist yet: ``prepare_dir`` creates it, mode 0700). It must be a
    directory itself (not a symbolic link), owned by this process's user and
    writable by no other (sticky bit or not)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path}: cannot inspect it: {exc.strerror or exc}"
    if stat.S_ISLNK(info.st_mode):
        return f"{path} is a symbolic link: name the directory itself"
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory"
    euid = os.geteuid()
    if info.st_uid != euid:
        return (
            f"{path} is owned by uid {info.st_uid}, not by this user (uid {euid}): "
            "its owner could plant or read the metric files"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "every user" if mode & stat.S_IWOTH else "its group"
        return (
            f"{path} is writable by {who} (mode {mode:04o}): they could plant links "
            "to files the supervisor would then write; use a directory of the service "
            "user's own (chmod go-w), or leave metrics.dir out"
        )
    return None


def prepare_dir(path: str) -> str:
    """Create ``path`` if needed (mode 0700), check it is this user's alone,
    delete metric files left by an earlier run (links are removed, never
    followed), and export it to this process's environment (inherited by
    workers). A ``ConfigError`` names ``metrics.dir`` when the directory
    will not do."""
    problem = dir_problem(path)
    if problem is None:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            problem = f"cannot create {path}: {exc.strerror or exc}"
        else:
            problem = dir_problem(path)  # it may have been made by someone else meanwhile
    if problem is not None:
        raise ConfigError(f"metrics.dir: {problem}")
    for stale in glob.glob(os.path.join(path, "*.db")):
        os.remove(stale)
    os.environ[ENV_DIR] = path
    return path


def _no_follow(base: Any) -> Any:
    """prometheus_client's file of values, created here first: never through a
    symbolic link, and readable by this user only."""

    class NoFollowMmapedDict(base):  # type: ignore[misc]
        def __init__(self, filename: str, read_mode: bool = False) -> None:
            if not read_mode:
                flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                os.close(os.open(filename, flags, 0o600))
            super().__init__(filename, read_mode)

    return NoFollowMmapedDict


#: This process's metric file identifier, once a worker has set it.
_identity: dict[str, str] = {}


def current_identifier() -> str:
    return _identity.get("id") or str(os.getpid())


def install_value_class() -> None:
    """Make every metric value created from now on in this process (and in the
    processes forked from it) write to ``*_<current_identifier()>.db``.

    Done once per process tree, in the fork server: handler modules it
    preloads may create metrics there, and those values follow the worker's
    identifier once the worker sets it (prometheus_client reopens its files
    when the identifier changes). Installing a second value class in one
    process would map the same file twice, so later calls do nothing.
    """
    if _identity.get("installed"):
        return
    # Imported here: prometheus_client must not be imported before the
    # multiprocess directory is in the environment.
    from prometheus_client import mmap_dict, values  # noqa: PLC0415

    # The value class looks this name up each time it opens a file.
    values.MmapedDict = _no_follow(mmap_dict.MmapedDict)  # type: ignore[attr-defined]
    values.ValueClass = values.MultiProcessValue(  # type: ignore[no-untyped-call]
        process_identifier=current_identifier
    )
    _identity["installed"] = "yes"


def worker_identifier(slot: int) -> str:
    """The metric file identifier of the worker in ``slot``."""
    return f"worker{slot}"


def use_identifier(identifier: str) -> None:
    """From now on this process's metrics write to ``*_<identifier>.db``."""
    _identity["id"] = identifier
    install_value_class()


def forget_gauges(path: str, identifier: str) -> int:
    """Delete the gauge files of ``identifier`` (a process that has exited and
    whose identifier is not in use); returns how many were deleted."""
    removed = 0
    for gauge_file in glob.glob(os.path.join(path, f"gauge_*_{glob.escape(identifier)}.db")):
        try:
            os.remove(gauge_file)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def scrape_tolerant_collector() -> type:
    """A ``MultiProcessCollector`` that reads the files again when one of them
    vanished during a scrape (``forget_gauges`` of a worker that just
    exited); prometheus_client tolerates that for ``live*`` gauges only."""
    from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

    class Collector(MultiProcessCollector):
        def collect(self) -> Any:
            for attempt in range(_SCRAPE_ATTEMPTS):
                try:
                    return super().collect()  # type: ignore[no-untyped-call]
                except FileNotFoundError:
                    if attempt == _SCRAPE_ATTEMPTS - 1:
                        raise
            raise AssertionError("unreachable")

    return Collector


#: Reads of the directory per scrape when files vanish meanwhile.
_SCRAPE_ATTEMPTS = 3


def metrics_with_identifier(identifier: str) -> Metrics:
    """The shared SDK metrics of this process, written to ``*_<identifier>.db``.

    Every metric value this process creates from now on, labelled children
    included (a crash counted by job type, say), goes to those files: the
    supervisor's parent records failures it decides itself, not only polls.
    """
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from workflow_sdk.metrics.metrics import Metrics  # noqa: PLC0415

    use_identifier(identifier)
    return Metrics(CollectorRegistry())


__all__ = [
    "ENV_DIR",
    "choose_dir",
    "current_identifier",
    "dir_problem",
    "forget_gauges",
    "install_value_class",
    "metrics_with_identifier",
    "prepare_dir",
    "release_dir",
    "scrape_tolerant_collector",
    "use_identifier",
    "worker_identifier",
]
