"""`tickstack query`: route SQL to the RDB, the HDB, both (one engine over history and today) or
QuestDB, and print or save the answer; and the row formats the CLI prints (query, subscribe,
log replay).

A query to a process that is not running fails at once, naming the command that starts it (a
connect probe of its endpoint before the query is sent); the query's own timeout applies only
once something accepts the connection.

Output needs no pandas: values are turned into text by Arrow, a column at a time.
    json   JSON lines: one object per row. Integers of any width (including DuckDB's HUGEINT,
           which arrives as decimal128(38, 0)) and decimals are exact JSON numbers; floats are
           the shortest text that reads back as the same double (1.0 stays "1.0"), NaN and
           infinities are null; timestamps are ISO-8601 strings with 9 fractional digits ("Z"
           appended when the type has a time zone, the instant shown in UTC; the stack's naive
           times are UTC); dates "YYYY-MM-DD"; nulls null.
    csv lines (subscribe, log replay): the same text, comma-separated, nulls empty, a field
           holding a comma, quote or line break quoted.
"""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Iterator

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:  # hdb.sql loads DuckDB: only the commands that query pay for it
    from hdb.sql import Result

# the config key that limits each source's rows (--source all runs its engine in this process,
# with the HDB's limit, over today's tables fetched from the RDB under the RDB's limit; `log
# replay --sql` runs an in-process RDB)
LIMIT_KEYS = {"rdb": "rdb.max_rows", "hdb": "hdb.max_rows", "all": "hdb.max_rows",
              "replay": "rdb.max_rows"}


class QueryFailed(RuntimeError):
    """The query was refused or failed; the text says why and what to do."""


def run_query(cfg, sql: str, source: str, timeout: float) -> Result:
    """The result of `sql` on `source`; cut results come back with `truncated` set (no
    warning: the caller reports it, see `truncation_note`)."""
    from hdb.server import query
    from hdb.sql import QueryError, Result
    try:
        if source in ("rdb", "hdb"):
            require(cfg, source)
            return query(getattr(cfg, source).query, sql, timeout=timeout, allow_truncated=True,
                         curve=cfg.curve)
        if source == "questdb":
            from hdb.questdb import questdb_query
            return Result(questdb_query(cfg.hdb.questdb.pg, sql))
        return _all(cfg, sql, timeout)
    except (QueryError, QueryFailed) as e:
        raise QueryFailed(str(e)) from None
    except Exception as e:  # noqa: BLE001 - e.g. QuestDB unreachable: say so, don't trace
        raise QueryFailed(f"{source}: {e}") from None


def require(cfg, name: str) -> None:
    """QueryFailed naming the fix unless `name`'s query endpoint accepts connections."""
    from ops.processes import accepts, running
    endpoint = getattr(cfg, name).query
    if accepts(endpoint, timeout=1.0) is not False:
        return
    pid = running(cfg, name)
    if pid:
        raise QueryFailed(f"{name} (pid {pid}) does not accept connections on {endpoint} (yet): "
                          f"it may still be starting; see {cfg.log_dir / (name + '.log')}")
    raise QueryFailed(f"{name} is not running: `tickstack start {name}` "
                      f"(nothing accepts connections on {endpoint})")


def truncation_note(source: str, result: Result) -> str | None:
    """What the CLI says on stderr when the result was cut at the row limit."""
    if not result.truncated:
        return None
    key = LIMIT_KEYS.get(source, "max_rows")
    proc = key.split(".")[0]
    return (f"warning: the result was cut at {result.table.num_rows:,} rows ({key}); filter, "
            f"aggregate or LIMIT the query, or raise {key} in your config"
            + (f" and restart {proc} (`tickstack stop {proc}; tickstack start {proc}`)"
               if source in ("rdb", "hdb") else ""))


def _all(cfg, sql: str, timeout: float) -> Result:
    """History from the Parquet files plus today's tables fetched from the RDB, in one engine,
    so one statement spans both (`trade` = history and today; `trade_hist`, `trade_today`)."""
    from hdb.server import query
    from hdb.sql import Engine
    reg = cfg.registry()
    require(cfg, "rdb")

    def today():
        out = {}
        for t in reg.tables:
            r = query(cfg.rdb.query, f'select * from "{t}"', timeout=timeout, allow_truncated=True,
                      curve=cfg.curve)
            if r.truncated:  # an answer over part of today would be wrong without a word
                raise QueryFailed(
                    f"today's {t} has more than {r.table.num_rows:,} rows (rdb.max_rows), so "
                    f"--source all would leave some out; raise rdb.max_rows in your config and "
                    f"restart rdb, or query --source rdb and --source hdb separately")
            out[t] = r.table
        return out
    eng = Engine(hdb_dir=cfg.hdb_dir, today=today, day=lambda: _today(cfg),
                 timeout_s=timeout, max_rows=cfg.hdb.max_rows, registry=reg)
    try:
        return eng.query(sql, allow_truncated=True)
    finally:  # a DuckDB connection left to interpreter shutdown can abort the process
        eng.close()


def _today(cfg):
    """The TP's trading day (ahead of the clock after a forced end of day), else the clock's."""
    import datetime as dt
    from ops.processes import accepts
    from tickerplant.clock import Clock
    from tickerplant.protocol import control
    try:
        if accepts(cfg.tickerplant.ctl, timeout=0.5) is not False:
            return dt.date.fromisoformat(control(cfg.tickerplant.ctl, "status", timeout=2, curve=cfg.curve)["date"])
    except Exception:  # noqa: BLE001 - no TP: the configured clock decides
        pass
    return Clock(cfg.eod.time, cfg.eod.tz).day()


