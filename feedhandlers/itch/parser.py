"""Parse a NASDAQ ITCH 5.0 binary FILE into one structured numpy array per message type.

Two steps, both vectorized:

1. Framing. Each message is preceded by its 2-byte big-endian length, so message k+1 starts
   where message k ends: a sequential chain. We find it without a Python step per message:
   every byte position whose bytes look like a frame (0x00, then the length a known type
   has, then that type byte, and the message fits in the buffer) is a *candidate*; each
   candidate points to the candidate where its message ends. The true framing is the chain
   of candidates from the start of the buffer, read exactly through the length fields (a
   candidate inside a payload never lies on it: the chain only visits where a length says
   the next message starts). The chain is enumerated by pointer doubling (log2(n) numpy
   gathers of n int32), a chunk of the buffer at a time to bound memory. A Python step is
   taken only at a bad frame (unknown type, wrong length, truncated tail): one per error,
   plus ~2*log2(n) numpy calls to restart the chain after it.
2. Decoding. A strided view of raw T-sized records (a void dtype) puts one at every byte;
   indexing it with the payload offsets of T's messages copies each record as one block,
   and the copy is then viewed with T's named big-endian fields (spec.DTYPES).

`Parsed.errors` counts bad input by kind; nothing good is dropped: a bad frame whose length
field is readable is skipped by that length and parsing goes on; a truncated tail stops it
and is reported with its offset (`Parsed.consumed` is where it starts, to resume a stream).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from feedhandlers.itch.spec import DTYPES, SIZE_BY_BYTE, timestamps

TRUNCATED, UNKNOWN_TYPE, BAD_LENGTH = "truncated", "unknown_type", "bad_length"
ERROR_KINDS = (TRUNCATED, UNKNOWN_TYPE, BAD_LENGTH)
MAX_PROBLEMS = 1000  # details kept per parse; counts are always complete
CHUNK_BYTES = 1 << 20  # framing works on this many bytes at a time (memory ~ 40 B per message)

# A type byte's message size, -1 for an unknown type so that a zero length never matches.
_SIZE = np.where(SIZE_BY_BYTE > 0, SIZE_BY_BYTE, -1).astype(np.int16)
_TYPE_BYTES = {t: ord(t) for t in DTYPES}
_MIN_SIZE, _MAX_SIZE = int(SIZE_BY_BYTE[SIZE_BY_BYTE > 0].min()), int(SIZE_BY_BYTE.max())


class ItchError(ValueError):
    """The input is not a byte buffer. Bad *content* never raises: it is counted in errors."""


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    offset: int
    text: str


@dataclass
class Parsed:
    """Good messages by type, in file order, plus what was wrong with the rest.

    records[t]  structured array (spec.DTYPES[t]) of every good message of type t
    index[t]    the number (0-based, in file order, good messages only) of each of them
    types       uint8 type byte of every good message, in file order
    offsets     byte offset of every good message's 2-byte frame, in file order
    errors      kind -> count, kinds: truncated, unknown_type, bad_length
    problems    the first MAX_PROBLEMS errors with offsets and a readable explanation
    consumed    bytes up to the end of the last whole frame (a truncated tail starts here)
    """
    records: dict[str, np.ndarray]
    index: dict[str, np.ndarray]
    types: np.ndarray
    offsets: np.ndarray
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    problems: list[Problem] = field(default_factory=list)
    consumed: int = 0

    def __getitem__(self, t: str) -> np.ndarray:
        return self.records[t]

    @property
    def counts(self) -> dict[str, int]:
        return {t: len(r) for t, r in self.records.items()}

    @property
    def n_messages(self) -> int:
        return len(self.types)

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())

    def timestamps(self, t: str) -> np.ndarray:
        """ns since midnight of every type-t message."""
        return timestamps(self.records[t])


def _as_bytes(buf) -> np.ndarray:
    if isinstance(buf, np.ndarray):
        if buf.dtype != np.uint8 or buf.ndim != 1:
            raise ItchError(f"expected a 1-d uint8 array, got {buf.dtype} with shape {buf.shape}")
        return np.ascontiguousarray(buf)
    if isinstance(buf, (bytes, bytearray, memoryview)):
        return np.frombuffer(buf, dtype=np.uint8)
    raise ItchError(f"expected bytes, bytearray, memoryview or a uint8 array, got {type(buf).__name__}")


class _Framer:
    """Walks the length-framed chain of one buffer, collecting good offsets and errors."""

    def __init__(self, a: np.ndarray):
        self.a = a
        self.n = len(a)
        self.good: list[np.ndarray] = []
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.problems: list[Problem] = []
        self.consumed = 0

    def _problem(self, kind: str, offset: int, text: str) -> None:
        self.errors[kind] += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(kind, offset, text))

    def _candidates(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions in [lo, hi) that look like a whole good frame, and their lengths."""
        a, n = self.a, self.n
        top = min(hi, n - 2)
        if top <= lo:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        # Cheap whole-chunk byte tests first (0x00, a length 12..50, a letter), so the exact
        # per-type check runs only on the few positions that pass.
        w = a[lo:top + 2]
        m = w[:-2] == 0
        m &= (w[1:-1] - np.uint8(_MIN_SIZE)) <= np.uint8(_MAX_SIZE - _MIN_SIZE)
        m &= w[2:] >= np.uint8(ord("A"))
        z = np.flatnonzero(m)
        z += lo
        ln = a[z + 1].astype(np.int64)
        ok = (_SIZE[a[z + 2]] == ln) & (z + 2 + ln <= n)
        return z[ok], ln[ok]

    @staticmethod
    def _jumps(c: np.ndarray, ln: np.ndarray, lo: int, hi: int) -> list[np.ndarray]:
        """Pointer-doubling tables: jumps[k][i] is the candidate 2**k frames after i
        (m = len(c) is the absorbing 'chain leaves the candidates' node)."""
        m = len(c)
        # A dense byte -> candidate map beats a binary search for "which candidate starts here".
        where = np.full(hi - lo + 2 + 256, m, dtype=np.int32)
        where[c - lo] = np.arange(m, dtype=np.int32)
        succ = np.empty(m + 1, dtype=np.int32)
        succ[:m] = where[c + 2 + ln - lo]  # a landing at/after hi was never set: it leaves
        succ[m] = m
        jumps = [succ]
        while (1 << len(jumps)) <= m:
            j = jumps[-1]
            jumps.append(j[j])
        return jumps

    @staticmethod
    def _chain(jumps: list[np.ndarray], start: int) -> np.ndarray:
        """Candidate indices on the chain from `start`, in order."""
        m = len(jumps[0]) - 1
        nodes = np.array([start], dtype=np.int32)
        for j in reversed(jumps):
            nx = j[nodes]
            both = np.empty(2 * len(nodes), dtype=np.int32)
            both[0::2] = nodes
            both[1::2] = nx
            # m absorbs, so leaving nodes form a suffix: drop it to keep the work ~ chain length
            nodes = both[: np.count_nonzero(both != m)]
        return nodes

    def _bad_frame(self, p: int) -> int:
        """Account for the one non-good frame at p; return where the next frame starts."""
        a, n = self.a, self.n
        if p + 2 > n:
            self._problem(TRUNCATED, p, f"truncated frame at offset {p}: {n - p} byte(s) left, "
                                        f"a length prefix needs 2")
            return n
        ln = (int(a[p]) << 8) | int(a[p + 1])
        if p + 2 + ln > n:
            self._problem(TRUNCATED, p, f"truncated message at offset {p}: length says {ln} "
                                        f"bytes, only {n - p - 2} left")
            return n
        self.consumed = p + 2 + ln
        if ln == 0:
            self._problem(BAD_LENGTH, p, f"empty message (length 0) at offset {p}")
            return p + 2
        t = int(a[p + 2])
        size = int(_SIZE[t])
        tname = chr(t) if 32 < t < 127 else f"0x{t:02x}"
        if size < 0:
            self._problem(UNKNOWN_TYPE, p, f"unknown message type {tname} at offset {p} "
                                           f"({ln} bytes skipped)")
        elif size != ln:
            self._problem(BAD_LENGTH, p, f"message type {tname} at offset {p} has length {ln}, "
                                         f"the specification says {size} (skipped)")
        else:  # only reachable for a good frame the candidate scan did not cover
            self.good.append(np.array([p], dtype=np.int64))
        return p + 2 + ln

    def run(self) -> np.ndarray:
        p, n = 0, self.n
        while p < n:
            lo, hi = p, min(n, p + CHUNK_BYTES)
            c, ln = self._candidates(lo, hi)
            jumps = self._jumps(c, ln, lo, hi) if len(c) else None
            while p < hi:
                i = int(np.searchsorted(c, p))
                if jumps is not None and i < len(c) and c[i] == p:
                    chain = self._chain(jumps, i)
                    self.good.append(c[chain])
                    last = int(chain[-1])
                    p = int(c[last] + 2 + ln[last])
                    self.consumed = p
                else:
                    p = self._bad_frame(p)
        return np.concatenate(self.good) if self.good else np.empty(0, np.int64)


