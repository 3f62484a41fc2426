"""The batch codec: one table's rows as one message, the same bytes on every hop.

A feed encodes, the tickerplant validates (never re-encodes), logs and publishes, and every
subscriber decodes zero-copy into Arrow. Layout, little-endian, every section 8-byte aligned:

    header   4s magic "TSB1" | u8 version | u8 ncols | u16 len(table) | u32 nrows | u32 feed | u64 fseq
    table    utf-8 name, padded to 8
    lengths  ncols x u64: byte length of each column section
    columns  one section per schema column, padded to 8:
               fixed width  nrows x item
               symbol       u32 ndict | u32 0 | (ndict+1) x i32 offsets | dict utf-8 (padded to 4) | nrows x i32 codes
               string       (nrows+1) x i32 offsets | utf-8

`feed`/`fseq` name the sending feed and its message number (0 = none) so the tickerplant can
drop a resent message it already logged. Validation is O(columns) Python calls whatever the
row count: the per-row checks (offsets, codes, utf-8) are single numpy/C calls.

For replay, `headers_many` and `Layouts` read the headers and column layout of many messages
lying in one buffer (a mapped log) with one numpy call per field, and `Spans`/`SymbolSpans`
copy their columns straight into a destination; messages they do not handle are left for
`peek`/`columns`, one at a time.
"""
from __future__ import annotations

import operator
import struct
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.registry import Registry, Schema

MAGIC = b"TSB1"
VERSION = 1
HEADER = struct.Struct("<4sBBHIIQ")
MAX_ROWS = 2**31 - 1
_U32 = struct.Struct("<I")
_SYMHEAD = struct.Struct("<II")


