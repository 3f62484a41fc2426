"""The block reader and the batched replay give what the one-record-at-a-time code gives: the
same records (offset, seq, payload bytes), stopping at the same place with the same error on
torn tails and damaged records; the same store contents from replay_into; the same checksums
(the log format is unchanged)."""
from __future__ import annotations

import datetime as dt
import zlib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

import schemas.codec as codec
from rdb.store import Store
from schemas.codec import Fields, Spans, columns, encode, peek
from schemas.registry import Registry, load_registry
from tickerplant import log as tlog
from tickerplant.log import FILE_HEADER, FRAME, LogReader, LogWriter, control, is_control, log_path, scan
from tickerplant.replay import replay_into

DAY = dt.date(2026, 11, 20)
REG = load_registry()
# writing only: a table the replaying registry does not know
EXTRA = Registry.from_spec({"extra": {"time": "timestamp", "sym": "symbol", "x": "int64"}})
SYMS = ["A", "MSFT", "BRK.B", "", "\x00", "S\x00", "ÉCU", "1234567", "12345678",
        "LONGER.SYMBOL.15", "OPTION_AAPL_240621C00190000"]
quick = settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                          HealthCheck.too_slow])


def _message(table: str, n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    schema = (EXTRA if table == "extra" else REG)[table]
    pool = [SYMS[i] for i in rng.choice(len(SYMS), rng.integers(1, 4), replace=False)]
    data = {}
    for c in schema.columns:
        if c.type == "timestamp":
            data[c.name] = rng.integers(0, 2**62, n)
        elif c.type == "symbol":
            data[c.name] = [pool[i] for i in rng.integers(0, len(pool), n)]
        elif c.type == "string":
            data[c.name] = [f"id-{x}" for x in rng.integers(0, 10**6, n)]
        elif c.dtype.kind == "f":
            data[c.name] = rng.random(n)
        else:
            data[c.name] = rng.integers(-1000, 1000, n)
    return encode(schema, data)


def _payload(kind: str, n: int, seed: int) -> bytes:
    if kind == "control":  # odd lengths: the records after it are no longer 8-byte aligned
        return control(note="x" * (seed % 13))
    if kind == "garbage":
        return b"TSB1" + bytes([seed % 256]) * (seed % 40)
    if kind == "empty":
        return b""
    return _message(kind, n, seed)


items = st.lists(st.tuples(st.sampled_from(["trade"] * 5 + ["quote"] * 3 + ["order", "control"]),
                           st.sampled_from([1, 2, 3, 7, 20, 64, 150, 0]), st.integers(0, 2**32)),
                 min_size=1, max_size=30)
rare = st.sampled_from(["extra", "garbage"])


def _write(tmp_path, payloads, split=4):
    p = log_path(tmp_path, DAY)
    if p.exists():
        p.unlink()
    w = LogWriter(p, DAY)
    for i in range(0, len(payloads), split):
        w.append(payloads[i: i + split])
    w.close()
    return p


def _damage(p, data, kinds=("none", "none", "torn", "flip", "seq")) -> None:
    """Nothing, a torn tail, a flipped byte, or a record whose seq is wrong (crc recomputed)."""
    raw = bytearray(p.read_bytes())
    how = data.draw(st.sampled_from(kinds))
    if how == "torn":
        del raw[data.draw(st.integers(FILE_HEADER.size, len(raw))):]
    elif how == "flip":
        at = data.draw(st.integers(FILE_HEADER.size, len(raw) - 1))
        raw[at] ^= data.draw(st.integers(1, 255))
    elif how == "seq":
        pos, starts = FILE_HEADER.size, []
        while pos < len(raw):
            starts.append(pos)
            pos += FRAME.size + FRAME.unpack_from(raw, pos)[0]
        at = data.draw(st.sampled_from(starts))
        length, _, seq = FRAME.unpack_from(raw, at)
        payload = bytes(raw[at + FRAME.size: at + FRAME.size + length])
        raw[at: at + FRAME.size] = tlog.frame(seq + data.draw(st.sampled_from([-1, 1, 7])), payload)
    p.write_bytes(bytes(raw))


def _plain(reader, **kw):
    got = [(r.offset, r.seq, bytes(r.payload)) for r in reader.records(**kw)]
    return got, reader.error


@quick
@given(st.lists(st.tuples(st.sampled_from(["trade", "control", "empty"]), st.integers(0, 5),
                          st.integers(0, 2**32)), min_size=1, max_size=30), st.data())
def test_blocks_read_exactly_what_records_reads(tmp_path, spec, data):
    p = _write(tmp_path, [_payload(*it) for it in spec])
    _damage(p, data)
    verify = data.draw(st.booleans())
    plain, error = _plain(LogReader(p), verify=verify)
    # start anywhere a record starts, as the subscriber's cursor does
    k = data.draw(st.integers(0, len(plain)))
    offset = plain[k - 1][0] + FRAME.size + len(plain[k - 1][2]) if k else FILE_HEADER.size
    plain_from, error_from = _plain(LogReader(p), offset=offset, after_seq=k, verify=verify)
    assert plain_from == plain[k:] and error_from == error
    for mapped in (True, False):
        r = LogReader(p, chunk=data.draw(st.integers(1, 600)))
        fast = [(rec.offset, rec.seq, bytes(rec.payload))
                for b in r.blocks(offset, k, verify, mapped=mapped, block=data.draw(st.integers(1, 9)),
                                  block_bytes=data.draw(st.integers(1, 2000)))
                for rec in b.records()]
        assert fast == plain_from, f"mapped={mapped}"
        assert r.error == error_from, f"mapped={mapped}"


def _scan_plain(path, tables=None, first=None, verify=True):
    """What `scan` did before it read blocks: LogReader.records, one record at a time."""
    reader = LogReader(path)
    wanted = set(tables) if tables else None
    for rec in reader.records(verify=verify):
        if first is not None and rec.seq > first:
            break
        if is_control(rec.payload):
            continue
        head = peek(rec.payload)
        if wanted is None or head.table in wanted:
            yield rec.seq, head, rec.payload
    if reader.error:
        tlog.stopped(path, reader.error)


def _replay_plain(store, path, registry, tables=None, first=None, verify=True) -> int:
    """What `replay_into` did before it worked a block at a time."""
    rows = 0
    for _, head, payload in _scan_plain(path, tables, first, verify):
        _, _, cols = columns(payload, registry)
        store.append_columns(head.table, cols, head.nrows)
        rows += head.nrows
    return rows


def _outcome(fn):
    try:
        return fn(), None
    except (ValueError, IndexError) as e:  # CodecError, LogError; what columns() may raise
        return None, (type(e), str(e))


def _values(store) -> dict:
    """Store contents as plain values: sym codes are the store's own numbering, which may be
    assigned in another order when tables interleave; the values are what a user sees."""
    out = {}
    for name, t in store.snapshot().items():
        cols = [c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c for c in t.columns]
        out[name] = pa.table(cols, names=t.column_names)
    return out


@settings(quick, max_examples=300)
@given(items, st.lists(st.tuples(rare, st.integers(0, 5), st.integers(0, 2**32)), max_size=1),
       st.data())
def test_replay_into_fills_the_store_as_record_at_a_time_replay_does(tmp_path, monkeypatch, spec, odd, data):
    for it in odd:  # now and then an unknown table or a garbage message somewhere
        spec.insert(data.draw(st.integers(0, len(spec))), it)
    payloads = [_payload(*it) for it in spec]
    if data.draw(st.booleans()):
        payloads.append(control(eod=DAY.isoformat()))
    p = _write(tmp_path, payloads)
    verify = data.draw(st.booleans())
    # unverified damage inside a payload is garbage either way: unverified logs are cut only
    _damage(p, data, ("none", "none", "torn", "flip", "seq") if verify else ("none", "torn"))
    tables = data.draw(st.one_of(st.none(), st.lists(st.sampled_from(["trade", "quote", "order", "nope"]),
                                                     min_size=1, unique=True)))
    first = data.draw(st.one_of(st.none(), st.none(), st.integers(0, len(payloads) + 1)))
    held = data.draw(st.lists(st.sampled_from(["trade", "quote", "order"]), min_size=1, unique=True))
    chunk = data.draw(st.integers(1, 50))
    # both copy paths (a copy per message, one gather), and gathers split into small steps
    monkeypatch.setattr(codec.Spans, "GATHER_BELOW", data.draw(st.sampled_from([0, 8, 10**9])))
    monkeypatch.setattr(codec.RecodedSymbols, "GATHER_BELOW", data.draw(st.sampled_from([0, 8, 10**9])))
    monkeypatch.setattr(codec, "STEP", data.draw(st.integers(1, 40)))

    want = Store(REG, held, chunk_rows=chunk)
    rows_want, err_want = _outcome(lambda: _replay_plain(want, p, REG, tables, first, verify))
    got = Store(REG, held, chunk_rows=chunk)
    rows_got, err_got = _outcome(lambda: replay_into(got, p, REG, tables, first, verify))
    event(f"ends with {err_want[0].__name__ if err_want else 'no error'}")
    event(f"rows in the store: {'some' if sum(want.counts().values()) else 'none'}")
    assert err_got == err_want
    assert rows_got == rows_want
    assert got.counts() == want.counts()
    assert {n: t.equals(_values(want)[n]) for n, t in _values(got).items()} == {n: True for n in held}


@quick
@given(items, st.data())
def test_scan_yields_what_record_at_a_time_scan_yielded(tmp_path, spec, data):
    p = _write(tmp_path, [_payload(*it) for it in spec])
    _damage(p, data)
    first = data.draw(st.one_of(st.none(), st.integers(0, len(spec) + 1)))
    tables = data.draw(st.one_of(st.none(), st.just(["quote"])))
    want = _outcome(lambda: [(s, h, bytes(x)) for s, h, x in _scan_plain(p, tables, first)])
    got = _outcome(lambda: [(s, h, bytes(x)) for s, h, x in scan(p, tables, first)])
    assert got == want


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_checksums_are_zlibs_crc32_so_the_format_is_unchanged(payload, length, seq):
    assert tlog._crc(payload, length, seq) == zlib.crc32(payload, zlib.crc32(
        length.to_bytes(4, "little") + seq.to_bytes(8, "little")))


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 30)), min_size=1, max_size=20),
       st.sampled_from(["<i8", "<f8", "<u4", "<i2", "i1"]), st.data())
