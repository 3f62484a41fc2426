"""The optional QuestDB sink: each day's tables also go to QuestDB (`cfg.hdb.questdb.enabled`).

Write path: tables are created over PGWire (`psycopg`) with
    CREATE TABLE IF NOT EXISTS "<t>" (..., tie_n INT) TIMESTAMP(time) PARTITION BY DAY WAL
    DEDUP UPSERT KEYS(time, sym, tie_n)
then rows go through the `questdb` client as ILP over HTTP (`Sender.from_conf(cfg.ilp)`), `sym`
(and every other symbol column) as SYMBOL, `time` as the designated timestamp, in chunks of
`chunk_rows` rows, each chunk one HTTP request committed as one transaction.

The dedup key. (time, sym) alone is wrong for ticks: two trades in the same sym can share a
nanosecond (a sweep printing against several resting orders), and UPSERT on (time, sym) would
keep only the last of them, silently. Adding every value column is wrong too (two identical
prints are two trades). So each row carries `tie_n`, its position among the rows of the same
(sym, time) in the day's sym-then-time stable order (0 for almost every row), and the key is
(time, sym, tie_n): distinct ticks never collide, while re-sending the same day (a retry after
a failure halfway, or re-running EOD) upserts onto the same rows, so the sink is idempotent.
A day is never dropped first: QuestDB partitions by UTC day, which need not match the trading
day (roll at 17:00 New York), so a DROP PARTITION could delete a neighbouring day's rows.

Failures: every table is retried `retries` times with exponential backoff (`backoff_s`, 2x each
attempt) and the outcome is returned as a SinkReport and logged; nothing here raises into the
caller, which writes the Parquet partition first, so QuestDB being down never costs history.

Query path: `questdb_query(pg_conninfo, sql)` runs a read-only statement over PGWire and returns
Arrow. Statements that would write are refused here as a first line of defence; for a hard
guarantee point `pg` at a QuestDB user with read-only permissions.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from hdb.eod import conform, reorder, sort_order
from hdb.sql import QueryError

log = logging.getLogger(__name__)

TIE = "tie_n"
QDB_TYPES = {"symbol": "SYMBOL", "string": "VARCHAR", "float64": "DOUBLE", "float32": "FLOAT",
             "int64": "LONG", "int32": "INT", "int16": "SHORT", "int8": "BYTE", "bool": "BOOLEAN"}
WRITES = re.compile(r"^\s*(insert|update|delete|create|drop|alter|truncate|copy|rename|backup|"
                    r"vacuum|reindex|grant|revoke|snapshot|checkpoint|cancel|set|add|remove|"
                    r"refresh|resume|suspend|compile|lock|unlock)\b", re.I)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ddl(schema, timestamp_type: str = "TIMESTAMP_NS") -> str:
    """The CREATE TABLE statement for a registry table (see the module docstring for the key)."""
    cols = []
    for c in schema.columns:
        typ = timestamp_type if c.type == "timestamp" else QDB_TYPES[c.type]
        cols.append(f"{_q(c.name)} {typ}")
    cols.append(f"{_q(TIE)} INT")
    return (f"CREATE TABLE IF NOT EXISTS {_q(schema.name)} ({', '.join(cols)}) "
            f"TIMESTAMP({_q('time')}) PARTITION BY DAY WAL "
            f"DEDUP UPSERT KEYS({_q('time')}, {_q('sym')}, {_q(TIE)})")


def with_ties(table: pa.Table, schema) -> pa.Table:
    """The day in sym-then-time order with `tie_n`: 0, 1, 2... within each run of equal
    (sym, time). Vectorised: runs start where sym or time changes."""
    table = conform(table, schema)
    order, rank = sort_order(table)
    if order is not None:
        table = reorder(table, order)
    t = np.asarray(table.column("time").cast(pa.int64()))
    n = len(t)
    start = np.ones(n, bool)
    if n > 1:
        start[1:] = (rank[1:] != rank[:-1]) | (t[1:] != t[:-1])
    run_first = np.flatnonzero(start)
    tie = np.arange(n, dtype=np.int32) - run_first[np.cumsum(start) - 1].astype(np.int32)
    return table.append_column(TIE, pa.array(tie, pa.int32()))


def fill_buffer(buf, schema, table: pa.Table) -> None:
    """Serialise rows (with `tie_n`) into an ILP buffer: symbol columns as SYMBOL, `time` as
    the designated timestamp. The same call builds what the sink sends and what tests inspect."""
    syms = [c.name for c in schema.columns if c.type == "symbol"]
    df = table.to_pandas()   # symbols arrive as pandas categoricals: the client's fast path
    buf.dataframe(df, table_name=schema.name, symbols=syms, at="time")


def new_buffer(protocol_version: int = 1):
    """A standalone ILP buffer (protocol 1 is plain text): for tests and inspection."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from questdb.ingress import Buffer
    return Buffer(protocol_version=protocol_version)