class CodecError(ValueError):
    """A message is malformed; the text says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class Header:
    table: str
    nrows: int
    feed: int
    fseq: int


def _pad(n: int, to: int = 8) -> int:
    return -n % to


def _fixed(values: Any, dtype: np.dtype, is_time: bool) -> np.ndarray:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        if values.null_count:
            values = pc.fill_null(values, float("nan") if dtype.kind == "f" else 0)
        if is_time and pa.types.is_timestamp(values.type):
            values = values.cast(pa.timestamp("ns")).cast(pa.int64())
        values = values.to_numpy(zero_copy_only=False)
    arr = np.asarray(values)
    if is_time and arr.dtype.kind == "M":
        arr = arr.astype("datetime64[ns]").view("<i8")
    if arr.dtype.kind in "OUS":
        raise CodecError(f"expected numbers, got {arr.dtype} values")
    return np.ascontiguousarray(arr, dtype=dtype)


def _strings(values: Any) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.DictionaryArray):
        values = values.dictionary_decode()
    if not isinstance(values, pa.Array):
        values = pa.array(np.asarray(values, dtype=object) if isinstance(values, np.ndarray) else values,
                          type=pa.string())
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    if values.null_count:
        values = pc.fill_null(values, "")
    return values


def _string_parts(arr: pa.Array) -> tuple[bytes, bytes]:
    """(i32 offsets starting at 0, utf-8 data) of a string array, copying only if sliced."""
    offsets = np.frombuffer(arr.buffers()[1], dtype="<i4")[arr.offset: arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = b"" if data is None else memoryview(data)[lo:hi]
    return (offsets - lo).tobytes() if lo else offsets.tobytes(), bytes(data)


SMALL_ROWS = 32  # up to this many rows, a numpy str symbol column is encoded in plain Python


def encode(schema: Schema, data: Mapping[str, Any] | pa.RecordBatch | pa.Table,
           feed: int = 0, fseq: int = 0) -> bytes:
    """Rows of `schema`'s table as one message. `data` maps each column name to array-likes
    (numpy, list, Arrow) of equal length; an Arrow batch/table works too. Numpy columns already
    of the wire type are copied as they are, and a symbol column of up to SMALL_ROWS numpy
    strings is dictionary-encoded without Arrow (the same bytes, a few microseconds instead of
    tens: single-row messages)."""
    if isinstance(data, (pa.RecordBatch, pa.Table)):
        data = {n: data.column(n) for n in data.schema.names}
    missing = [c.name for c in schema.columns if c.name not in data]
    if missing:
        raise CodecError(f"table {schema.name!r}: missing columns {missing}")
    if len(data) != len(schema.columns):
        extra = set(data) - set(schema.names)
        raise CodecError(f"table {schema.name!r}: unknown columns {sorted(extra)}; "
                         f"columns are {schema.names}")
    nrows = None
    sections: list[bytes] = []
    for name, typ, item in schema.plan:
        v = data[name]
        if item:
            dtype = _DTYPES[typ]
            if type(v) is np.ndarray and v.dtype == dtype and v.ndim == 1:
                arr = v
            else:
                arr = _fixed(v, dtype, typ == "timestamp")
                if arr.ndim != 1:
                    raise CodecError(f"column {name!r}: expected 1-d values")
            n = len(arr)
            sec = arr.tobytes()
        elif typ == "symbol":
            got = _small_symbols(v) or _numpy_symbols(v)
            if got is None:
                arr = _strings(v)
                enc = arr.dictionary_encode()
                off, dat = _string_parts(enc.dictionary)
                codes = np.asarray(enc.indices, dtype="<i4").tobytes()
                n = len(arr)
                sec = b"".join([_SYMHEAD.pack(len(enc.dictionary), 0), off, dat,
                                b"\0" * _pad(len(dat), 4), codes])
            else:
                sec, n = got
        else:
            arr = _strings(v)
            off, dat = _string_parts(arr)
            n = len(arr)
            sec = off + dat
        if nrows is None:
            nrows = n
        elif n != nrows:
            raise CodecError(f"table {schema.name!r}: column {name!r} has {n} rows, "
                             f"expected {nrows}")
        sections.append(sec)
    if nrows > MAX_ROWS:
        raise CodecError(f"{nrows} rows in one message; split it (max {MAX_ROWS})")
    tname = schema.name.encode()
    parts = [HEADER.pack(MAGIC, VERSION, len(schema.columns), len(tname), nrows, feed, fseq),
             tname, _ZEROS[:_pad(len(tname))], _lengths(len(sections)).pack(*map(len, sections))]
    for sec in sections:
        parts.append(sec)
        parts.append(_ZEROS[:_pad(len(sec))])
    return b"".join(parts)


_ZEROS = bytes(8)


def _numpy_symbols(v) -> tuple[bytes, int] | None:
    """The symbol section of a numpy str array without a Python string per row: Arrow hashes
    the rows' fixed-width UCS-4 bytes (numpy pads with NULs, so equal strings have equal bytes)
    and only the distinct words become strings. The same bytes as the Arrow path (dictionary
    in order of first appearance). None: take the Arrow path."""
    if type(v) is not np.ndarray or v.dtype.kind != "U" or v.ndim != 1 or not v.dtype.itemsize:
        return None
    n, w = len(v), v.dtype.itemsize
    raw = pa.Array.from_buffers(pa.binary(w), n, [None, pa.py_buffer(np.ascontiguousarray(v))])
    enc = raw.dictionary_encode()
    d = enc.dictionary
    try:
        words = [x.encode() for x in np.frombuffer(d.buffers()[1], v.dtype, len(d), d.offset * w).tolist()]
    except UnicodeEncodeError:     # e.g. a lone surrogate: the Arrow path says what is wrong
        return None
    data = b"".join(words)
    offsets = np.zeros(len(words) + 1, "<i4")
    np.cumsum(np.fromiter(map(len, words), np.int64, len(words)), out=offsets[1:])
    codes = np.asarray(enc.indices, dtype="<i4")
    return b"".join([_SYMHEAD.pack(len(words), 0), offsets.tobytes(), data,
                     _ZEROS[:_pad(len(data), 4)], codes.tobytes()]), n


def encode_row(schema: Schema, cols: Mapping[str, Any], feed: int = 0, fseq: int = 0) -> bytes | None:
    """`encode` of a single row, in one struct call, for tables of fixed-width columns and one
    symbol column (trade, quote, ...): the same bytes, a fraction of the work (a paced feed
    pays it on every message, with cold caches). `cols` must hold 1-element numpy arrays of the
    wire types, the symbol as a numpy str array; None means "use encode"."""
    enc = _row_encoder(schema)
    if enc is None:
        return None
    sym = cols["sym"]
    if type(sym) is not np.ndarray or sym.dtype.kind != "U" or sym.shape != (1,):
        return None
    try:
        word = sym[0].encode()
    except UnicodeEncodeError:
        return None
    st = enc.by_len.get(len(word))
    if st is None:
        st = enc.compile(len(word))
    try:
        return st.pack(MAGIC, VERSION, enc.ncols, enc.tlen, 1, feed, fseq, enc.name, *st.lengths,
                       cols["time"][0], 1, st.wlen, word, *[cols[c][0] for c in enc.fixed])
    except (struct.error, IndexError, TypeError):
        return None


_STRUCT_CODES = {"timestamp": "q", "float64": "d", "float32": "f", "int64": "q", "int32": "i",
                 "int16": "h", "int8": "b"}


class _RowEncoder:
    """The struct of a one-row message of one schema, per byte length of its symbol: header,
    name, section lengths, `time`, the symbol section (1 entry: the word, code 0), the other
    columns, every section padded to 8; zeros are pad bytes, so only values are passed."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.ncols = len(schema.plan)
        name = schema.name.encode()
        self.tlen = len(name)
        self.name = name + bytes(_pad(len(name)))
        rest = schema.plan[2:]
        self.fixed = [c for c, _, _ in rest]
        self.items = [item for _, _, item in rest]
        self.codes = "".join(_STRUCT_CODES[t] + "x" * _pad(item) for _, t, item in rest)
        self.by_len: dict[int, _RowStruct] = {}

    def compile(self, wlen: int) -> "_RowStruct":
        sym_len = 4 + 4 + 8 + wlen + _pad(wlen, 4) + 4   # ndict, 0, offsets 0 and wlen, word, code
        sym = f"I4x4xi{wlen}s{_pad(wlen, 4) + 4 + _pad(sym_len)}x"
        st = _RowStruct(f"<4sBBHIIQ{len(self.name)}s{self.ncols}Qq{sym}{self.codes}",
                        (8, sym_len, *self.items), wlen)
        if len(self.by_len) > 256:
            self.by_len.clear()
        self.by_len[wlen] = st
        return st


class _RowStruct(struct.Struct):
    def __init__(self, fmt: str, lengths: tuple, wlen: int):
        super().__init__(fmt)
        self.lengths, self.wlen = lengths, wlen


_ROW: dict[int, tuple[Schema, _RowEncoder | None]] = {}


