"""One run at a time per output: a lock file beside the store (or file) a run writes.

Two runs into one path used to both "succeed", each overwriting the other's chunks. A run
now holds ``.<name>.lock`` beside its output from before it starts any work until it ends;
a second run fails at once, naming the output and the holder (run id, host, pid).

The lock is an exclusive ``flock`` on that file, so the kernel releases it when the holder
dies, however it dies (SIGKILL, OOM, walltime). The file also holds the holder's record
(JSON); a run that finds a record but gets the lock took over from a dead run, and warns.
On file systems without ``flock`` (some Lustre mounts) the record alone decides: a holder on
this host whose pid is gone is stale; any other holder is respected.

>>> import tempfile
>>> out = Path(tempfile.mkdtemp()) / "scene.zarr"
>>> with lock_output(out, "run-a") as held:
...     held.holder.run_id
'run-a'
>>> lock_path(out).exists()
False
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from pipeline.errors import OutputBusyError, StaleLockWarning, StoreError

__all__ = [
    "LockHolder",
    "OutputLock",
    "acquire",
    "lock_output",
    "lock_path",
    "read_holder",
]


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: the run, its host and process, and since when (UTC)."""

    run_id: str
    host: str
    pid: int
    started: str

    @classmethod
    def here(cls, run_id: str) -> LockHolder:
        """Return the holder record of this process for ``run_id``."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(run_id, socket.gethostname(), os.getpid(), now)

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        """Read a record written by :meth:`to_json` (``None`` when empty or unreadable)."""
        try:
            data = json.loads(text)
            return cls(
                str(data["run_id"]), str(data["host"]), int(data["pid"]), str(data["started"])
            )
        except (ValueError, KeyError, TypeError):
            return None

    def to_json(self) -> str:
        """Return the record as one JSON line."""
        return json.dumps(asdict(self)) + "\n"

    def describe(self) -> str:
        """``run <id> (host <h>, pid <p>, since <t>)`` for messages."""
        return f"run {self.run_id} (host {self.host}, pid {self.pid}, since {self.started})"

    def is_dead(self) -> bool:
        """Whether this holder is known to be gone: on this host, and its pid is not running."""
        return self.host == socket.gethostname() and not _alive(self.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def lock_path(output: str | Path) -> Path:
    """Return the lock file of ``output``: a hidden sibling, ``.<name>.lock``."""
    out = Path(output)
    return out.with_name(f".{out.name}.lock")


@dataclass
class OutputLock:
    """A held lock; :meth:`release` (or leaving :func:`lock_output`) frees it."""

    output: Path
    path: Path
    holder: LockHolder
    handle: IO[str] | None
    previous: LockHolder | None = None

    def release(self) -> None:
        """Remove the lock file, then drop the lock (waiting runs then see a fresh file)."""
        if self.handle is None:
            return
        with contextlib.suppress(OSError):
            current = LockHolder.parse(self.path.read_text())
            if current is None or current.run_id == self.holder.run_id:
                self.path.unlink()
        self.handle.close()  # closing drops the flock
        self.handle = None


def _busy(output: Path, lock: Path, holder: LockHolder | None) -> OutputBusyError:
    who = holder.describe() if holder is not None else "another run (no record yet)"
    return OutputBusyError(
        f"{output} is being written by {who}; wait for it to finish or stop it, or choose "
        f"another output (lock file {lock})"
    )


def _open_lock(output: Path, lock: Path) -> IO[str]:
    """Open (creating) the lock file; one line when its folder is missing or read-only."""
    parent = lock.parent
    try:
        return lock.open("a+", encoding="utf-8")  # held for the whole run
    except OSError as exc:
        if not parent.is_dir():
            reason = f"directory {parent} does not exist"
        elif isinstance(exc, PermissionError | FileNotFoundError) or not os.access(parent, os.W_OK):
            reason = f"directory {parent} is not writable"
        else:
            reason = f"cannot write its lock file {lock} ({exc.strerror or exc})"
        raise StoreError(f"cannot create {output}: {reason}; choose another output") from None


def _flock(handle: IO[str]) -> bool | None:
    """Try the exclusive lock: True held, False busy, None when the file system has no flock."""
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        return None
    return True


def _same_file(handle: IO[str], path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), path.stat())
    except FileNotFoundError:
        return False


def acquire(output: str | Path, run_id: str) -> OutputLock:
    """Take the lock of ``output`` for ``run_id``, or fail at once.

    Raises
    ------
    OutputBusyError
        A live run holds it (its record is in the message).
    StoreError
        The lock file cannot be created (missing or read-only folder).
    """
    out = Path(output)
    lock = lock_path(out)
    me = LockHolder.here(run_id)
    for _ in range(20):  # the file may be replaced between open and flock (a release)
        handle = _open_lock(out, lock)
        try:
            held = _flock(handle)
            handle.seek(0)
            previous = LockHolder.parse(handle.read())
            if held is False:
                raise _busy(out, lock, previous)
            if held is None and previous is not None and not previous.is_dead():
                raise _busy(out, lock, previous)
            if held and not _same_file(handle, lock):
                handle.close()  # a releasing run unlinked it: lock the new file instead
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(me.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            handle.close()
            raise
        held_lock = OutputLock(out, lock, me, handle, previous)
        if previous is not None and previous.run_id != run_id:
            try:
                warnings.warn(
                    f"took over the lock of {out} from {previous.describe()}, which is no "
                    "longer running (killed?); its partial output is checked as usual",
                    StaleLockWarning,
                    stacklevel=3,
                )
            except BaseException:  # warnings turned into errors
                held_lock.release()
                raise
        return held_lock
    raise _busy(out, lock, None)


@contextlib.contextmanager
def lock_output(output: str | Path, run_id: str) -> Iterator[OutputLock]:
    """Hold the lock of ``output`` for the ``with`` block (see :func:`acquire`)."""
    held = acquire(output, run_id)
    try:
        yield held
    finally:
        held.release()


def read_holder(output: str | Path) -> LockHolder | None:
    """Return the record in ``output``'s lock file, if any (for ``status`` and messages)."""
    try:
        return LockHolder.parse(lock_path(output).read_text())
    except OSError:
        return None
