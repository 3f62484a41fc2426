"""The tickerplant log: append-only, one file per day, every record framed.

    file    16-byte header: 8s magic "TSLOG\\0\\1\\0" | u32 date yyyymmdd | u32 0
    record  u32 length | u32 crc32(length, seq, payload) | u64 seq | payload

Sequence numbers run 1, 2, 3, ... within a file, so a reader knows exactly how many records are
valid and where the first bad byte is. Payloads are batch messages (schemas/codec.py, magic
"TSB1") or control records (magic "TSC1" + JSON, e.g. the end-of-day marker that closes a day).
Writes go straight to the OS (no userspace buffer), so a record is readable by other processes
as soon as `append` returns: subscribers fill gaps from the file while the TP runs.

Two readers give the same records and stop at the same place with the same error:
`LogReader.records` (plain: one step per record, reading 8 MB at a time) and
`LogReader.blocks` (up to 65,536 records or 16 MB per step, found by one tight loop over the
file memory-mapped, or read a chunk at a time into fresh buffers with `mapped=False`: a file
another process truncates while it is mapped faults the reader, so long-running readers of a
live log, such as subscribers and the TP's own check, read). Checksums are CRC-32 (zlib's
polynomial and values), computed by zlib-ng when it is installed (~20 GB/s here), else by
zlib (~1.5-3.5 GB/s).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

try:  # the same CRC-32 as zlib.crc32, so the same log format, computed with SIMD
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover - same values, several times slower
    from zlib import crc32

from schemas.codec import Header, peek
from tickerplant.protocol import date_of, log_day, log_path, ymd

__all__ = ["LogReader", "LogWriter", "LogError", "Block", "check", "repair", "scan", "stopped",
           "log_path", "log_day", "control", "parse_control", "is_control", "FILE_HEADER", "FRAME"]

FILE_MAGIC = b"TSLOG\x00\x01\x00"
FILE_HEADER = struct.Struct("<8sII")
FRAME = struct.Struct("<IIQ")
_LENSEQ = struct.Struct("<IQ")
CONTROL = b"TSC1"
MAX_RECORD = 1 << 31
_IOV = 1000  # stay under IOV_MAX (1024) per writev
log = logging.getLogger(__name__)


class LogError(ValueError):
    """A log file is unusable as is; the message says what to run next."""


def control(**fields) -> bytes:
    return CONTROL + json.dumps(fields, separators=(",", ":")).encode()


def parse_control(payload) -> dict:
    return json.loads(bytes(payload[4:]))


def is_control(payload) -> bool:
    return bytes(payload[:4]) == CONTROL


def _crc(payload, length: int, seq: int) -> int:
    return crc32(payload, crc32(_LENSEQ.pack(length, seq)))


def frame(seq: int, payload) -> bytes:
    n = len(payload)
    return FRAME.pack(n, _crc(payload, n, seq), seq)


@dataclass(slots=True)
class Record:
    offset: int
    seq: int
    payload: memoryview


@dataclass(slots=True)
class Block:
    """Consecutive valid records of a log: record i is framed at `buf[starts[i]:]`, its payload
    is `buf[starts[i] + FRAME.size: ends[i]]`, its seq `first_seq + i`, and `buf[0]` is byte
    `base` of the file. `buf` is the file mapped in memory or a fresh chunk of it: payload
    views stay valid as long as they are held."""
    buf: object
    base: int
    starts: np.ndarray  # int64
    ends: np.ndarray    # int64
    first_seq: int

    def __len__(self) -> int:
        return len(self.starts)

    def records(self) -> Iterator[Record]:
        mv, base, seq = memoryview(self.buf), self.base, self.first_seq
        for s, e in zip(self.starts.tolist(), self.ends.tolist()):
            yield Record(base + s, seq, mv[s + FRAME.size: e])
            seq += 1


_SHORT = "short"  # _walk's verdict when the buffer ends inside a record
_LENGTH_CRC: dict[int, int] = {}  # crc32 of a length field, by length: lengths repeat


def _walk(buf, mv, pos: int, end: int, expect: int, verify: bool, base: int,
          limit: int, stop: int) -> tuple[list[int], int, str | None]:
    """Frame offsets of up to `limit` consecutive valid records from `pos` in `buf[:end]`,
    starting none at or past `stop`, the offset after the last of them, and why it stopped:
    None (a limit or a clean end), _SHORT (the buffer ends inside a record), else the error as
    `LogReader.records` words it. The one loop in the log's hot path that runs per record:
    keep it to a few operations."""
    starts: list[int] = []
    add = starts.append
    unpack = FRAME.unpack_from
    head = FRAME.size
    top = expect + limit
    lencrc = _LENGTH_CRC
    while expect < top and pos < stop:
        if pos + head > end:
            return starts, pos, _SHORT if pos < end else None
        length, crc, seq = unpack(buf, pos)
        nxt = pos + head + length
        if nxt > end:
            return starts, pos, _SHORT
        if seq != expect:
            return starts, pos, f"record at byte {base + pos} has seq {seq}, expected {expect}"
        if verify:  # crc(length, seq, payload): seq and payload are adjacent in the frame
            try:
                c = lencrc[length]
            except KeyError:
                if len(lencrc) > 4096:
                    lencrc.clear()
                c = lencrc[length] = crc32(length.to_bytes(4, "little"))
            if crc32(mv[pos + 8: nxt], c) != crc:
                return starts, pos, f"checksum mismatch in record {seq} at byte {base + pos}"
        add(pos)
        pos = nxt
        expect += 1
    return starts, pos, None


@dataclass
class CheckResult:
    path: Path
    date: dt.date | None
    records: int            # valid records from the start
    last_seq: int
    valid_bytes: int        # offset of the first bad byte (= size when the file is clean)
    size: int
    error: str | None = None
    ended: bool = False     # the day's end-of-day marker is the last valid record

    @property
    def ok(self) -> bool:
        return self.error is None


def _read_header(f, path: Path) -> dt.date:
    raw = f.read(FILE_HEADER.size)
    if len(raw) < FILE_HEADER.size:
        raise LogError(f"{path}: {len(raw)} bytes, too short for a log header; not a tickstack log")
    magic, day, _ = FILE_HEADER.unpack(raw)
    if magic != FILE_MAGIC:
        raise LogError(f"{path}: bad magic {magic!r}; not a tickstack log")
    try:
        return date_of(day)
    except ValueError:
        raise LogError(f"{path}: header date {day} is invalid") from None


class LogReader:
    """Reads valid records forward from an offset. Stops, without error, at the end of what is
    complete and valid: a live file may be mid-write; use `check` to judge a closed file."""

    def __init__(self, path: str | Path, chunk: int = 8 << 20):
        self.path = Path(path)
        self.chunk = chunk
        with open(self.path, "rb") as f:
            self.date = _read_header(f, self.path)
        self.error: str | None = None

    def records(self, offset: int = FILE_HEADER.size, after_seq: int = 0,
                verify: bool = True) -> Iterator[Record]:
        """Records from `offset`; `after_seq` is the seq of the record before `offset` (for
        the consecutive-sequence check). Payloads are memoryviews valid as long as you hold them."""
        self.error = None
        expect = after_seq + 1
        with open(self.path, "rb") as f:
            f.seek(offset)
            buf = b""
            pos = 0
            base = offset
            while True:
                avail = len(buf) - pos
                need = FRAME.size if avail < FRAME.size else FRAME.size + FRAME.unpack_from(buf, pos)[0]
                if avail < need:  # the next record is not wholly in the buffer: read more
                    more = f.read(max(self.chunk, need - avail))
                    if not more:
                        if avail:
                            self.error = f"incomplete record at byte {base + pos}"
                        return
                    buf = buf[pos:] + more
                    base += pos
                    pos = 0
                    continue
                length, crc, seq = FRAME.unpack_from(buf, pos)
                view = memoryview(buf)[pos + FRAME.size: pos + FRAME.size + length]
                if seq != expect:
                    self.error = f"record at byte {base + pos} has seq {seq}, expected {expect}"
                    return
                if verify and _crc(view, length, seq) != crc:
                    self.error = f"checksum mismatch in record {seq} at byte {base + pos}"
                    return
                yield Record(base + pos, seq, view)
                pos += FRAME.size + length
                expect += 1

    def end_offset(self, rec: Record) -> int:
        return rec.offset + FRAME.size + len(rec.payload)

    def blocks(self, offset: int = FILE_HEADER.size, after_seq: int = 0, verify: bool = True,
               last_seq: int | None = None, mapped: bool = True, block: int = 1 << 16,
               block_bytes: int = 16 << 20) -> Iterator[Block]:
        """The records `records` gives (stopping at the same place, with the same `error`),
        up to `block` records or about `block_bytes` bytes at a time (so what works on a block
        works in cache), none after `last_seq`. Python work is a few operations per record
        (framing and checksum); whatever reads the payloads can work per block."""
        self.error = None
        expect = after_seq + 1
        with open(self.path, "rb") as f:
            if mapped:
                size = os.fstat(f.fileno()).st_size
                if size <= offset:
                    return
                buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                yield from self._blocks(buf, 0, offset, size, expect, verify, last_seq, block,
                                        block_bytes, None)
                return
            f.seek(offset)
            rest: bytes = b""
            base, need = offset, 0
            while True:
                # a fresh buffer per chunk (never reused: yielded payloads point into it), big
                # enough for the record begun in `rest`, but no bigger than the file allows (a
                # damaged length field may claim up to 4 GB)
                room = os.fstat(f.fileno()).st_size - base
                buf = np.empty(max(len(rest) + self.chunk, min(need, room)), np.uint8)
                buf[: len(rest)] = np.frombuffer(rest, np.uint8)
                got = f.readinto(memoryview(buf)[len(rest):])
                if not got:
                    if rest:
                        self.error = f"incomplete record at byte {base}"
                    return
                size = len(rest) + got
                pos = yield from self._blocks(buf, base, 0, size, expect, verify, last_seq, block,
                                              block_bytes, f)
                if pos is None:
                    return
                consumed, expect, need = pos
                rest = bytes(buf[consumed: size])
                base += consumed

    def _blocks(self, buf, base: int, pos: int, size: int, expect: int, verify: bool,
                last_seq: int | None, block: int, block_bytes: int, more):
        """Walk `buf[pos:size]` block by block. Returns None when done (self.error set if it
        stopped on an error), or (offset, next seq, bytes the record there needs if known)
        when `more` (the file) may hold the rest."""
        mv = memoryview(buf)
        while True:
            limit = block if last_seq is None else min(block, last_seq - expect + 1)
            if limit <= 0:
                return None
            starts, nxt, why = _walk(buf, mv, pos, size, expect, verify, base, limit, pos + block_bytes)
            if starts:
                st = np.array(starts, np.int64)
                ends = np.empty_like(st)
                ends[:-1] = st[1:]
                ends[-1] = nxt
                yield Block(buf, base, st, ends, expect)
                expect += len(starts)
            pos = nxt
            if why is None:
                if pos >= size or (last_seq is not None and expect > last_seq):
                    return None if more is None or pos < size else (pos, expect, 0)
                continue
            if why is _SHORT:
                if more is None:
                    self.error = f"incomplete record at byte {base + pos}"
                    return None
                need = FRAME.size + FRAME.unpack_from(buf, pos)[0] if size - pos >= FRAME.size else 0
                return pos, expect, need
            self.error = why
            return None

    def batched_records(self, offset: int = FILE_HEADER.size, after_seq: int = 0,
                        verify: bool = True, mapped: bool = True) -> Iterator[Record]:
        """`records`, found a block at a time by `blocks`."""
        for b in self.blocks(offset, after_seq, verify, mapped=mapped):
            yield from b.records()


def check(path: str | Path, visit=None) -> CheckResult:
    """How many records are valid, and where the first bad byte is. `visit(record)`, if
    given, sees each valid record (so a caller needing them reads the file once)."""
    path = Path(path)
    size = path.stat().st_size
    try:
        r = LogReader(path)
    except LogError as e:
        return CheckResult(path, None, 0, 0, 0, size, str(e))
    n, last, end, tail = 0, 0, FILE_HEADER.size, None
    # read, not mapped: the TP checks its own log and then may truncate a torn tail
    for b in r.blocks(mapped=False):
        if visit is not None:
            for rec in b.records():
                visit(rec)
        n, last, end = n + len(b), b.first_seq + len(b) - 1, int(b.ends[-1]) + b.base
        tail = memoryview(b.buf)[int(b.starts[-1]) + FRAME.size: int(b.ends[-1])]
    ended = tail is not None and is_control(tail) and "eod" in parse_control(tail)
    err = r.error if end < size else None
    return CheckResult(path, r.date, n, last, end, size, err, ended)


def stopped(path, error: str, strict: bool = True) -> None:
    """A read stopped at a damaged record: LogError saying what to run next, or a warning."""
    why = (f"{path}: stopped at {error}; everything before it was read. "
           f"Run `tickstack log check {path}` / `tickstack log repair {path}`")
    if strict:
        raise LogError(why)
    log.warning(why)


def scan(path: str | Path, tables=None, first: int | None = None, verify: bool = True,
         progress: bool = False, strict: bool = True) -> Iterator[tuple[int, Header, memoryview]]:
    """(seq, header, payload) of each batch record, in log order: only `tables` (None: all),
    only the first `first` records, checksums re-checked with `verify`, a progress bar over
    the file's bytes with `progress`. Work is per record, never per row. A damaged record
    ends the scan: with `strict`, LogError saying what to run (everything before it was
    yielded); otherwise a warning. The file is memory-mapped: payloads point into it."""
    from tqdm import tqdm

    reader = LogReader(path)
    wanted = set(tables) if tables else None
    with tqdm(total=Path(path).stat().st_size, unit="B", unit_scale=True, leave=False,
              desc=f"reading {Path(path).name}", disable=None if progress else True) as bar:
        # the record after the `first` is read too (and so checked), as LogReader.records does
        for b in reader.blocks(verify=verify, last_seq=None if first is None else first + 1):
            bar.update(b.base + int(b.ends[-1]) - bar.n)
            for rec in b.records():
                if first is not None and rec.seq > first:
                    break
                if is_control(rec.payload):
                    continue
                head = peek(rec.payload)
                if wanted is None or head.table in wanted:
                    yield rec.seq, head, rec.payload
    if reader.error:
        stopped(path, reader.error, strict)


def _salvage(data: bytes, start: int) -> Iterator[tuple[int, bytes]]:
    """Valid frames after a corrupt region, found by looking for payload magics (C-speed find)
    and confirming each candidate by its checksum."""
    pos = start
    while pos < len(data):
        hits = [h for h in (data.find(b"TSB1", pos + FRAME.size), data.find(CONTROL, pos + FRAME.size)) if h >= 0]
        if not hits:
            return
        cand = min(hits) - FRAME.size
        length, crc, seq = FRAME.unpack_from(data, cand)
        end = cand + FRAME.size + length
        if end <= len(data) and _crc(data[cand + FRAME.size: end], length, seq) == crc:
            yield seq, data[cand + FRAME.size: end]
            pos = end
        else:
            pos = cand + 1


@dataclass
class RepairResult:
    out: Path
    kept: int
    salvaged: int
    dropped_bytes: int
    gaps: list[tuple[int, int]] = field(default_factory=list)  # original seq ranges lost


def repair(path: str | Path, out: str | Path | None = None) -> RepairResult:
    """Write a clean copy: the valid prefix, then every valid record found after a corrupt
    region, renumbered so the copy's sequence is consecutive again. The original is untouched."""
    path = Path(path)
    res = check(path)
    if res.date is None:
        raise LogError(f"{path}: {res.error}; the header is gone, so the day is unknown: "
                       "nothing to repair from")
    out = Path(out) if out else path.with_name(path.name + ".repaired")
    data = path.read_bytes()
    tmp = out.with_name(out.name + ".tmp")
    salvaged = good = 0
    gaps: list[tuple[int, int]] = []
    with open(tmp, "wb") as f:
        f.write(data[: res.valid_bytes])
        seq = prev_orig = res.last_seq
        for orig, payload in _salvage(data, res.valid_bytes):
            if orig > prev_orig + 1:
                gaps.append((prev_orig + 1, orig - 1))
            prev_orig = orig
            seq += 1
            salvaged += 1
            good += FRAME.size + len(payload)
            f.write(frame(seq, payload))
            f.write(payload)
        dropped = len(data) - res.valid_bytes - good
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return RepairResult(out, res.records, salvaged, dropped, gaps)