def _row_encoder(schema: Schema) -> _RowEncoder | None:
    got = _ROW.get(id(schema))
    if got is None or got[0] is not schema:     # keyed by id; the entry keeps the schema alive
        got = _ROW[id(schema)] = (schema, _RowEncoder(schema) if _fast_check(schema) is not None else None)
    return got[1]


def _small_symbols(v) -> tuple[bytes, int] | None:
    """The symbol section of a short numpy str array, in plain Python: the same bytes as the
    Arrow path (dictionary in order of first appearance). None: take the Arrow path."""
    if type(v) is not np.ndarray or v.dtype.kind != "U" or v.ndim != 1 or len(v) > SMALL_ROWS:
        return None
    index: dict[str, int] = {}
    codes = [index.setdefault(x, len(index)) for x in v.tolist()]
    try:
        words = [w.encode() for w in index]
    except UnicodeEncodeError:     # e.g. a lone surrogate: the Arrow path says what is wrong
        return None
    data = b"".join(words)
    offsets = [0]
    for w in words:
        offsets.append(offsets[-1] + len(w))
    n, k = len(codes), len(words)
    return b"".join([_SYMHEAD.pack(k, 0), struct.pack(f"<{k + 1}i", *offsets), data,
                     _ZEROS[:_pad(len(data), 4)], struct.pack(f"<{n}i", *codes)]), n


def warm_up() -> None:
    """Pay Arrow's one-time compute set-up now (its first dictionary_encode takes ~0.3 s here),
    not on a process's first message: feeds and subscribers call this when they start."""
    global _warm
    if not _warm:
        pc.dictionary_encode(pa.array(["a", "b", "a"]))
        _warm = True


_warm = False


def _unpack(buf) -> tuple:
    """The header's fields, after checking size, magic and version."""
    if len(buf) < HEADER.size:
        raise CodecError(f"message of {len(buf)} bytes is shorter than the {HEADER.size}-byte header")
    fields = HEADER.unpack_from(buf)
    if fields[0] != MAGIC:
        raise CodecError(f"bad magic {bytes(fields[0])!r}: not a tickstack batch (expected {MAGIC!r})")
    if fields[1] != VERSION:
        raise CodecError(f"batch version {fields[1]} not supported (this build reads {VERSION})")
    return fields


def peek(buf: bytes | memoryview) -> Header:
    """The header alone (cheap: for messages already validated, such as log records)."""
    _, _, _, tlen, nrows, feed, fseq = _unpack(buf)
    try:
        table = bytes(buf[HEADER.size: HEADER.size + tlen]).decode()
    except UnicodeDecodeError:
        raise CodecError("table name is not utf-8") from None
    return Header(table, nrows, feed, fseq)


def _layout(buf, registry: Registry) -> tuple[Header, Schema, list[tuple[int, int]]]:
    """Header, schema and (start, length) of each column section; checks sizes only."""
    n = len(buf)
    _, _, ncols, tlen, nrows, feed, fseq = _unpack(buf)
    pos = HEADER.size
    name = bytes(buf[pos: pos + tlen])
    schema = registry.get_bytes(name)
    if schema is None:
        raise CodecError(f"unknown table {name[:64]!r}; known tables: {registry.tables}")
    if ncols != len(schema.columns):
        raise CodecError(f"table {schema.name!r} has {len(schema.columns)} columns, message says {ncols}")
    pos += tlen + _pad(tlen)
    if pos + 8 * ncols > n:
        raise CodecError(f"message truncated in its column lengths ({n} bytes)")
    lengths = _lengths(ncols).unpack_from(buf, pos)
    pos += 8 * ncols
    spans = []
    for ln in lengths:
        spans.append((pos, ln))
        pos += ln + _pad(ln)
        if pos > n:
            raise CodecError(f"message truncated: columns need {pos} bytes, got {n}")
    if pos != n:
        raise CodecError(f"message has {n - pos} trailing bytes after its columns")
    return Header(schema.name, nrows, feed, fseq), schema, spans


_LENGTHS: dict[int, struct.Struct] = {}
_PAIR = struct.Struct("<ii")


def _lengths(ncols: int) -> struct.Struct:
    s = _LENGTHS.get(ncols)
    if s is None:
        s = _LENGTHS[ncols] = struct.Struct(f"<{ncols}Q")
    return s


def _offsets(buf, start: int, count: int, datalen: int, what: str) -> None:
    """`count` i32 offsets at `start` must run from 0 up to `datalen` without going back.
    Two offsets (one string: the single-row case) are checked without numpy."""
    if count == 2:
        a, b = _PAIR.unpack_from(buf, start)
        if a != 0 or b != datalen:
            raise CodecError(f"{what}: offsets must run from 0 to {datalen}")
        return
    off = np.frombuffer(buf, "<i4", count, start)
    if off[0] != 0 or off[-1] != datalen:
        raise CodecError(f"{what}: offsets must run from 0 to {datalen}")
    if count > 2 and (np.diff(off) < 0).any():
        raise CodecError(f"{what}: offsets go backwards")


def validate(buf: bytes | memoryview, registry: Registry) -> Header:
    """Check a message fully against its table's schema; raise CodecError saying what is wrong."""
    return Header(*check(buf, registry))