# -- row text -------------------------------------------------------------------------------------
def _iso(arr: pa.Array) -> pa.Array:
    """Timestamps as ISO-8601 text with nine fractional digits (fewer only for a coarser unit
    whose dates lie beyond what nanoseconds reach); zoned ones in UTC with a "Z"."""
    if arr.type.unit != "ns":
        try:
            arr = arr.cast(pa.timestamp("ns", arr.type.tz))
        except pa.ArrowInvalid:
            pass
    if arr.type.tz is not None:
        # the stored instant is UTC; dropping the zone keeps it as UTC wall time
        return pc.binary_join_element_wise(
            pc.strftime(arr.cast(pa.timestamp(arr.type.unit)), "%Y-%m-%dT%H:%M:%S"), "Z", "")
    return pc.strftime(arr, "%Y-%m-%dT%H:%M:%S")


def _plain(arr: pa.Array) -> pa.Array:
    """The column decoded from a dictionary, if it was one."""
    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def _float_text(arr: pa.Array) -> pa.Array:
    """The shortest text that reads back as the same value, and reads as a float: "1.0", not
    "1" (and "-0.0")."""
    text = arr.cast(pa.string())
    return pc.if_else(pc.match_substring_regex(text, r"^-?[0-9]+$"),
                      pc.binary_join_element_wise(text, ".0", ""), text)


def _json_strings(values: pa.Array) -> pa.Array:
    from json.encoder import encode_basestring
    return pa.array([None if v is None else encode_basestring(v) for v in values.to_pylist()],
                    pa.string())


def _json_default(v):
    import datetime as dt
    import decimal
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


def json_text(arr: pa.Array) -> pa.Array:
    """Each value as JSON text ("null" for nulls), one Arrow call per column where it can."""
    arr = _plain(arr)
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_decimal(t):
        text = arr.cast(pa.string())
    elif pa.types.is_floating(t):
        # NaN and infinities are not JSON: null
        text = pc.if_else(pc.is_finite(arr), _float_text(arr), pa.scalar(None, pa.string()))
    elif pa.types.is_boolean(t):
        text = arr.cast(pa.string())
    elif pa.types.is_timestamp(t):
        text = pc.binary_join_element_wise('"', _iso(arr), '"', "")
    elif pa.types.is_date(t) or pa.types.is_time(t):
        text = pc.binary_join_element_wise('"', arr.cast(pa.string()), '"', "")
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        text = _json_strings(arr)
    else:  # nested, binary, durations: rare in a query's answer; per value is fine
        text = pa.array([json.dumps(v, default=_json_default) for v in _py(arr)], pa.string())
    return text.fill_null("null")


def _py(arr: pa.Array) -> list:
    try:
        return arr.to_pylist()
    except (ValueError, pa.ArrowException):  # e.g. nested ns timestamps without pandas
        return arr.cast(pa.string()).to_pylist()


def json_lines(table: pa.Table | pa.RecordBatch) -> Iterator[list[str]]:
    """One JSON object per row, with exact numbers (see the module docstring): a list of
    lines per batch of the table."""
    from json.encoder import encode_basestring
    batches = table.to_batches() if isinstance(table, pa.Table) else [table]
    for b in batches:
        if not b.num_rows:
            continue
        if not b.num_columns:
            yield ["{}"] * b.num_rows
            continue
        parts: list = []
        for i, (name, col) in enumerate(zip(b.schema.names, b.columns, strict=True)):
            parts += [("{" if i == 0 else ", ") + encode_basestring(name) + ": ", json_text(col)]
        parts.append("}")
        yield pc.binary_join_element_wise(*parts, "").to_pylist()


def csv_text(arr: pa.Array) -> pa.Array:
    """Each value as a CSV field: nulls empty, text holding a comma, quote or line break quoted."""
    arr = _plain(arr)
    t = arr.type
    if pa.types.is_timestamp(t):
        return _iso(arr).fill_null("")
    if pa.types.is_floating(t):
        return _float_text(arr).fill_null("")
    try:
        text = arr.cast(pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        text = pa.array([None if v is None else str(v) for v in _py(arr)], pa.string())
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
            or pa.types.is_boolean(t) or pa.types.is_temporal(t)):
        quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
        text = pc.if_else(pc.match_substring_regex(text, '[",\r\n]'), quoted, text)
    return text.fill_null("")


def csv_lines(batch: pa.RecordBatch) -> list[str]:
    """The rows as comma-separated text (no header), without pandas."""
    if not batch.num_rows or not batch.num_columns:
        return [""] * batch.num_rows
    cols = [csv_text(c) for c in batch.columns]
    if len(cols) == 1:
        return cols[0].to_pylist()
    return pc.binary_join_element_wise(*cols, ",").to_pylist()


def write(table: pa.Table, fmt: str, out: str | None) -> None:
    if fmt == "parquet":
        if not out:
            raise QueryFailed("--format parquet needs --out FILE")
        import pyarrow.parquet as pq
        pq.write_table(table, out, compression="zstd")
        return
    stream = open(out, "wb") if out else sys.stdout.buffer
    try:
        if fmt == "csv":
            import pyarrow.csv as pc_csv
            pc_csv.write_csv(table, stream)
        elif fmt == "json":
            for lines in json_lines(table):
                stream.write(("\n".join(lines) + "\n").encode())
        else:
            import duckdb
            text = str(duckdb.from_arrow(table)) if table.num_rows or table.num_columns else "(no rows)\n"
            stream.write(text.encode())
        stream.flush()
    finally:
        if out:
            stream.close()
