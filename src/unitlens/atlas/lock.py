"""``writing(atlas_path, command)``: the one write lock of an atlas, so two writers never interleave.

Every step that writes into an atlas (record, mis, lens, relevance, audit, basis, probe, study) holds the lock
for as long as it writes. The lock is a file ``<atlas>/.lock`` created exclusively (``O_EXCL``), holding the
holder's host, pid, command and start time. It survives a crash without blocking forever: a lock whose holder is
a process of this host that no longer runs is stale and is taken over (with a note). A lock held from another host
cannot be checked; the error names the holder and how to clear it. Within one process the lock is re-entrant
(a study that records and then scores one atlas, a command that calls another step). A study folder has the same
lock (``what`` names the folder's kind in the messages).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from unitlens.atlas.layout import LOCK
from unitlens.errors import AtlasBusy, BadInput, Note

_held: dict[Path, int] = {}  # lock files this process holds -> depth
_guard = threading.Lock()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _describe(holder: dict, path: Path) -> str:
    if not holder:
        return f"an unreadable lock file {path}"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"'{holder.get('command', '?')}' (pid {holder.get('pid')} on {holder.get('host')}, since {since})"


def _try_create(path: Path, command: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "command": command, "started": time.time()}, f)
    return True


READ_ONLY_FIX = "choose another output folder (or --no-write where the command has it)"


def check_writable(root: str | Path, fix: str = READ_ONLY_FIX) -> Path:
    """Raise ``BadInput`` unless an atlas can be written at ``root``: not a file, and in (or below) a folder this
    user may write to. Creates nothing, so a command can check before its work; ``acquire`` checks the same.
    ``fix``: what the message tells the user to do instead."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise BadInput(f"{root} is a file, not an atlas folder; choose another output folder")
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        what = "is a file" if not existing.is_dir() else "is read-only for this user"
        raise BadInput(f"cannot write into {root}: {existing} {what}; {fix}")
    return root


def acquire(root: str | Path, command: str, what: str = "atlas") -> Path:
    """Take the write lock of the folder ``root`` (created if missing), an atlas or a study folder (``what``); raise
    ``AtlasBusy`` if another live process holds it. Returns the lock file's path (give it to ``release``)."""
    root = check_writable(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"cannot create {what} folder {root}: {err.strerror or err}; choose a writable "
                       "location") from err
    path = (root / LOCK).resolve()
    with _guard:
        if path in _held:
            _held[path] += 1
            return path
        for _ in range(2):
            try:
                if _try_create(path, command):
                    _held[path] = 1
                    return path
            except PermissionError as err:
                raise BadInput(f"cannot write into {root} ({err.strerror}); it is read-only for this user: "
                               f"{READ_ONLY_FIX}") from err
            holder = _holder(path)
            same_host = holder.get("host") == socket.gethostname()
            pid = holder.get("pid")
            stale = same_host and isinstance(pid, int) and pid != os.getpid() and not _alive(pid)
            if stale or (same_host and pid == os.getpid()):  # our own, left by a thread that died, or a dead process
                warnings.warn(f"taking over the stale lock of {what} {root}: {_describe(holder, path)} is not "
                              "running", Note, stacklevel=3)
                path.unlink(missing_ok=True)
                continue
            raise AtlasBusy(f"{what} {root} is being written by {_describe(holder, path)}; wait for it to finish. "
                            f"If that process is gone, delete {path}")
    raise AtlasBusy(f"could not take the lock of {what} {root}; another process took it meanwhile")


def release(path: Path) -> None:
    """Give the lock back (the last re-entrant holder removes the file)."""
    with _guard:
        depth = _held.get(path, 0) - 1
        if depth > 0:
            _held[path] = depth
            return
        _held.pop(path, None)
        if _holder(path).get("pid") == os.getpid():
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def writing(root: str | Path, command: str, what: str = "atlas") -> Iterator[Path]:
    """Hold the write lock of the folder ``root`` (an atlas, or what ``what`` says) within the block."""
    path = acquire(root, command, what)
    try:
        yield path
    finally:
        release(path)