def check(buf: bytes | memoryview, registry: Registry) -> tuple[str, int, int, int]:
    """`validate`, returning (table, nrows, feed, fseq): the tickerplant's per-message path.

    Tables of fixed-width columns and one symbol column (trade, quote, ...) take a fast path of
    a dozen Python operations for the whole message, whatever its rows: the section lengths are
    compared at once with the ones `nrows` implies, and a one-sym section is checked without
    numpy. Anything it does not accept outright goes through the full check, which accepts or
    raises exactly as before, so both paths accept the same messages."""
    if len(buf) >= HEADER.size:
        magic, version, ncols, tlen, nrows, feed, fseq = HEADER.unpack_from(buf)
        if magic == MAGIC and version == VERSION:
            schema = registry.get_bytes(bytes(buf[HEADER.size: HEADER.size + tlen]))
            if schema is not None:
                fast = _fast_check(schema)
                if fast is not None and fast.accepts(buf, ncols, tlen, nrows):
                    return schema.name, nrows, feed, fseq
    h = _validate(buf, registry)
    return h.table, h.nrows, h.feed, h.fseq


class _FastCheck:
    """The fast path of `check` for one schema: `time`, `sym`, then fixed-width columns (no
    bool: its values need a look). Says True only for a message `_validate` accepts."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.ncols = len(schema.plan)
        self.lengths = _lengths(self.ncols)
        fixed = [i for i, (_, _, item) in enumerate(schema.plan) if item]
        self.items = [schema.plan[i][2] for i in fixed]
        self.fixed = operator.itemgetter(*fixed)
        self.by_rows: dict[int, tuple] = {}     # nrows -> (fixed lengths, their padded total)

    def expected(self, nrows: int) -> tuple:
        e = self.by_rows.get(nrows)
        if e is None:
            lens = [nrows * it for it in self.items]
            e = (tuple(lens) if len(lens) > 1 else lens[0], sum(n + _pad(n) for n in lens))
            if len(self.by_rows) > 4096:   # batch sizes vary: keep the cache small
                self.by_rows.clear()
            self.by_rows[nrows] = e
        return e

    def accepts(self, buf, ncols: int, tlen: int, nrows: int) -> bool:
        n = len(buf)
        pos = HEADER.size + tlen + (-tlen & 7)
        if ncols != self.ncols or pos + 8 * ncols > n:
            return False
        lengths = self.lengths.unpack_from(buf, pos)
        want, fixed_total = self.expected(nrows)
        ln = lengths[1]
        start = pos + 8 * ncols + 8 * nrows          # time is first: 8 * nrows, already aligned
        if self.fixed(lengths) != want or start + fixed_total - 8 * nrows + ln + (-ln & 7) != n:
            return False
        if ln < 12:
            return False
        ndict, _ = _SYMHEAD.unpack_from(buf, start)
        head_len = 8 + 4 * (ndict + 1)
        if ndict > max(nrows, 1) or head_len + 4 * nrows > ln:
            return False
        datalen = _U32.unpack_from(buf, start + 8 + 4 * ndict)[0]
        if head_len + datalen + (-datalen & 3) + 4 * nrows != ln:
            return False
        end = start + ln
        if ndict == 1:
            if _PAIR.unpack_from(buf, start + 8) != (0, datalen):
                return False
        elif not ndict:
            if datalen:
                return False
        elif ndict < 1024:    # a tuple and a sort beat numpy's call overheads here
            off = (_INTS.get(ndict + 1) or _ints(ndict + 1)).unpack_from(buf, start + 8)
            if off[0] != 0 or list(off) != sorted(off):
                return False
        else:
            off = np.frombuffer(buf, "<i4", ndict + 1, start + 8)
            if off[0] != 0 or (np.diff(off) < 0).any():
                return False
        try:
            words = str(memoryview(buf)[start + head_len: start + head_len + datalen], "utf-8")
        except UnicodeDecodeError:
            return False
        if len(words) != datalen:
            return False    # not ASCII: an offset might split a character; the full check looks
        if nrows == 1:
            return _U32.unpack_from(buf, end - 4)[0] < ndict
        return not nrows or int(np.frombuffer(buf, "<u4", nrows, end - 4 * nrows).max()) < ndict


_FAST: dict[int, tuple[Schema, _FastCheck | None]] = {}
_INTS: dict[int, struct.Struct] = {}


def _ints(count: int) -> struct.Struct:
    s = _INTS.get(count)
    if s is None:
        s = _INTS[count] = struct.Struct(f"<{count}i")
    return s


def _fast_check(schema: Schema) -> _FastCheck | None:
    got = _FAST.get(id(schema))
    if got is None or got[0] is not schema:     # keyed by id; the entry keeps the schema alive
        plan = schema.plan
        ok = (len(plan) >= 2 and plan[0][1] == "timestamp" and plan[1][1] == "symbol"
              and all(item and typ != "bool" for _, typ, item in plan[2:]))
        got = _FAST[id(schema)] = (schema, _FastCheck(schema) if ok else None)
    return got[1]


def _validate(buf, registry: Registry) -> Header:
    """The full check, column by column, for every schema; the error names what is wrong."""
    head, schema, spans = _layout(buf, registry)
    nrows = head.nrows
    for (name, typ, item), (start, ln) in zip(schema.plan, spans):
        if item:
            if ln != nrows * item:
                raise CodecError(f"table {schema.name!r} column {name!r}: {ln} bytes for {nrows} rows of {typ}")
            if typ == "bool" and nrows and np.frombuffer(buf, "u1", nrows, start).max() > 1:
                raise CodecError(f"table {schema.name!r} column {name!r}: bool values must be 0 or 1")
            continue
        what = f"table {schema.name!r} column {name!r}"
        if typ == "symbol":
            if ln < 12:
                raise CodecError(f"{what}: symbol section of {ln} bytes is too short")
            ndict, _ = _SYMHEAD.unpack_from(buf, start)
            if ndict > max(nrows, 1):
                raise CodecError(f"{what}: {ndict} dictionary entries for {nrows} rows")
            head_len = 8 + 4 * (ndict + 1)
            if head_len + 4 * nrows > ln:
                raise CodecError(f"{what}: section of {ln} bytes too short for {ndict} syms, {nrows} rows")
            datalen = _U32.unpack_from(buf, start + 8 + 4 * ndict)[0]
            if head_len + datalen + _pad(datalen, 4) + 4 * nrows != ln:
                raise CodecError(f"{what}: section length {ln} does not match its contents")
            _offsets(buf, start + 8, ndict + 1, datalen, what)
            _utf8(buf, start + head_len, datalen, what, start + 8, ndict + 1)
            if nrows == 1:
                if _U32.unpack_from(buf, start + ln - 4)[0] >= ndict:
                    raise CodecError(f"{what}: symbol code out of range")
            elif nrows and int(np.frombuffer(buf, "<u4", nrows, start + ln - 4 * nrows).max()) >= ndict:
                raise CodecError(f"{what}: symbol codes out of range (dictionary of {ndict})")
        else:  # string
            if ln < 4 * (nrows + 1):
                raise CodecError(f"{what}: string section too short for {nrows} rows")
            datalen = ln - 4 * (nrows + 1)
            _offsets(buf, start, nrows + 1, datalen, what)
            _utf8(buf, start + 4 * (nrows + 1), datalen, what, start, nrows + 1)
    return head


def _utf8(buf, start: int, length: int, what: str, offsets_at: int, count: int) -> None:
    """The text is utf-8 and none of its `count` offsets (at `offsets_at`, already checked to
    rise within the text) cuts a character in two: each string then is utf-8 on its own."""
    try:
        text = str(memoryview(buf)[start: start + length], "utf-8")
    except UnicodeDecodeError as e:
        raise CodecError(f"{what}: text is not utf-8 ({e.reason} at byte {e.start})") from None
    if len(text) == length:          # ASCII: every byte starts a character
        return
    off = np.frombuffer(buf, "<i4", count, offsets_at)
    inner = off[(off > 0) & (off < length)]
    if inner.size and ((np.frombuffer(buf, "u1", length, start)[inner] & 0xC0) == 0x80).any():
        raise CodecError(f"{what}: an offset cuts a utf-8 character in two")


def decode(buf: bytes | memoryview, registry: Registry) -> tuple[Header, pa.RecordBatch]:
    """Zero-copy Arrow view of a message. Assumes it was validated (the TP validates everything
    it logs and publishes); call `validate` first on bytes from anywhere else."""
    head, schema, spans = _layout(buf, registry)
    n = head.nrows
    whole = pa.py_buffer(buf)
    arrays = []
    for col, (start, ln) in zip(schema.columns, spans):
        if col.dtype is not None:
            if col.type == "bool":
                arrays.append(pa.array(np.frombuffer(buf, "u1", n, start).astype(bool)))
            else:
                arrays.append(pa.Array.from_buffers(col.arrow, n, [None, whole.slice(start, ln)]))
        elif col.type == "symbol":
            ndict, _ = _SYMHEAD.unpack_from(buf, start)
            o = start + 8
            datalen = _U32.unpack_from(buf, o + 4 * ndict)[0]
            d = pa.Array.from_buffers(pa.string(), ndict,
                                      [None, whole.slice(o, 4 * (ndict + 1)),
                                       whole.slice(o + 4 * (ndict + 1), datalen)])
            idx = pa.Array.from_buffers(pa.int32(), n, [None, whole.slice(start + ln - 4 * n, 4 * n)])
            arrays.append(pa.DictionaryArray.from_arrays(idx, d, safe=False))
        else:
            arrays.append(pa.Array.from_buffers(pa.string(), n,
                                                [None, whole.slice(start, 4 * (n + 1)),
                                                 whole.slice(start + 4 * (n + 1), ln - 4 * (n + 1))]))
    return head, pa.RecordBatch.from_arrays(arrays, names=schema.names)


def columns(buf: bytes | memoryview, registry: Registry, words: bool = True) -> tuple[Header, Schema, list]:
    """Numpy views of a validated message, without building Arrow objects (the single-row hot
    path): fixed columns as arrays, symbols as (int32 codes, list of dictionary strings),
    strings as Arrow arrays. words=False gives each symbol dictionary as an Arrow string array
    over the message's bytes instead of a list (for merging many messages' dictionaries
    without a Python string per entry)."""
    head, schema, spans = _layout(buf, registry)
    n = head.nrows
    out = []
    whole = None
    for (name, typ, item), (start, ln) in zip(schema.plan, spans):
        if item:
            out.append(np.frombuffer(buf, _DTYPES[typ], n, start))
        elif typ == "symbol":
            ndict = _U32.unpack_from(buf, start)[0]
            o = start + 8
            data = o + 4 * (ndict + 1)
            codes = np.frombuffer(buf, "<i4", n, start + ln - 4 * n)
            if ndict == 1 and words:
                a, b = _PAIR.unpack_from(buf, o)
                out.append((codes, [str(memoryview(buf)[data + a: data + b], "utf-8")]))
                continue
            if whole is None:
                whole = pa.py_buffer(buf)
            datalen = _U32.unpack_from(buf, o + 4 * ndict)[0]
            d = pa.Array.from_buffers(pa.string(), ndict, [None, whole.slice(o, 4 * (ndict + 1)),
                                                           whole.slice(data, datalen)])
            out.append((codes, d.to_pylist() if words else d))
        else:
            if whole is None:
                whole = pa.py_buffer(buf)
            out.append(pa.Array.from_buffers(pa.string(), n, [None, whole.slice(start, 4 * (n + 1)),
                                                              whole.slice(start + 4 * (n + 1), ln - 4 * (n + 1))]))
    return head, schema, out


from schemas.registry import TYPES as _TYPES  # noqa: E402

_DTYPES = {k: v[0] for k, v in _TYPES.items() if v[0] is not None}


# -- many messages at once (log replay) -------------------------------------------------------
# A log holds messages back to back. Replaying them one `columns` call at a time costs Python
# work per message and per column; here every field of a whole group of messages is read with
# one numpy call, and a column's rows stay where they are until they are copied, once, into
# their destination (the RDB's chunks). Messages the vectorised path does not handle (a bad
# header, an unknown table, a layout `_layout` would reject, string columns) are left to the
# caller, which takes them one at a time through `peek`/`columns`, so behaviour matches.

class IrregularMessages(Exception):
    """Some message of a group is not in the layout the vectorised path handles (e.g. a symbol
    dictionary word that is not utf-8); take the group one message at a time instead."""


class Fields:
    """Typed views of one buffer at every byte offset (stride 1), so one fancy index reads a
    field of many messages whatever its alignment."""

    def __init__(self, buf):
        self.u8 = np.frombuffer(buf, np.uint8)
        self.size = len(self.u8)
        self._views: dict[str, np.ndarray] = {}

    def view(self, dtype: str) -> np.ndarray:
        v = self._views.get(dtype)
        if v is None:
            dt = np.dtype(dtype)
            n = max(self.size - dt.itemsize + 1, 0)
            v = self._views[dtype] = np.ndarray((n,), dt, buffer=self.u8, strides=(1,))
        return v

    def read(self, dtype: str, pos: np.ndarray) -> np.ndarray:
        """The `dtype` value at each byte offset of `pos`. Offsets too near the end read the
        last whole value instead: use only values of messages whose sizes were checked."""
        v = self.view(dtype)
        if not len(v):
            return np.zeros(np.shape(pos), v.dtype)
        return v[np.clip(pos, 0, len(v) - 1)]


def headers_many(f: Fields, start: np.ndarray, end: np.ndarray,
                 registry: Registry) -> tuple[np.ndarray, np.ndarray]:
    """(table, nrows) of the messages at byte ranges [start, end) of `f`: table is the index of
    the message's table in `registry.tables`, or -1 where `peek`/`_layout` need a closer look
    (short, bad magic or version, a table name the registry does not hold)."""
    size = end - start
    ok = (size >= HEADER.size) & (f.read("<u4", start) == _MAGIC_U32) & (f.read("u1", start + 4) == VERSION)
    tlen = f.read("<u2", start + 6)
    table = np.full(len(start), -1, np.int64)
    for i, name in enumerate(registry.tables):
        raw = np.frombuffer(name.encode(), np.uint8)
        idx = np.flatnonzero(ok & (tlen == len(raw)) & (size >= HEADER.size + len(raw)))
        if len(idx):
            got = f.u8[start[idx, None] + (HEADER.size + np.arange(len(raw)))]
            table[idx[(got == raw).all(axis=1)]] = i
    return table, f.read("<u4", start + 8).astype(np.int64)


_MAGIC_U32 = int.from_bytes(MAGIC, "little")
STEP = 1 << 16  # rows per gather


class Spans:
    """One column's rows spread over many messages of one buffer: message k holds `counts[k]`
    items of `dtype` at byte offset `starts[k]`. `copy_into` copies a range of the rows straight
    into a destination array: a slice copy per message when messages are large, else one gather
    for all of them (Python work per call, not per row or per message)."""

    GATHER_BELOW = 1024  # mean rows per message under which one gather beats a copy per message

    def __init__(self, f: Fields, dtype, starts: np.ndarray, counts: np.ndarray):
        self.f, self.dtype = f, np.dtype(dtype)
        self.starts, self.counts = starts, counts
        self.bounds = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=self.bounds[1:])

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def _range(self, lo: int, hi: int) -> tuple[int, int]:
        """The messages holding rows [lo, hi)."""
        b = self.bounds
        return int(np.searchsorted(b, lo, "right")) - 1, int(np.searchsorted(b, hi, "left"))

    def copy_into(self, out: np.ndarray, lo: int = 0, hi: int | None = None) -> None:
        hi = len(self) if hi is None else hi
        for x in range(lo, hi, STEP):  # temporaries stay small: cached, and reused by malloc
            y = min(x + STEP, hi)
            a, z = self._range(x, y)
            if (y - x) >= self.GATHER_BELOW * (z - a):
                self._copy_each(out[x - lo: y - lo], x, y, a, z)
            else:
                self._gather(x, y, a, z, out[x - lo: y - lo])

    def _copy_each(self, out, lo, hi, a, z) -> None:
        item = self.dtype.itemsize
        b = self.bounds[a: z + 1]
        first = np.maximum(b[:-1], lo)
        last = np.minimum(b[1:], hi)
        src = self.starts[a:z] + (first - b[:-1]) * item
        ob, u8 = out.view(np.uint8), self.f.u8
        for s, d, m in zip(src.tolist(), ((first - lo) * item).tolist(), ((last - first) * item).tolist()):
            ob[d: d + m] = u8[s: s + m]

    def _gather(self, lo, hi, a, z, out=None) -> np.ndarray:
        """Rows [lo, hi) by one fancy index: element i of message k sits at
        starts[k] + (i - bounds[k]) * item."""
        item = self.dtype.itemsize
        b = self.bounds[a: z + 1]
        st, ct = self.starts[a:z], self.counts[a:z]
        phase = st % item
        if len(phase) and (phase == phase[0]).all():
            p = int(phase[0])
            view = np.frombuffer(self.f.u8, self.dtype, (self.f.size - p) // item, p)
            idx = np.repeat((st - p) // item - b[:-1], ct)
            idx += np.arange(b[0], b[-1])
            idx = idx[lo - b[0]: hi - b[0]]
            return np.take(view, idx, out=out)
        idx = np.repeat(st - b[:-1] * item, ct)  # mixed alignments: byte offsets, stride-1 view
        idx += np.arange(b[0], b[-1]) * item
        got = self.f.view(self.dtype.str)[idx[lo - b[0]: hi - b[0]]]
        if out is not None:
            out[:] = got
        return got

    def array(self) -> np.ndarray:
        out = np.empty(len(self), self.dtype)
        self.copy_into(out)
        return out


class SymbolSpans:
    """A symbol column over many messages: each message's codes (`codes`, into its own
    dictionary), where its dictionary starts among all entries (`base`) and its size (`ndict`),
    and each entry as an index into `keys`, the distinct dictionary words of all the messages
    packed in integers: (n,) uint64 for words up to 7 bytes, else (n, lanes). `words` decodes
    them all; `decode(idx)` some (a receiver that remembers keys decodes each word once).
    `recoded(lut)` (lut: key index -> the receiver's code) gives what to copy."""

    def __init__(self, codes: Spans, base: np.ndarray, ndict: np.ndarray, entries: np.ndarray,
                 keys: np.ndarray):
        self.codes, self.base, self.ndict, self.entries, self.keys = codes, base, ndict, entries, keys
        self.dtype = np.dtype("<i4")
        self._words: list[str] | None = None

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def words(self) -> list[str]:
        if self._words is None:
            self._words = self.decode(range(len(self.keys)))
        return self._words

    def decode(self, idx) -> list[str]:
        """The words of keys `idx`; IrregularMessages if one is not utf-8."""
        rows = self.keys.view(np.uint8).reshape(len(self.keys), -1)
        try:  # the length sits in the last byte
            return [bytes(r[: r[-1]]).decode() for r in (rows[i] for i in idx)]
        except UnicodeDecodeError:
            raise IrregularMessages("a symbol is not utf-8") from None

    def recoded(self, lut: np.ndarray) -> "RecodedSymbols":
        return RecodedSymbols(self, np.asarray(lut, np.int32)[self.entries])


class RecodedSymbols:
    """A SymbolSpans with each dictionary entry mapped to the receiver's code: copy_into writes
    receiver codes. A code outside its message's dictionary (which `validate` rejects) is a
    CodecError."""

    def __init__(self, sym: SymbolSpans, entry_codes: np.ndarray):
        self.sym, self.entry_codes, self.dtype = sym, entry_codes, sym.dtype

    def __len__(self) -> int:
        return len(self.sym)

    def copy_into(self, out: np.ndarray, lo: int = 0, hi: int | None = None) -> None:
        hi = len(self) if hi is None else hi
        for x in range(lo, hi, STEP):
            y = min(x + STEP, hi)
            self._copy(out[x - lo: y - lo], x, y)

    def _copy(self, out: np.ndarray, lo: int, hi: int) -> None:
        c = self.sym.codes
        a, z = c._range(lo, hi)
        b = c.bounds[a: z + 1]
        ndict, base = self.sym.ndict[a:z], self.sym.base[a:z]
        first, last = np.maximum(b[:-1], lo), np.minimum(b[1:], hi)
        if (hi - lo) >= self.GATHER_BELOW * (z - a):
            src = c.starts[a:z] + (first - b[:-1]) * 4
            u8, ec = c.f.u8, self.entry_codes
            try:
                for s, d, m, e, nd in zip(src.tolist(), (first - lo).tolist(), (last - first).tolist(),
                                          base.tolist(), ndict.tolist()):
                    np.take(ec[e: e + nd], np.frombuffer(u8, "<u4", m, s), out=out[d: d + m])
            except IndexError:
                raise CodecError("symbol codes out of range of their message's dictionary") from None
            return
        local = c._gather(lo, hi, a, z)
        counts = last - first
        full = counts > 0
        if full.any() and (np.maximum.reduceat(local, (first - lo)[full]) >= ndict[full]).any():
            raise CodecError("symbol codes out of range of their message's dictionary")
        idx = np.repeat(base, counts)
        idx += local
        np.take(self.entry_codes, idx, out=out, mode="clip")

    GATHER_BELOW = 1024  # mean rows per message under which one gather beats a take per message


class Layouts:
    """Where each column of many messages of one table lies, read with numpy, and which
    messages have the regular layout (what `_layout` checks, plus the section sizes `validate`
    checks). Tables with string columns are never regular here: they go one at a time."""

    def __init__(self, f: Fields, schema: Schema, start: np.ndarray, end: np.ndarray, nrows: np.ndarray):
        self.f, self.schema, self.nrows = f, schema, nrows
        k, nc = len(start), len(schema.columns)
        tl = len(schema.name.encode())
        pos = start + (HEADER.size + tl + _pad(tl))
        size = end - start
        ok = (f.read("u1", start + 5) == nc) & (pos + 8 * nc <= end)
        lengths = f.read("<u8", pos[:, None] + 8 * np.arange(nc)).astype(np.int64)  # >= 2**63: negative
        ok &= ((lengths >= 0) & (lengths <= size[:, None])).all(axis=1)
        padded = lengths + (-lengths % 8)
        self.starts = pos[:, None] + 8 * nc + np.cumsum(padded, axis=1) - padded
        ok &= self.starts[:, -1] + padded[:, -1] == end
        self.lengths = lengths
        self.ndict = np.zeros((k, nc), np.int64)
        for j, (_, typ, item) in enumerate(schema.plan):
            ln, s = lengths[:, j], self.starts[:, j]
            if item:
                ok &= ln == nrows * item
            elif typ == "symbol":
                nd = f.read("<u4", s).astype(np.int64)
                head = 8 + 4 * (nd + 1)
                datalen = f.read("<u4", s + 8 + 4 * nd).astype(np.int64)
                ok &= ((ln >= 12) & (nd <= np.maximum(nrows, 1)) & (head + 4 * nrows <= ln)
                       & (head + datalen + (-datalen % 4) + 4 * nrows == ln))
                self.ndict[:, j] = nd
            else:
                ok[:] = False
        self.regular = ok

    def columns(self, sel: np.ndarray) -> tuple[list, int]:
        """(columns, rows) of the regular messages `sel`, in the form Store.append_columns
        takes: Spans for fixed-width columns, SymbolSpans for symbols."""
        f, n = self.f, self.nrows[sel]
        out = []
        for j, (_, typ, item) in enumerate(self.schema.plan):
            s = self.starts[sel, j]
            if item:
                out.append(Spans(f, _DTYPES[typ], s, n))
            else:
                out.append(self._symbols(s, self.lengths[sel, j], self.ndict[sel, j], n))
        return out, int(n.sum())

    def _symbols(self, s, ln, nd, n) -> SymbolSpans:
        """Message k's section starts at s[k]: u32 ndict, u32 0, (ndict + 1) i32 offsets, words,
        codes. Each dictionary entry becomes a key (its bytes and length packed in integers),
        one Arrow hash pass finds the distinct keys, and only those are decoded in Python."""
        f = self.f
        base = np.zeros(len(nd), np.int64)
        np.cumsum(nd[:-1], out=base[1:])
        codes = Spans(f, "<u4", s + ln - 4 * n, n)
        e = int(base[-1] + nd[-1]) if len(nd) else 0
        if not e:
            return SymbolSpans(codes, base, nd, np.zeros(0, np.int32), np.zeros(0, np.uint64))
        i4 = f.view("<i4")
        if (i4[s[nd > 0] + 8] != 0).any():
            raise IrregularMessages("symbol dictionary offsets do not start at 0")
        at = np.repeat(s + 8 - 4 * base, nd)  # entry j of message k: offsets at s[k] + 8 + 4j
        at += np.arange(0, 4 * e, 4)
        lo = i4[at]
        at += 4
        wlen = i4[at]
        wlen -= lo
        if wlen.min() < 0:
            raise IrregularMessages("symbol dictionary offsets go backwards")
        wstart = np.repeat(s + 12 + 4 * nd, nd)
        wstart += lo
        width = int(wlen.max())
        lanes = width // 8 + 1
        # offsets only grow within a message, and messages follow each other: the last is the
        # furthest word
        if width > 64 or int(wstart[-1]) + 8 * lanes > f.size:
            raise IrregularMessages("symbol words too long, or too near the end of the buffer")
        v = f.view("<u8")
        # lanes of 8 bytes, the bytes past the word masked off, the length in the top byte
        if lanes == 1:
            keys = v[wstart]
            keys &= _MASKS[wlen]
            keys |= _LENGTH_BYTE[wlen]
            enc = pc.dictionary_encode(pa.array(keys), memory_pool=_POOL)
            uniq = enc.dictionary.to_numpy()
        else:
            keys = np.empty((e, lanes), np.uint64)
            for i in range(lanes):
                keys[:, i] = v[wstart + 8 * i] & _MASKS[np.clip(wlen - 8 * i, 0, 8)]
            keys[:, -1] |= _LENGTH_BYTE[wlen]
            fsb = pa.Array.from_buffers(pa.binary(8 * lanes), e, [None, pa.py_buffer(keys)])
            enc = pc.dictionary_encode(fsb, memory_pool=_POOL)
            d = enc.dictionary
            uniq = np.frombuffer(d.buffers()[1], np.uint64, len(d) * lanes,
                                 d.offset * 8 * lanes).reshape(len(d), lanes)
        return SymbolSpans(codes, base, nd, enc.indices.to_numpy(zero_copy_only=False), uniq)


# malloc's pool: Arrow's default (mimalloc) hands freed pages back to the OS between calls
# spaced like a replay's blocks, and faulting them in again costs more than the hashing itself
_POOL = pa.system_memory_pool()
_LENGTH_BYTE = np.arange(65, dtype=np.uint64) << np.uint64(56)  # a key's top byte
_MASKS = np.array([(1 << (8 * b)) - 1 for b in range(9)], np.uint64)
