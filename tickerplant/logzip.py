"""Closed days' logs: zstd compression, reading a compressed log, and retention.

    compress(path) -> path.zst      tp_YYYYMMDD.log -> tp_YYYYMMDD.log.zst, then the .log goes
    open_log(path)                  a context giving a plain log path with the same bytes
    tidy(log_dir, today, ...)       compress closed days, delete old ones (the scheduled job)

The `.zst` file is one standard zstd frame stream (pyarrow's codec, no extra dependency): the
`zstd` command line tool reads it, and a compressed log decompresses to exactly the bytes of
the original, torn tail or corruption included, so `check`, `scan` and `repair` of the
decompressed bytes give what they gave for the original (offsets are offsets in the
uncompressed log). Compression is safe against a crash at any point: the `.zst` is written to
a temporary name, fsynced, read back and compared (CRC-32 and length) with the original, renamed
into place, and only then is the original deleted; a crash leaves the original, maybe beside a
complete `.zst` that the next run replaces.

`open_log` decompresses a `.zst` to a hidden temporary file beside it (`.tp_....reading`, not
matched by the TP's `tp_????????.log` glob; in the system temp directory if the log's directory
is read-only) and removes it when the context ends: the readers in `tickerplant.log` (including
ones that memory-map the file) work on it unchanged. A plain `.log` is given as is.

What is never touched (`tidy`): a log whose day is today's or later (by the trading-day clock
the caller passes as `today`), and the newest plain `tp_*.log` in the directory whatever its
day, because a restarting TP continues that file. Subscribers read only the TP's current day
(and the day before until its end-of-day record), and compression waits until a log is more
than `compress_after_days` (>= 1) days old, so no subscriber is ever handed a compressed log.
A log without its end-of-day record is compressed only when older than
`compress_unended_after_days`. Retention deletes a day's log (`.log` or `.log.zst`) and the
files beside it (`.torn-N`, `.repaired`) once the day is more than `keep_days` days old.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from schemas.durable import fsync_path

log = logging.getLogger(__name__)

SUFFIX = ".zst"
CODEC = "zstd"
CHUNK = 8 << 20
LOG_NAME = re.compile(r"^tp_(\d{8})\.log(\.zst)?$")
BESIDE = re.compile(r"^tp_(\d{8})\.log\.(torn-\d+|repaired)$")   # files a day's log leaves
READING = re.compile(r"^\.tp_\d{8}\.log\.zst\..*\.reading$")      # open_log's temporaries
STALE_READING_S = 86_400


class LogZipError(ValueError):
    """A compressed log cannot be written or read; the message says what to do."""


def is_compressed(path: str | Path) -> bool:
    return str(path).endswith(SUFFIX)


def plain_path(path: str | Path) -> Path:
    """The log's name without `.zst`."""
    p = Path(path)
    return p.with_name(p.name[: -len(SUFFIX)]) if is_compressed(p) else p


def _bar(total: int, desc: str, progress: bool):
    from tqdm import tqdm
    return tqdm(total=total or None, unit="B", unit_scale=True, leave=False, desc=desc,
                disable=None if progress else True)


def _digest_compressed(path: Path, bar=None) -> tuple[int, int]:
    """(CRC-32, length) of a .zst's uncompressed bytes, read as a stream."""
    crc = n = 0
    try:
        with pa.CompressedInputStream(str(path), CODEC) as s:
            while chunk := s.read(CHUNK):
                crc = zlib.crc32(chunk, crc)
                n += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    except (OSError, pa.ArrowException) as e:
        raise LogZipError(f"{path}: not readable zstd data after {n} bytes ({e})") from None
    return crc, n


def compress(path: str | Path, progress: bool = False) -> Path:
    """`path` as `path.zst`, verified, then `path` deleted. Returns the .zst's path. The file
    must not be written to meanwhile (LogZipError if it was; the original then stays)."""
    src = Path(path)
    if is_compressed(src):
        raise LogZipError(f"{src} is already compressed")
    before = src.stat()
    out = src.with_name(src.name + SUFFIX)
    tmp = src.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    crc = n = 0
    try:
        with _bar(2 * before.st_size, f"compressing {src.name}", progress) as bar:
            with open(src, "rb") as f, pa.CompressedOutputStream(str(tmp), CODEC) as z:
                while chunk := f.read(CHUNK):
                    crc = zlib.crc32(chunk, crc)
                    n += len(chunk)
                    z.write(chunk)
                    bar.update(len(chunk))
            fsync_path(tmp)
            after = src.stat()
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or n != after.st_size:
                raise LogZipError(f"{src} was written to while being compressed; it is kept as is. "
                                  "Compress only closed days' logs")
            if _digest_compressed(tmp, bar) != (crc, n):
                raise LogZipError(f"{tmp}: reads back different from {src}; {src} is kept as is "
                                  "(check the disk)")
        os.replace(tmp, out)
        fsync_path(out.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    src.unlink()
    fsync_path(out.parent)
    return out


def decompress(path: str | Path, out: str | Path, progress: bool = False) -> Path:
    """Write the uncompressed bytes of the .zst at `path` to `out` (streamed, bounded memory)."""
    src, out = Path(path), Path(out)
    with _bar(0, f"decompressing {src.name}", progress) as bar:
        n = 0
        try:
            with pa.CompressedInputStream(str(src), CODEC) as z, open(out, "wb") as f:
                while chunk := z.read(CHUNK):
                    f.write(chunk)
                    n += len(chunk)
                    bar.update(len(chunk))
        except (OSError, pa.ArrowException) as e:
            if not src.exists():
                raise LogZipError(f"{src} not found") from None
            raise LogZipError(f"{src}: damaged zstd data after {n} uncompressed bytes ({e}); "
                              f"`zstd -d {src}` may recover what is before it") from None
    return out


def _scratch(path: Path, tmpdir: str | Path | None) -> Path:
    """A new hidden file to decompress `path` into: beside it, else in the temp directory."""
    dirs = [Path(tmpdir)] if tmpdir else [path.parent, Path(tempfile.gettempdir())]
    for d in dirs:
        try:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".reading", dir=d)
        except OSError:
            continue
        os.close(fd)
        return Path(name)
    raise LogZipError(f"no writable directory to decompress {path} into; pass tmpdir")


