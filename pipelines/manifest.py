"""The batch manifest: one SQLite database per output folder (``OUTDIR/hsikit-batch.sqlite``).

One row per scene and options key (task, input, options and model checksum hashed): input fingerprint (size +
mtime, optionally SHA-256), options, status (pending / running / done / failed), attempts, timings, the one-line
error and the outputs written. An ``events`` table logs every transition (submitted, running, done, failed,
recovered, skipped) so a run's history can be audited, and ``runs`` one line per invocation.

Only the batch client writes, each change in its own transaction (SQLite commits are atomic and survive a killed
process); an exclusive lock file (``.hsikit-batch/lock``, holding the owner's pid and host) keeps a second client
off the same folder while one runs. The client removes it when it ends, however it ends; a lock left by a killed
client is taken over with a warning (see :meth:`Manifest._take_lock`). Readers (``hsikit batch status``) may open
the manifest at any time.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import sqlite3
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from hsikit.errors import InputError, OutputError

MANIFEST_NAME = "hsikit-batch.sqlite"
#: hidden work folder of a batch inside OUTDIR: per-scene temporary files and the client lock
WORK_NAME = ".hsikit-batch"
#: the client lock inside the work folder
LOCK_NAME = "lock"
STATUSES = ("pending", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scenes (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    input TEXT NOT NULL,
    task TEXT NOT NULL,
    options TEXT NOT NULL,
    fingerprint TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    outputs TEXT,
    error TEXT,
    pixels INTEGER,
    submitted REAL,
    started REAL,
    finished REAL,
    seconds REAL,
    timings TEXT,
    worker TEXT,
    run_id INTEGER
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    run_id INTEGER,
    time REAL NOT NULL,
    event TEXT NOT NULL,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    finished REAL,
    command TEXT,
    task TEXT,
    cluster TEXT,
    scenes INTEGER,
    done INTEGER,
    failed INTEGER,
    skipped INTEGER,
    status TEXT
);
CREATE INDEX IF NOT EXISTS events_key ON events(key);
"""