class LogWriter:
    """Appends framed records to a day's file. Opening an existing file continues it: a torn
    last record (the TP died mid-write) is cut off and kept aside; corruption with valid records
    after it is refused, since truncating would lose them (run `tickstack log repair`)."""

    def __init__(self, path: str | Path, day: dt.date, fsync: bool = False, visit=None):
        """`visit(record)` sees each valid record of a file being continued."""
        self.path = Path(path)
        self.day = day
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.seq = 0
        self.torn = 0
        self.ended = False  # the file ends with the day's end-of-day record
        if self.path.exists() and self.path.stat().st_size > 0:
            self._resume(visit)
        else:
            with open(self.path, "wb") as f:
                f.write(FILE_HEADER.pack(FILE_MAGIC, ymd(day), 0))
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def _resume(self, visit) -> None:
        res = check(self.path, visit)
        if res.date is None:
            raise LogError(f"{self.path}: {res.error}; move it aside or run `tickstack log repair`")
        if res.date != self.day:
            raise LogError(f"{self.path}: holds {res.date}, expected {self.day}")
        if not res.ok:
            data = self.path.read_bytes()
            if next(_salvage(data, res.valid_bytes), None) is not None:
                raise LogError(f"{self.path}: corrupt at byte {res.valid_bytes} with valid records "
                               f"after it ({res.error}); run `tickstack log repair {self.path}` "
                               "and move the repaired file into place")
            aside = self.path.with_name(f"{self.path.name}.torn-{res.valid_bytes}")
            aside.write_bytes(data[res.valid_bytes:])
            os.truncate(self.path, res.valid_bytes)
            self.torn = res.size - res.valid_bytes
        self.seq = res.last_seq
        self.ended = res.ended

    def append(self, payloads: list) -> int:
        """Frame and write payloads in order; returns the seq of the first."""
        first = self.seq + 1
        parts = []
        seq = self.seq
        for p in payloads:
            seq += 1
            parts.append(frame(seq, p))
            parts.append(p)
        for i in range(0, len(parts), _IOV):
            chunk = parts[i: i + _IOV]
            want = sum(len(c) for c in chunk)
            done = os.writev(self.fd, chunk)
            if done != want:  # partial write (disk full?): finish it or fail loudly
                rest = b"".join(bytes(c) for c in chunk)[done:]
                while rest:
                    rest = rest[os.write(self.fd, rest):]
        self.seq = seq
        if self.fsync:
            os.fsync(self.fd)
        return first

    def end(self) -> None:
        """Write the end-of-day marker and close: the file is complete."""
        self.append([control(eod=self.day.isoformat(), seq=self.seq + 1)])
        self.ended = True
        self.close(sync=True)

    def close(self, sync: bool = True) -> None:
        if self.fd >= 0:
            if sync:
                os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