@dataclass
class SinkReport:
    rows: dict[str, int] = field(default_factory=dict)      # rows sent per table
    errors: dict[str, str] = field(default_factory=dict)    # table -> last error, after retries
    attempts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def create_table(pg: str, schema, timestamp_type: str) -> None:
    import psycopg
    with psycopg.connect(pg, autocommit=True, connect_timeout=10) as con:
        con.execute(ddl(schema, timestamp_type))


def send_table(ilp: str, schema, table: pa.Table, chunk_rows: int) -> int:
    """ILP over HTTP, one transaction per chunk."""
    from questdb import Sender
    with Sender.from_conf(ilp) as sender:
        for start in range(0, table.num_rows, chunk_rows):
            buf = sender.new_buffer()
            fill_buffer(buf, schema, table.slice(start, chunk_rows))
            sender.flush(buf, transactional=True)
    return table.num_rows


def sink_day(settings, day: dt.date, tables: dict[str, pa.Table], registry,
             sleep=time.sleep) -> SinkReport:
    """Send a day's tables to QuestDB per `settings` (a QuestDBSettings). Never raises for a
    QuestDB failure: retries with backoff, then reports it in the SinkReport (and the log)."""
    report = SinkReport()
    for name, table in tables.items():
        if table.num_rows == 0:
            continue
        schema = registry[name]
        rows = with_ties(table, schema)
        for attempt in range(settings.retries + 1):
            report.attempts[name] = attempt + 1
            try:
                create_table(settings.pg, schema, settings.timestamp_type)
                report.rows[name] = send_table(settings.ilp, schema, rows, settings.chunk_rows)
                report.errors.pop(name, None)
                log.info("questdb: %s %s: %d rows", name, day, rows.num_rows)
                break
            except Exception as e:  # psycopg, questdb client, network: all retried the same
                report.errors[name] = f"{type(e).__name__}: {e}"
                if attempt < settings.retries:
                    wait = settings.backoff_s * 2 ** attempt
                    log.warning("questdb: %s %s attempt %d failed (%s); retrying in %.1fs",
                                name, day, attempt + 1, e, wait)
                    sleep(wait)
        if name in report.errors:
            log.error("questdb: %s %s not sent after %d attempts: %s (the Parquet partition "
                      "is unaffected; re-run the sink for this day when QuestDB is back)",
                      name, day, report.attempts[name], report.errors[name])
    return report


def questdb_query(pg_conninfo: str, sql: str) -> pa.Table:
    """Run one read-only statement on QuestDB over PGWire; the result as Arrow."""
    import psycopg

    if WRITES.match(sql or "") or ";" in sql.strip().rstrip(";"):
        raise QueryError("QuestDB queries are read-only: send one SELECT-like statement "
                         "(SELECT, WITH, SHOW, EXPLAIN, or QuestDB's table-first forms)")
    try:
        with psycopg.connect(pg_conninfo, autocommit=True, connect_timeout=10) as con:
            cur = con.execute(sql)
            if cur.description is None:
                return pa.table({})
            names = [d.name for d in cur.description]
            rows = cur.fetchall()
    except psycopg.OperationalError as e:
        raise QueryError(f"cannot reach QuestDB ({pg_conninfo.split('password')[0].strip()}): "
                         f"{e}; is it running?") from None
    except psycopg.Error as e:
        raise QueryError(f"QuestDB query failed: {e}") from None
    # transpose once; psycopg has already made Python values, Arrow types them per column
    cols = list(zip(*rows)) if rows else [() for _ in names]
    return pa.Table.from_arrays([pa.array(list(c)) for c in cols], names=names)