def scene_key(task: str, href: str, options: dict[str, Any]) -> str:
    """Stable key of one scene processed by one task with one set of options (model checksum included)."""
    text = json.dumps({"task": task, "input": href, "options": options}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class SceneRow:
    key: str
    name: str
    input: str
    task: str
    options: dict[str, Any]
    fingerprint: dict[str, Any] | None
    status: str
    attempts: int
    outputs: list[str]
    error: str | None
    pixels: int | None
    submitted: float | None
    started: float | None
    finished: float | None
    seconds: float | None
    timings: dict[str, Any] | None
    worker: str | None
    run_id: int | None


def _row(r: sqlite3.Row) -> SceneRow:
    def js(v, default):
        return json.loads(v) if v else default

    return SceneRow(r["key"], r["name"], r["input"], r["task"], js(r["options"], {}), js(r["fingerprint"], None),
                    r["status"], int(r["attempts"]), js(r["outputs"], []), r["error"], r["pixels"], r["submitted"],
                    r["started"], r["finished"], r["seconds"], js(r["timings"], None), r["worker"], r["run_id"])


class Manifest:
    """The manifest of one output folder. Use as a context manager; ``writable`` takes the client lock."""

    def __init__(self, outdir: str | Path, *, writable: bool = True) -> None:
        self.outdir = Path(outdir)
        self.path = self.outdir / MANIFEST_NAME
        self.writable = writable
        self._lock_fd: int | None = None
        self.db: sqlite3.Connection | None = None
        if writable:
            self.work.mkdir(parents=True, exist_ok=True)
            self._take_lock()
        elif not self.path.exists():
            raise InputError(f"no batch manifest in {self.outdir} ({MANIFEST_NAME} not found)")
        try:
            uri = self.path.resolve().as_uri() + ("" if writable else "?mode=ro")
            self.db = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            if writable:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.executescript(_SCHEMA)
        except BaseException:
            self.close()
            raise
        self.run_id: int | None = None

    @property
    def work(self) -> Path:
        return self.outdir / WORK_NAME

    @property
    def lock_path(self) -> Path:
        return self.work / LOCK_NAME

    def _take_lock(self) -> None:
        """Hold the folder's lock file: an ``flock`` on it, and "PID HOST" inside for messages.

        The kernel drops an ``flock`` when its process dies, so a file found unlocked but with an owner in it
        was left by a client that was killed (kill -9, power loss): taken over with a warning. A file still
        locked while its owner's pid is not alive on this host is locked through a descriptor some other
        process inherited, not by a batch: taken over too. Where the file system has no ``flock`` the owner's
        pid decides alone. Between ``open`` and ``flock`` the owner may remove the file; the lock is then on
        a name no longer in the folder, so it is taken again on the new file.
        """
        path = self.lock_path
        for _ in range(20):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                held = _flock(fd)
                pid, host = _owner(_read(fd))
                if held is False and pid is None:  # a client that has not written its pid yet, or a status reader
                    time.sleep(0.05)
                    continue
                if held is False and not _running(pid, host):
                    warnings.warn(f"the batch lock of {self.outdir} is held, but its owner ({_who(pid, host)}) is "
                                  "not running: taken over", stacklevel=3)
                    path.unlink(missing_ok=True)
                    continue
                if held is False or (held is None and _running(pid, host)):
                    raise self._busy(pid, host)
                if not _same_file(fd, path):
                    continue  # removed by its owner between our open and flock: lock the new file
                if pid is not None and (pid, host or _HOST) != (os.getpid(), _HOST):
                    warnings.warn(f"took over the batch lock of {self.outdir} left by {_who(pid, host)}, which "
                                  "ended without releasing it (killed?); its unfinished scenes are run again",
                                  stacklevel=3)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {_HOST}".encode(), 0)
                self._lock_fd, fd = fd, None
                return
            finally:
                if fd is not None:
                    os.close(fd)
        raise self._busy(None, None)

    def _busy(self, pid: int | None, host: str | None) -> OutputError:
        where = f" on {host}" if host and host != _HOST else ""
        extra = f"; if no batch runs there, delete {self.lock_path}" if where else ""
        return OutputError(f"another hsikit batch (pid {pid if pid is not None else '?'}{where}) is running on "
                           f"{self.outdir}; wait for it or stop it{extra}")

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.lock_path):  # removed while still locked: a client waiting on it sees it go
                self.lock_path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                pass
            os.close(fd)

    def active_pid(self) -> int | None:
        """The pid of the batch client holding this folder now, or None when no batch runs on it."""
        if self._lock_fd is not None:
            return os.getpid()
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pid, _ = _owner(_read(fd))
                return pid if pid is not None else -1
            except OSError:  # no flock on this file system: the recorded owner, if it runs
                pid, host = _owner(_read(fd))
                return pid if _running(pid, host) else None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the database and release the lock (removing its file), also when closing the database fails."""
        try:
            if self.db is not None:
                self.db.close()
        finally:
            self._release_lock()

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- runs ------------------------------------------------------------------------------------------------------
    def start_run(self, *, command: str | None, task: str, cluster: str) -> int:
        with self._tx() as db:
            cur = db.execute("INSERT INTO runs(started, command, task, cluster, status) VALUES (?, ?, ?, ?, 'running')",
                             (time.time(), command, task, cluster))
            self.run_id = int(cur.lastrowid)
        return self.run_id

    def finish_run(self, *, scenes: int, done: int, failed: int, skipped: int, status: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET finished=?, scenes=?, done=?, failed=?, skipped=?, status=? WHERE id=?",
                       (time.time(), scenes, done, failed, skipped, status, self.run_id))

    def runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM runs ORDER BY id")]

    # -- scenes ----------------------------------------------------------------------------------------------------
    def get(self, key: str) -> SceneRow | None:
        r = self.db.execute("SELECT * FROM scenes WHERE key=?", (key,)).fetchone()
        return _row(r) if r else None

    def scenes(self, status: str | None = None) -> list[SceneRow]:
        q, args = "SELECT * FROM scenes", ()
        if status:
            q, args = q + " WHERE status=?", (status,)
        return [_row(r) for r in self.db.execute(q + " ORDER BY rowid", args)]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for r in self.db.execute("SELECT status, COUNT(*) AS n FROM scenes GROUP BY status"):
            out[r["status"]] = int(r["n"])
        return out

    def events(self, key: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM events", ()
        if key:
            q, args = q + " WHERE key=?", (key,)
        return [dict(r) for r in self.db.execute(q + " ORDER BY id", args)]

    def _event(self, db, key: str, event: str, detail: str | None = None) -> None:
        db.execute("INSERT INTO events(key, run_id, time, event, detail) VALUES (?, ?, ?, ?, ?)",
                   (key, self.run_id, time.time(), event, detail))

    def upsert(self, *, key: str, name: str, href: str, task: str, options: dict[str, Any],
               fingerprint: dict[str, Any] | None, outputs: list[str]) -> SceneRow:
        """Register a scene as pending (a new row) or refresh the description of an existing one."""
        with self._tx() as db:
            old = db.execute("SELECT status FROM scenes WHERE key=?", (key,)).fetchone()
            if old is None:
                db.execute("INSERT INTO scenes(key, name, input, task, options, fingerprint, status, outputs, run_id) "
                           "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                           (key, name, href, task, json.dumps(options, sort_keys=True, default=str),
                            json.dumps(fingerprint), json.dumps(outputs), self.run_id))
                self._event(db, key, "planned")
        return self.get(key)

    def set_pending(self, key: str, fingerprint: dict[str, Any] | None, reason: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE scenes SET status='pending', fingerprint=?, error=NULL, run_id=? WHERE key=?",
                       (json.dumps(fingerprint), self.run_id, key))
            self._event(db, key, "pending", reason)

    def submitted(self, key: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE scenes SET status='pending', attempts=attempts+1, submitted=?, started=NULL, "
                       "finished=NULL, error=NULL, run_id=? WHERE key=?", (time.time(), self.run_id, key))
            self._event(db, key, "submitted")

    def running(self, key: str, started: float | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE scenes SET status='running', started=? WHERE key=? AND status!='done'",
                       (started or time.time(), key))
            self._event(db, key, "running")

    def done(self, key: str, *, outputs: list[str], pixels: int | None, seconds: float | None,
             timings: dict[str, Any] | None, worker: str | None, event: str = "done") -> None:
        with self._tx() as db:
            db.execute("UPDATE scenes SET status='done', outputs=?, pixels=?, seconds=?, timings=?, worker=?, "
                       "finished=?, error=NULL, run_id=? WHERE key=?",
                       (json.dumps(outputs), pixels, seconds, json.dumps(timings) if timings else None, worker,
                        time.time(), self.run_id, key))
            self._event(db, key, event)

    def failed(self, key: str, error: str, *, seconds: float | None = None, count_attempt: bool = False) -> None:
        with self._tx() as db:
            inc = ", attempts=attempts+1" if count_attempt else ""
            db.execute(f"UPDATE scenes SET status='failed', error=?, seconds=?, finished=?, run_id=?{inc} WHERE key=?",
                       (error, seconds, time.time(), self.run_id, key))
            self._event(db, key, "failed", error)

    def note(self, key: str, event: str, detail: str | None = None) -> None:
        with self._tx() as db:
            self._event(db, key, event, detail)


# -- the lock file ---------------------------------------------------------------------------------------------------
_HOST = socket.gethostname()


def _flock(fd: int) -> bool | None:
    """Try an exclusive ``flock``: True when taken, False when another holds it, None where unsupported."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS):
            return None
        raise
    return True


def _read(fd: int) -> str:
    return os.pread(fd, 256, 0).decode(errors="replace").strip()


def _owner(text: str) -> tuple[int | None, str | None]:
    """(pid, host) of a lock file's text "PID HOST" (earlier versions wrote the pid alone)."""
    parts = text.split()
    pid = int(parts[0]) if parts and parts[0].isdigit() else None
    return pid, (parts[1] if len(parts) > 1 else None)


def _who(pid: int | None, host: str | None) -> str:
    return f"pid {pid}" + (f" on {host}" if host and host != _HOST else "")


def _running(pid: int | None, host: str | None) -> bool:
    """Whether the owner may still run: alive on this host, or on another host (which cannot be checked)."""
    if pid is None:
        return False
    if host and host != _HOST:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
