"""Verified downloads of the benchmark datasets (standard library ``urllib`` only).

Each file is streamed to a hidden temporary name beside its final path, hashed on the way, checked against the
catalogue checksum and only then renamed into place, so an interrupted or corrupt transfer never appears under
the final name. ``HSIKIT_DATASETS_MIRROR`` (or ``mirror=``) replaces every URL by ``<mirror>/<filename>``, for
local copies, institutional mirrors and tests.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hsikit._version import __version__
from hsikit.datasets.catalog import Dataset, RemoteFile, dataset_dir, get
from hsikit.errors import InputError
from hsikit.io.atomic import check_output, remove_stale_temps, temp_path
from hsikit.progress import BYTES, Progress

#: environment variable with a base URL serving the dataset files by name
MIRROR_ENV = "HSIKIT_DATASETS_MIRROR"

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


class DownloadError(InputError):
    """A download failed: HTTP/network error, truncated transfer or checksum mismatch (the temp file is removed)."""


@dataclass(frozen=True)
class FileResult:
    """What :func:`download` did with one file."""

    filename: str
    path: Path
    #: "downloaded", "replaced" (a present copy failed its checksum), "present" (kept) or "manual" (no URL)
    status: str
    #: True when the file on disk matched a published checksum
    verified: bool
    sha256: str | None = None


@dataclass(frozen=True)
class DownloadResult:
    """:func:`download`'s result for one dataset."""

    dataset: Dataset
    directory: Path
    files: tuple[FileResult, ...]
    #: instructions for files that must be fetched by hand (None when nothing is missing)
    manual: str | None = None

    @property
    def complete(self) -> bool:
        """True when every file is on disk (none left for a manual download)."""
        return all(f.status != "manual" for f in self.files)


def mirror_url(mirror: str | None = None) -> str | None:
    """The mirror base URL: ``mirror`` if given, else ``$HSIKIT_DATASETS_MIRROR``, else None."""
    m = (mirror or os.environ.get(MIRROR_ENV) or "").strip()
    return m or None


def file_url(f: RemoteFile, mirror: str | None = None) -> str | None:
    """Where ``f`` is fetched from: ``<mirror>/<filename>`` when a mirror is set, else its catalogue URL."""
    m = mirror_url(mirror)
    return f"{m.rstrip('/')}/{f.filename}" if m else f.url


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _matches(path: Path, f: RemoteFile) -> bool:
    return f.checksum is not None and file_digest(path, f.algorithm) == f.digest


def _open(url: str):
    req = urllib.request.Request(url, headers={"User-Agent": f"hsikit/{__version__} (dataset download)"})
    try:
        return urllib.request.urlopen(req, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        hint = f"; set {MIRROR_ENV} or --mirror to use a copy" if e.code in (403, 404, 410) else ""
        raise DownloadError(f"HTTP {e.code} {e.reason} for {url}{hint}") from None
    except urllib.error.URLError as e:
        raise DownloadError(f"cannot download {url}: {e.reason}") from None
    except (TimeoutError, socket.timeout):
        raise DownloadError(f"cannot download {url}: timed out after {_TIMEOUT_S:.0f} s") from None


def fetch(url: str, dest: Path, f: RemoteFile, *, progress: bool = False) -> str:
    """Stream ``url`` into ``dest`` through a temp file; verify size and checksum, then rename. Returns the sha256.

    On any failure (HTTP, network, truncation, checksum, Ctrl-C) the temp file is removed and ``dest`` is left as it
    was; a good download replaces ``dest`` atomically.
    """
    check_output(dest, overwrite=True)
    remove_stale_temps(dest)
    tmp = temp_path(dest)
    sha = hashlib.sha256()
    other = hashlib.new(f.algorithm) if f.algorithm and f.algorithm != "sha256" else None
    n = 0
    try:
        with _open(url) as resp:
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else f.size
            # a bar on a terminal, a line every 10 % / 30 s in a log (hsikit.progress)
            with Progress(progress, expected, f.filename, unit=BYTES, transient=True) as bar, \
                    open(tmp, "wb") as out:
                while True:
                    try:
                        chunk = resp.read(_CHUNK)
                    except (TimeoutError, socket.timeout):
                        raise DownloadError(f"download of {url} stalled for {_TIMEOUT_S:.0f} s") from None
                    except (OSError, http.client.HTTPException) as e:  # reset, IncompleteRead (chunked)
                        why = " ".join(str(e).split()) or type(e).__name__
                        raise DownloadError(f"download of {url} broke off after {n} bytes: {why}") from None
                    if not chunk:
                        break
                    out.write(chunk)
                    sha.update(chunk)
                    if other is not None:
                        other.update(chunk)
                    n += len(chunk)
                    bar.advance(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        if expected is not None and n != expected:
            raise DownloadError(f"incomplete download of {f.filename}: got {n} of {expected} bytes from {url}")
        got = (other or sha).hexdigest()
        if f.checksum is not None and got != f.digest:
            raise DownloadError(f"checksum mismatch for {f.filename} from {url}: expected {f.algorithm} {f.digest}, "
                                f"got {got}; the download was discarded")
        os.replace(tmp, dest)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    return sha.hexdigest()


def download(key: str, data_dir: str | Path | None = None, *, force: bool = False, mirror: str | None = None,
             progress: bool = False, echo: Callable[[str], None] | None = None) -> DownloadResult:
    """Download (or check) every file of dataset ``key`` into ``<data dir>/<key>/``.

    A present file whose published checksum matches is kept (``force`` re-downloads it); one that fails its
    checksum is downloaded again. Files without a published checksum are kept when present and stored unverified
    otherwise. Files with no direct URL (and no mirror) are reported as ``"manual"`` with instructions in
    ``result.manual``. ``echo`` receives one line per file. Raises :class:`DownloadError` on failure.
    """
    ds = get(key)
    target = dataset_dir(ds.key, data_dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from hsikit.errors import OutputError

        raise OutputError(f"cannot create the data directory {target}: {e.strerror or e}") from None
    say = echo or (lambda _line: None)
    results: list[FileResult] = []
    for f in ds.files:
        dest = target / f.filename
        present = dest.is_file()
        url = file_url(f, mirror)
        # --force cannot replace a file that has no URL to fetch it from: keep it
        if present and (not force or url is None):
            if f.checksum is None:
                say(f"{f.filename}: present (no published checksum, not verified)")
                results.append(FileResult(f.filename, dest, "present", False))
                continue
            if _matches(dest, f):
                say(f"{f.filename}: present, {f.algorithm} verified")
                results.append(FileResult(f.filename, dest, "present", True))
                continue
            say(f"{f.filename}: present but fails its {f.algorithm} checksum"
                + ("; downloading again" if url else ""))
        if url is None:
            say(f"{f.filename}: no direct download URL")
            results.append(FileResult(f.filename, dest, "manual", False))
            continue
        sha = fetch(url, dest, f, progress=progress)
        status = "replaced" if present else "downloaded"
        note = f"{f.algorithm} verified" if f.checksum else f"unverified (no published checksum; sha256 {sha})"
        say(f"{f.filename}: {status}, {note}")
        results.append(FileResult(f.filename, dest, status, f.checksum is not None, sha))
    manual = ds.manual.replace("{dir}", str(target)) if ds.manual and any(
        r.status == "manual" for r in results) else None
    return DownloadResult(ds, target, tuple(results), manual)