def frame_offsets(buf) -> tuple[np.ndarray, dict[str, int], list[Problem], int]:
    """(offsets of good frames, error counts, problems, consumed) of an ITCH FILE buffer."""
    f = _Framer(_as_bytes(buf))
    offs = f.run()
    return offs, f.errors, f.problems, f.consumed


def frame_offsets_loop(buf) -> np.ndarray:
    """Slow reference: good frame offsets by a plain Python walk (tests and the benchmark
    use it to check and to justify the vectorized framing)."""
    b = bytes(_as_bytes(buf))
    n, p, out = len(b), 0, []
    sizes = _SIZE.tolist()
    while p + 2 <= n:
        ln = (b[p] << 8) | b[p + 1]
        if p + 2 + ln > n:
            break
        if ln and sizes[b[p + 2]] == ln:
            out.append(p)
        p += 2 + ln
    return np.array(out, dtype=np.int64)


def _records_at(a: np.ndarray, starts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Copy the records of `dtype` that begin at byte positions `starts` of `a`."""
    if len(starts) == 0:
        return np.empty(0, dtype=dtype)
    top = int(starts.max())
    # Every byte starts a (possibly overlapping) raw record in this view, so one fancy index
    # copies whole records; a plain void dtype copies as raw memory (fields would go slowly,
    # field by field), and the result is then re-viewed with the named fields.
    raw = np.dtype((np.void, dtype.itemsize))
    view = np.ndarray(shape=(top + 1,), dtype=raw, buffer=a, offset=0, strides=(1,))
    return view[starts].view(dtype)


def parse(buf: bytes | bytearray | memoryview | np.ndarray) -> Parsed:
    """Parse an ITCH 5.0 FILE buffer (bytes, bytearray, memoryview or 1-d uint8 array)."""
    a = _as_bytes(buf)
    offs, errors, problems, consumed = frame_offsets(a)
    types = a[offs + 2] if len(offs) else np.empty(0, np.uint8)
    records, index = {}, {}
    for t, dt in DTYPES.items():
        idx = np.flatnonzero(types == _TYPE_BYTES[t])
        index[t] = idx
        records[t] = _records_at(a, offs[idx] + 2, dt)
    return Parsed(records, index, types, offs, errors, problems, consumed)


def parse_file(path: str | os.PathLike) -> Parsed:
    """Parse an ITCH 5.0 FILE from disk (memory-mapped: the file is not copied in)."""
    if os.path.getsize(path) == 0:
        return parse(b"")
    return parse(np.memmap(path, dtype=np.uint8, mode="r"))
