"""Downloading an update bundle: size-bounded, resumed with HTTP Range after an interruption."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from device.update_bundle import MAX_BUNDLE_BYTES, UpdateRefused

log = logging.getLogger(__name__)

CHUNK = 1 << 16
TIMEOUT_S = 30.0
SPARE_BYTES = 8 << 20  # left free on the card after a download
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
FreeBytes = Callable[[Path], int]
Progress = Callable[[int, int | None], None]


def disk_free(path: Path) -> int:
    """Free bytes on the file system of ``path``."""
    return shutil.disk_usage(path).free


def is_url(source: str) -> bool:
    """Whether ``source`` names a bundle to download rather than a local file."""
    return source.startswith(("http://", "https://"))


def partial_path(folder: Path, url: str) -> Path:
    """Where the download of ``url`` is kept until complete (the same URL resumes the same file)."""
    return folder / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".bundle.part")


def download(url: str, folder: Path, *, max_bytes: int = MAX_BUNDLE_BYTES, expected_size: int | None = None,
             free_bytes: FreeBytes = disk_free, progress: Progress | None = None,
             timeout_s: float = TIMEOUT_S) -> Path:
    """Download ``url`` into ``folder``, resuming a partial file; returns the complete file.

    Refuses (UpdateRefused) a bundle over ``max_bytes`` or ``expected_size``, one that does not fit on the
    card, and an interrupted transfer (code ``truncated``: the part stays, the next attempt resumes it).
    """
    if not is_url(url):
        raise UpdateRefused("source", f"{url!r} is not an http(s) URL")
    folder.mkdir(parents=True, exist_ok=True)
    part = partial_path(folder, url)
    have = part.stat().st_size if part.exists() else 0
    limit = min(max_bytes, expected_size) if expected_size is not None else max_bytes
    if have > limit:
        part.unlink()
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": "massager-update"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part is already whole
            return _finish(part, have, expected_size)
        raise UpdateRefused("download", f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UpdateRefused("download", f"{url}: {getattr(exc, 'reason', None) or exc}") from None
    with response:
        start = 0
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != have:
                raise UpdateRefused("download", f"{url}: the server resumed at the wrong place "
                                    f"({response.headers.get('Content-Range')!r}, wanted byte {have})")
            start = have
            total = None if match.group(3) == "*" else int(match.group(3))
        else:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if total is not None and total > limit:
            raise UpdateRefused("size", f"{url} is {total} bytes; the limit is {limit}")
        needed = (total or limit) - start + SPARE_BYTES
        free = free_bytes(folder)
        if free < needed:
            raise UpdateRefused("disk", f"not enough space for the download: {free} bytes free, "
                                f"{needed} needed ({folder})")
        log.info("downloading %s%s", url, f" from byte {start}" if start else "")
        got = start
        with open(part, "r+b" if start else "wb") as f:
            f.seek(start)
            f.truncate()
            try:
                while chunk := response.read(CHUNK):
                    got += len(chunk)
                    if got > limit:
                        raise UpdateRefused("size", f"{url} is more than {limit} bytes; download stopped")
                    f.write(chunk)
                    if progress is not None:
                        progress(got, total)
            except (OSError, urllib.error.URLError) as exc:
                f.flush()
                raise UpdateRefused("truncated", f"{url}: download interrupted at byte {got} of "
                                    f"{total or '?'} ({exc}); the next attempt resumes it") from None
            f.flush()
            os.fsync(f.fileno())
    if total is not None and got != total:
        raise UpdateRefused("truncated", f"{url}: the server sent {got} of {total} bytes; the next attempt "
                            "resumes it")
    return _finish(part, got, expected_size)


def _finish(part: Path, size: int, expected_size: int | None) -> Path:
    """The complete download under its final name."""
    if expected_size is not None and size != expected_size:
        raise UpdateRefused("truncated", f"downloaded {size} bytes; the announcement says {expected_size}")
    done = part.with_name(part.name.removesuffix(".part"))
    part.replace(done)
    return done
