"""The rows the CLI prints: JSON lines with exact values (property test), and `subscribe` /
`log replay` on an install without pandas, with nanosecond times."""
from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

EPOCH = dt.datetime(1970, 1, 1)
HUGE = 10**38 - 1   # what decimal128(38, 0), DuckDB's HUGEINT in Arrow, holds


def iso_ns(ns: int) -> str:
    """ISO-8601 with nine fractional digits, computed without Arrow."""
    secs, frac = divmod(ns, 10**9)
    return (EPOCH + dt.timedelta(seconds=secs)).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}"


@st.composite
def tables(draw):
    n = draw(st.integers(0, 30))

    def col(values):
        return draw(st.lists(st.one_of(st.none(), values), min_size=n, max_size=n))
    return {
        "i": col(st.integers(-2**63, 2**63 - 1)),
        "h": col(st.integers(-HUGE, HUGE)),
        "f": col(st.floats(allow_nan=True, allow_infinity=True)),
        "t": col(st.integers(-2**63, 2**63 - 1)),
        "s": col(st.text()),
        "d": col(st.decimals(min_value=-10**12, max_value=10**12, places=4, allow_nan=False)),
    }


@given(tables())
def test_json_lines_read_back_exact(cols):
    from ops.query import json_lines
    table = pa.table({
        "i": pa.array(cols["i"], pa.int64()),
        "h": pa.array([None if v is None else Decimal(v) for v in cols["h"]], pa.decimal128(38, 0)),
        "f": pa.array(cols["f"], pa.float64()),
        "t": pa.array(cols["t"], pa.int64()).cast(pa.timestamp("ns")),
        "s": pa.array(cols["s"], pa.string()),
        "d": pa.array(cols["d"], pa.decimal128(17, 4)),
    })
    lines = [line for batch in json_lines(table) for line in batch]
    assert len(lines) == table.num_rows
    for k, line in enumerate(lines):
        got = json.loads(line, parse_float=Decimal)
        assert list(got) == ["i", "h", "f", "t", "s", "d"]
        assert got["i"] == cols["i"][k] and (got["i"] is None or type(got["i"]) is int)
        assert got["h"] == cols["h"][k] and (got["h"] is None or type(got["h"]) is int)
        f = cols["f"][k]
        if f is None or not math.isfinite(f):
            assert got["f"] is None
        else:  # the text reads back as the very same double, sign of zero included
            assert float(got["f"]) == f and math.copysign(1, float(got["f"])) == math.copysign(1, f)
            assert isinstance(got["f"], Decimal), "a float must stay a float (1.0, not 1)"
        assert got["t"] == (None if cols["t"][k] is None else iso_ns(cols["t"][k]))
        assert got["s"] == cols["s"][k]
        assert got["d"] == cols["d"][k]


def test_json_lines_of_an_empty_or_columnless_table():
    from ops.query import json_lines
    assert list(json_lines(pa.table({"x": pa.array([], pa.int64())}))) == []
    assert [json.loads(x) for b in json_lines(pa.table({"x": [1]}).select([])) for x in b] == [{}]


# -- without pandas --------------------------------------------------------------------------------
def test_the_shim_really_hides_pandas(no_pandas):
    """The no-pandas runs below are only a test if pyarrow there cannot use pandas."""
    code = no_pandas + ("import pyarrow as pa\n"
                        "try:\n    pa.array([1], pa.timestamp('ns')).to_pylist()\n"
                        "except ValueError as e:\n    print('no pandas:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "no pandas:" in out and "Install pandas" in out


@pytest.mark.process
def test_subscribe_prints_nanosecond_rows_without_pandas(cli, tmp_path):
    s = cli()
    s.ts("start", "tp")
    csv = tmp_path / "t.csv"
    csv.write_text("time,sym,price,size\n2026-11-20T14:30:00.123456789,NVDA,100.25,7\n"
                   "2026-11-20T14:30:00.123456790,\"A,B\",1.5,8\n")
    s.ts("publish", "trade", str(csv))
    r = s.ts("subscribe", "trade", "--count", "2", no_pandas=True, timeout=60)
    assert r.stdout.splitlines() == ["time,sym,price,size",
                                     "2026-11-20T14:30:00.123456789,NVDA,100.25,7",
                                     '2026-11-20T14:30:00.123456790,"A,B",1.5,8']


def test_log_replay_prints_nanosecond_rows_without_pandas(cli, tmp_path):
    from schemas.codec import encode
    from tickerplant.log import LogWriter, log_path
    s = cli()
    day = dt.date(2026, 11, 20)
    path = log_path(tmp_path, day)
    w = LogWriter(path, day)
    t0 = 1_795_181_400_123_456_789    # 2026-11-20T13:30:00.123456789
    w.append([encode(s.cfg.registry()["trade"], {"time": [t0, t0 + 1], "sym": ["X", "Y"],
                                                   "price": [1.5, 2.0], "size": [1, 2]})])
    w.close()
    r = s.ts("log", "replay", str(path), no_pandas=True, timeout=60)
    assert r.stdout.splitlines() == ["# trade", "seq,time,sym,price,size",
                                     f"1,{iso_ns(t0)},X,1.5,1", f"1,{iso_ns(t0 + 1)},Y,2.0,2"]