@contextlib.contextmanager
def open_log(path: str | Path, tmpdir: str | Path | None = None,
             progress: bool = False) -> Iterator[Path]:
    """A plain log with the bytes of `path`: `path` itself, or for a `.zst` a temporary
    decompressed copy, removed when the context ends."""
    path = Path(path)
    if not is_compressed(path):
        yield path
        return
    if not path.is_file():
        raise LogZipError(f"{path} not found")
    plain = _scratch(path, tmpdir)
    try:
        decompress(path, plain, progress)
        yield plain
    finally:
        plain.unlink(missing_ok=True)


# -- retention ------------------------------------------------------------------------------------
@dataclass
class TidyResult:
    compressed: list[Path] = field(default_factory=list)   # the .zst files written
    deleted: list[Path] = field(default_factory=list)
    kept: list[tuple[Path, str]] = field(default_factory=list)   # logs left alone, and why
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"compressed {len(self.compressed)}, deleted {len(self.deleted)}"
                + (f", {len(self.errors)} errors" if self.errors else ""))


def day_logs(log_dir: Path) -> dict[dt.date, dict[str, Path]]:
    """Per day: its log files by kind ("log", "zst", "beside" entries keyed by name)."""
    out: dict[dt.date, dict[str, Path]] = {}
    if not log_dir.is_dir():
        return out
    for p in log_dir.iterdir():
        m = LOG_NAME.match(p.name) or BESIDE.match(p.name)
        if not m:
            continue
        try:
            day = dt.datetime.strptime(m.group(1), "%Y%m%d").date()
        except ValueError:
            continue
        kind = ("zst" if p.name.endswith(SUFFIX) else "log") if LOG_NAME.match(p.name) else p.name
        out.setdefault(day, {})[kind] = p
    return out


def _ended(path: Path) -> bool:
    from tickerplant.log import check
    return check(path).ended


def tidy(log_dir: str | Path, today: dt.date, keep_days: int | None = None,
         compress_after_days: int | None = 1, compress_unended_after_days: int = 7,
         dry_run: bool = False, progress: bool = False) -> TidyResult:
    """Compress and delete closed days' logs in `log_dir` (see the module's rules). `today` is
    the trading day now (the TP's clock). With `dry_run`, report what would be done."""
    log_dir = Path(log_dir)
    res = TidyResult()
    if keep_days is not None and keep_days < 1:
        raise ValueError("keep_days is at least 1 (today's log is never deleted)")
    if compress_after_days is not None and compress_after_days < 1:
        raise ValueError("compress_after_days is at least 1 (a day's log may still be read "
                         "by subscribers on the day after)")
    days = day_logs(log_dir)
    plain_days = [d for d, files in days.items() if "log" in files]
    newest = max(plain_days) if plain_days else None
    for d in sorted(days):
        files = days[d]
        age = (today - d).days
        plain = files.get("log")
        if d >= today or d == newest:
            for p in ([plain] if plain else []):
                res.kept.append((p, "today's or a later day" if d >= today else
                                 "the newest log (a restarting TP continues it)"))
            continue
        if keep_days is not None and age > keep_days:
            for p in sorted(files.values()):
                if not dry_run:
                    p.unlink(missing_ok=True)
                res.deleted.append(p)
            continue
        if plain is None or compress_after_days is None:
            continue
        if age <= compress_after_days:
            res.kept.append((plain, f"{age} days old; compressed after {compress_after_days}"))
            continue
        try:
            if age <= compress_unended_after_days and not _ended(plain):
                res.kept.append((plain, f"no end-of-day record; compressed after "
                                        f"{compress_unended_after_days} days"))
                continue
            out = plain.with_name(plain.name + SUFFIX)
            res.compressed.append(out if dry_run else compress(plain, progress))
        except (OSError, ValueError) as e:
            res.errors.append(f"{plain}: {e}")
            log.error("log retention: %s: %s", plain, e)
    if not dry_run:   # open_log temporaries a killed reader left behind
        for p in log_dir.iterdir() if log_dir.is_dir() else ():
            if READING.match(p.name):
                with contextlib.suppress(OSError):
                    if time.time() - p.stat().st_mtime > STALE_READING_S:
                        p.unlink()
    return res