def test_spans_copy_any_row_range_whatever_the_alignment(parts, dtype, data):
    """Rows spread over messages at any byte offset come out in order, whole or in part."""
    dt_ = np.dtype(dtype)
    rng = np.random.default_rng(len(parts))
    buf, starts, counts, want = bytearray(), [], [], []
    for gap, n in parts:
        buf += bytes(gap)
        vals = rng.integers(-100, 100, n).astype(dt_)
        starts.append(len(buf))
        counts.append(n)
        buf += vals.tobytes()
        want.append(vals)
    want = np.concatenate(want)
    spans = Spans(Fields(bytes(buf)), dt_, np.array(starts, np.int64), np.array(counts, np.int64))
    lo = data.draw(st.integers(0, len(want)))
    hi = data.draw(st.integers(lo, len(want)))
    for gather in (0, 10**9):
        spans.GATHER_BELOW = gather
        out = np.zeros(hi - lo, dt_)
        spans.copy_into(out, lo, hi)
        assert out.tobytes() == want[lo:hi].tobytes()


def test_a_symbol_code_outside_its_dictionary_is_a_clear_error(tmp_path):
    """`validate` rejects it, so the TP never logs one; a hand-made log still gets an error
    naming the problem rather than symbols borrowed from another message."""
    good = _message("trade", 20, 1)
    bad = bytearray(good)
    bad[-4 * 20 - 16 * 20 + 4 * 5: -4 * 20 - 16 * 20 + 4 * 6] = (99).to_bytes(4, "little")  # row 5's code
    p = _write(tmp_path, [good, bytes(bad), good])
    with pytest.raises(codec.CodecError, match="symbol codes out of range"):
        replay_into(Store(REG, ["trade"]), p, REG)


def test_the_subscriber_log_reads_stop_where_the_plain_reader_stops(tmp_path):
    """A live file ends mid-record while the TP writes: the chunked reader stops before it
    without an error that ends a gap fill early, exactly as `records` does."""
    payloads = [_message("trade", 50, i) for i in range(30)]
    p = _write(tmp_path, payloads)
    whole = p.read_bytes()
    p.write_bytes(whole[:-7])
    plain, error = _plain(LogReader(p))
    r = LogReader(p, chunk=1000)
    fast = [(x.offset, x.seq, bytes(x.payload)) for x in r.batched_records(mapped=False)]
    torn = fast[-1][0] + FRAME.size + len(fast[-1][2])  # where the last, torn record starts
    assert fast == plain and len(fast) == 29
    assert r.error == error == f"incomplete record at byte {torn}"
