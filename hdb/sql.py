"""Read-only SQL over today's in-memory tables and/or the Parquet history, on DuckDB.

One `Engine` serves one process: the RDB passes `today` (a callable returning its current
Arrow tables), the HDB passes `hdb_dir`, a gateway may pass both.

Views (every one has a `date` column, so the same SQL runs against the RDB and the HDB):
    <table>          HDB only: `<hdb>/<table>/date=*/*.parquet`, hive-partitioned on `date`.
                     RDB only: today's Arrow table (a fresh zero-copy snapshot per query) with
                     `date` = today's trading day.
                     both: history UNION ALL today (history rows of today's date are left out,
                     so a partition written during EOD is not counted twice).
    <table>_hist     both: history alone.        <table>_today   both: today alone.
New partitions (and new tables) are visible to the next query, without a restart.

Locked down: one statement per query, SELECT-like only (SELECT, WITH, FROM-first, VALUES,
TABLE, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN). INSERT/UPDATE/DELETE/CREATE/DROP/COPY/EXPORT/
ATTACH/DETACH/INSTALL/LOAD/SET/RESET/PRAGMA/CALL/transactions are refused. DuckDB itself runs
with `enable_external_access=false`, `allowed_directories=[<hdb>]` and `lock_configuration=true`,
so even a SELECT cannot read a file outside the HDB (read_csv('/etc/passwd') is refused) and
no setting can be changed back. Each query has a time limit (interrupted by a watchdog thread) and a
row limit (the result is streamed and cut at `max_rows`; `Result.truncated` says so). A cut
result also issues a `TruncatedWarning` (shown every time, not once per call site) unless the
caller passes `allow_truncated=True`, saying it reads `Result.truncated` itself. Every
refusal raises `QueryError` saying what is allowed.

kdb-style helpers, as DuckDB macros usable in any query:
    xbar(t, bucket)              time bar start: xbar(time, INTERVAL 1 MINUTE)   (kdb `xbar`)
    vwap(price, size)            aggregate: sum(price*size)/sum(size); use with GROUP BY
    ohlcv(tbl, bucket, day)      table (a price/size table): per sym and bar: open high low
                                 close volume vwap trades
                                 FROM ohlcv('trade', INTERVAL 1 MINUTE, DATE '2024-01-02')
    aj(left, right, day)         table: as-of join (kdb `aj[`sym`time;left;right]`): every left
                                 row with the right row of the same sym and the latest
                                 time <= its time (NULLs if none) for that day.
    aj_trades(day)               table: trades with the prevailing bid/ask/bsize/asize (tables
                                 named by optional trades := 'trade', quotes := 'quote')
    last_by_sym(tbl, day)        table: the last row per sym that day (kdb `select by sym`)
    vwap_by_sym(tbl, day)        table: sym, vwap, volume, trades for that day
`day` may be NULL in the table macros to mean every date. On a history engine, a call of
aj_trades / aj whose arguments are literals (`aj_trades(DATE '2024-01-02')`,
`aj('trade', 'quote', '2024-01-02')`), anywhere in a statement, is run by hdb.asof over the two
partitions, which are already sorted by sym then time (no sort, ~4x faster than DuckDB's ASOF
operator); the statement reads its result in place of the macro. Of several quotes at the
matched nanosecond it takes the last to arrive (kdb's aj); DuckDB's ASOF join takes any one.
Other calls (a NULL or computed day, today's data, a day missing a partition) run the macro. open/close are the prices at the
first/last time in the bar (arg_min/arg_max on time; ties at the same nanosecond are broken
arbitrarily). ASOF joins always use DuckDB's sort-merge operator (asof_loop_join_threshold=0:
DuckDB's ~1-row estimate for a filtered Parquet scan would otherwise pick a nested loop,
~1000x slower on a real day). Plain SQL works too, e.g. the as-of join written out:
    SELECT t.*, q.bid, q.ask FROM trade t ASOF LEFT JOIN quote q
      ON t.sym = q.sym AND t.date = q.date AND t.time >= q.time WHERE t.date = DATE '2024-01-02'
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import duckdb
import pyarrow as pa

from hdb.asof import AsofError, join_day

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
WHAT_IS_ALLOWED = ("this endpoint is read-only: send one SELECT-like statement (SELECT, WITH, "
                   "FROM ..., VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) over the tables")
BATCH_ROWS = 1 << 17

MACROS = [
    "CREATE MACRO xbar(t, bucket) AS time_bucket(bucket, t)",
    "CREATE MACRO vwap(price, size) AS sum(price * size) / sum(size)",
    """CREATE MACRO ohlcv(tbl, bucket, day) AS TABLE
         SELECT date, sym, xbar(time, bucket) AS bar,
                arg_min(price, time) AS open, max(price) AS high, min(price) AS low,
                arg_max(price, time) AS close, sum(size) AS volume,
                vwap(price, size) AS vwap, count(*) AS trades
         FROM query_table(tbl) WHERE day IS NULL OR date = day
         GROUP BY ALL ORDER BY date, sym, bar""",
    """CREATE MACRO aj(lt, rt, day) AS TABLE
         SELECT l.*, r.* EXCLUDE (time, sym, date)
         FROM (FROM query_table(lt) WHERE day IS NULL OR date = day) l
         ASOF LEFT JOIN (FROM query_table(rt) WHERE day IS NULL OR date = day) r
           ON l.sym = r.sym AND l.date = r.date AND l.time >= r.time""",
    # the table names are parameters (with defaults) because a table macro's body is bound
    # when it is created, before any view exists; query_table() defers that to the call
    """CREATE MACRO aj_trades(day, trades := 'trade', quotes := 'quote') AS TABLE
         SELECT l.*, r.bid, r.ask, r.bsize, r.asize
         FROM (FROM query_table(trades) WHERE day IS NULL OR date = day) l
         ASOF LEFT JOIN (FROM query_table(quotes) WHERE day IS NULL OR date = day) r
           ON l.sym = r.sym AND l.date = r.date AND l.time >= r.time""",
    """CREATE MACRO last_by_sym(tbl, day) AS TABLE
         FROM query_table(tbl) WHERE day IS NULL OR date = day
         QUALIFY row_number() OVER (PARTITION BY date, sym ORDER BY time DESC) = 1""",
    """CREATE MACRO vwap_by_sym(tbl, day) AS TABLE
         SELECT date, sym, vwap(price, size) AS vwap, sum(size) AS volume, count(*) AS trades
         FROM query_table(tbl) WHERE day IS NULL OR date = day GROUP BY ALL ORDER BY date, sym""",
]

# registry type name -> DuckDB type, for the empty views of tables with no data yet
DUCK_TYPES = {"timestamp": "TIMESTAMP_NS", "symbol": "VARCHAR", "string": "VARCHAR",
              "float64": "DOUBLE", "float32": "FLOAT", "int64": "BIGINT", "int32": "INTEGER",
              "int16": "SMALLINT", "int8": "TINYINT", "bool": "BOOLEAN"}


_AJ_CALL = re.compile(r"\baj(_trades)?\s*\(", re.IGNORECASE)


def _aj_calls(node) -> list[dict]:
    """Every aj_trades / aj table-function call in a json_serialize_sql tree."""
    out = []
    if isinstance(node, dict):
        fn = node.get("function")
        if (node.get("type") == "TABLE_FUNCTION" and isinstance(fn, dict)
                and fn.get("function_name", "").lower() in ("aj_trades", "aj")
                and not fn.get("schema") and node.get("query_location", -1) < 1 << 62):
            out.append(node)
        for v in node.values():
            out += _aj_calls(v)
    elif isinstance(node, list):
        for v in node:
            out += _aj_calls(v)
    return out


def _bare_call(tree: dict) -> dict | None:
    """The aj call when the statement is just `[SELECT *] FROM aj...(...) [alias]`."""
    st = tree.get("statements") or []
    if len(st) != 1:
        return None
    node = st[0].get("node", {})
    sel = node.get("select_list") or []
    star = len(sel) == 1 and sel[0].get("type") == "STAR" and not any(
        sel[0].get(k) for k in ("exclude_list", "replace_list", "rename_list", "columns", "expr",
                                "relation_name", "qualified_exclude_list"))
    frm = node.get("from_table") or {}
    if (node.get("type") != "SELECT_NODE" or not star or node.get("modifiers")
            or node.get("cte_map", {}).get("map") or any(node.get(k) for k in (
                "where_clause", "group_expressions", "group_sets", "having", "sample", "qualify"))
            or frm.get("sample") or frm.get("column_name_alias") or not _aj_calls(frm)
            or _aj_calls(frm)[0] is not frm):
        return None
    return frm


def _as_duckdb_gives(table: pa.Table) -> pa.Table:
    """A result table typed as DuckDB would return it (symbols as plain strings)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(f.type.value_type))
    return table


def _constant(expr: dict) -> str | None:
    """A string or DATE literal's text; None for anything else (NULL, expressions...)."""
    if expr.get("class") == "CAST" and expr.get("type_expr", {}).get("type_name", "").upper() in (
            "DATE", "VARCHAR"):
        expr = expr.get("child", {})
    if expr.get("class") == "CONSTANT" and expr.get("literal", {}).get("kind") == "STRING":
        return expr["literal"]["text"]
    return None


def _aj_spec(fn: dict) -> tuple[str, str, dt.date, list[str] | None] | None:
    """(left table, right table, day, right columns) of an aj_trades / aj call whose arguments
    are all literals, as the macros define them; None when the call is anything else."""
    pos = [a["expression"] for a in fn["arguments"] if not a.get("name")]
    named = {a["name"].lower(): a["expression"] for a in fn["arguments"] if a.get("name")}
    if fn["function_name"].lower() == "aj_trades":
        if len(pos) != 1 or set(named) - {"trades", "quotes"}:
            return None
        args = [named.get("trades"), named.get("quotes"), pos[0]]
        left = "trade" if args[0] is None else _constant(args[0])
        right = "quote" if args[1] is None else _constant(args[1])
        columns = ["bid", "ask", "bsize", "asize"]
    else:
        if len(pos) != 3 or named:
            return None
        left, right = _constant(pos[0]), _constant(pos[1])
        columns = None
    day = _constant(pos[-1])
    if left is None or right is None or day is None:
        return None
    try:
        return left, right, dt.date.fromisoformat(day), columns
    except ValueError:
        return None


class QueryError(ValueError):
    """A query was refused or failed; the text says why and what is allowed."""


class TruncatedWarning(UserWarning):
    """A query's result was cut at the row limit: the rows returned are not all the rows."""


# every cut result is reported, not only the first one at each call site (Python's default)
warnings.filterwarnings("always", category=TruncatedWarning)


@dataclass
class Result:
    table: pa.Table
    truncated: bool = False
    ms: float = 0.0


def warn_truncated(rows: int, where: str, stacklevel: int = 3) -> None:
    """Issue the TruncatedWarning for a result cut at `rows` rows by `where`'s limit."""
    warnings.warn(TruncatedWarning(
        f"result cut at {rows:,} rows, the row limit of {where}: the rows returned are not all "
        f"the rows. Filter, aggregate or LIMIT the query, or raise the limit (max_rows); pass "
        f"allow_truncated=True when you check Result.truncated yourself"), stacklevel=stacklevel)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def check_sql(sql: str) -> str:
    """The statement if it is one read-only statement; QueryError otherwise."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryError(f"empty query; {WHAT_IS_ALLOWED}")
    try:
        stmts = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(f"SQL does not parse: {e}") from None
    if len(stmts) != 1:
        raise QueryError(f"{len(stmts)} statements sent; {WHAT_IS_ALLOWED}")
    st = stmts[0]
    if st.type not in ALLOWED:
        raise QueryError(f"{st.type.name} statements are refused; {WHAT_IS_ALLOWED}")
    return sql


class _Cursor:
    """One DuckDB connection (cursor) per thread: temp views and registered Arrow tables are
    per connection, so concurrent queries never see each other's snapshots."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.hist: frozenset[str] | None = None   # tables whose hist views are current
        self.day: dt.date | None = None


class _Watchdog:
    """One thread for every query's time limit (a Timer thread per query costs more than a
    small query): it interrupts a cursor whose deadline passes and sets its `fired` event."""

    def __init__(self):
        self._cond = threading.Condition()
        self._live: dict[int, tuple[float, duckdb.DuckDBPyConnection, threading.Event]] = {}
        self._next = 0
        self._thread: threading.Thread | None = None

    def watch(self, seconds: float, con, fired: threading.Event) -> int:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sql-watchdog", daemon=True)
                self._thread.start()
            self._next += 1
            self._live[self._next] = (time.monotonic() + seconds, con, fired)
            self._cond.notify()
            return self._next

    def release(self, token: int) -> None:
        with self._cond:
            self._live.pop(token, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token in [t for t, v in self._live.items() if v[0] <= now]:
                    _, con, fired = self._live.pop(token)
                    fired.set()
                    con.interrupt()
                    del con   # hold no connection while idle: they must close cleanly
                wait = min((d for d, _, _ in self._live.values()), default=now + 3600) - now
                self._cond.wait(max(wait, 0.001))


class Engine:
    """Read-only DuckDB over history (`hdb_dir`), today (`today()`), or both. Thread-safe:
    each calling thread gets its own cursor. `day()` names today's trading day (default: the
    UTC date) for the `date` column of today's rows."""

    def __init__(self, hdb_dir: Path | None = None,
                 today: Callable[[], dict[str, pa.Table]] | None = None,
                 timeout_s: float = 60, max_rows: int = 1_000_000, registry=None,
                 day: Callable[[], dt.date] | None = None):
        if hdb_dir is None and today is None:
            raise ValueError("Engine needs hdb_dir (history), today (in-memory tables) or both")
        if registry is None:
            from schemas.registry import load_registry
            registry = load_registry()
        self.registry = registry
        self.hdb_dir = Path(hdb_dir).expanduser().resolve() if hdb_dir is not None else None
        self.today = today
        self.day = day or (lambda: dt.datetime.now(dt.timezone.utc).date())
        self.timeout_s = float(timeout_s)
        self.max_rows = int(max_rows)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._cursors: list[_Cursor] = []
        self._known: frozenset[str] = frozenset()
        self._watchdog = _Watchdog()
        self._con = self._connect()

    # -- setup -------------------------------------------------------------------------------
    def _connect(self) -> duckdb.DuckDBPyConnection:
        # asof_loop_join_threshold: DuckDB estimates ~1 row for a hive-filtered Parquet scan
        # and would then run an ASOF join as a nested loop (default: left side <= 64 rows):
        # 50s instead of 50ms for a day of trades against quotes. 0 = always the sort-merge
        # ASOF operator. Set at connect so every cursor inherits it.
        con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                                 "autoload_known_extensions": False,
                                                 "asof_loop_join_threshold": 0})
        for m in MACROS:
            con.execute(m)
        # allowed_directories can only be set once the database runs, and must be set before
        # external access goes off; the lock then makes all three permanent for this database.
        allowed = [str(self.hdb_dir) + "/"] if self.hdb_dir is not None else []
        con.execute("SET allowed_directories = $1", [allowed])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con

    def _cursor(self) -> _Cursor:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            with self._lock:
                cur = _Cursor(self._con.cursor())
                self._cursors.append(cur)
            self._local.cur = cur
        return cur

    def _tables(self) -> list[str]:
        return list(self.registry.tables)

    def _present(self) -> frozenset[str]:
        """Tables with at least one partition file: a view over a glob with no match fails, so
        those get an empty, typed view until their first day lands."""
        if self.hdb_dir is None or not self.hdb_dir.is_dir():
            return frozenset()
        out = set()
        with os.scandir(self.hdb_dir) as it:
            for d in it:
                name = d.name
                if not (name.isidentifier() and not name.startswith("_") and d.is_dir()):
                    continue
                # a table with data keeps it (partitions are replaced, never removed), so only
                # tables still waiting for their first day are globbed on each query
                if name in self._known or next(Path(d.path).glob("date=*/*.parquet"), None):
                    out.add(name)
        self._known = frozenset(out)
        return self._known

    def _empty_select(self, table: str) -> str:
        cols = [f"CAST(NULL AS {DUCK_TYPES[c.type]}) AS {_ident(c.name)}"
                for c in self.registry[table].columns]
        return f"SELECT {', '.join(cols)}, CAST(NULL AS DATE) AS date WHERE false"

    def _hist_view(self, cur: _Cursor, table: str, present: frozenset[str], name: str) -> None:
        if table in present:
            glob = _quote(f"{self.hdb_dir}/{table}/date=*/*.parquet")
            body = (f"SELECT * FROM read_parquet({glob}, hive_partitioning = true, "
                    f"hive_types = {{'date': DATE}})")
        else:
            body = self._empty_select(table)
        cur.con.execute(f"CREATE OR REPLACE TEMP VIEW {_ident(name)} AS {body}")

    def _refresh(self, cur: _Cursor) -> None:
        """Bring this cursor's views up to date: new tables on disk, today's snapshot, the day."""
        both = self.hdb_dir is not None and self.today is not None
        if self.hdb_dir is not None:
            present = self._present()
            if present != cur.hist:
                names = set(self._tables()) | present
                for t in sorted(names):
                    if t not in self.registry and t not in present:
                        continue
                    if t not in self.registry and self.today is not None:
                        continue  # history-only table unknown to the schema: history view only
                    self._hist_view(cur, t, present, f"{t}_hist" if both else t)
                cur.hist = present
        if self.today is None:
            return
        snap = self.today() or {}
        day = self.day()
        for t in self._tables():
            tbl = snap.get(t)
            if tbl is None:
                tbl = self.registry[t].arrow.empty_table()
            elif "date" in tbl.column_names:   # e.g. a snapshot fetched from an RDB's views
                tbl = tbl.drop_columns(["date"])
            cur.con.register(f"_rdb_{t}", tbl)
        if day != cur.day:
            d = _quote(day.isoformat())
            for t in self._tables():
                today_name = f"{t}_today" if both else t
                cur.con.execute(f"CREATE OR REPLACE TEMP VIEW {_ident(today_name)} AS "
                                f"SELECT *, DATE {d} AS date FROM {_ident('_rdb_' + t)}")
                if both:
                    cur.con.execute(
                        f"CREATE OR REPLACE TEMP VIEW {_ident(t)} AS "
                        f"SELECT * FROM {_ident(t + '_hist')} WHERE date <> DATE {d} "
                        f"UNION ALL BY NAME SELECT * FROM {_ident(t + '_today')}")
            cur.day = day

    # -- queries -----------------------------------------------------------------------------
    def query(self, sql: str, allow_truncated: bool = False) -> Result:
        """Run one read-only statement; at most `max_rows` rows, at most `timeout_s` seconds.
        A result cut at `max_rows` has `truncated` set and, unless `allow_truncated`, issues a
        TruncatedWarning."""
        check_sql(sql)
        t0 = time.perf_counter()
        cur = self._cursor()
        try:
            self._refresh(cur)
        except duckdb.Error as e:
            raise QueryError(f"could not open the tables: {e}") from None
        sql, joined, whole = self._asof_fast_path(cur, sql)
        if whole is not None:   # the query is the join itself: no SQL left to run
            truncated = whole.num_rows > self.max_rows
            if truncated:
                whole = whole.slice(0, self.max_rows)
                if not allow_truncated:
                    warn_truncated(self.max_rows, "this engine")
            return Result(whole, truncated, (time.perf_counter() - t0) * 1e3)
        fired = threading.Event()
        token = self._watchdog.watch(self.timeout_s, cur.con, fired)
        batches: list[pa.RecordBatch] = []
        truncated = False
        try:
            rel = cur.con.sql(sql)
            if rel is None:  # not a result-producing statement (cannot pass check_sql, but be sure)
                raise QueryError(f"statement returned no result; {WHAT_IS_ALLOWED}")
            reader = rel.to_arrow_reader(min(BATCH_ROWS, self.max_rows + 1))
            schema = reader.schema
            n = 0
            for b in reader:
                if n + b.num_rows > self.max_rows:
                    batches.append(b.slice(0, self.max_rows - n))
                    truncated = True
                    break
                batches.append(b)
                n += b.num_rows
            reader.close()
        except duckdb.PermissionException as e:
            raise QueryError(f"refused: {e}. Queries may read only the tables (and files under "
                             f"{self.hdb_dir or 'no directory'}); {WHAT_IS_ALLOWED}") from None
        except (duckdb.Error, OSError, pa.ArrowException) as e:
            if fired.is_set():
                raise QueryError(f"query stopped at the time limit of {self.timeout_s:g}s; filter "
                                 f"on date and sym, or aggregate, to make it cheaper") from None
            raise QueryError(f"query failed: {e}") from None
        finally:
            self._watchdog.release(token)
            for name in joined:
                cur.con.unregister(name)
        table = pa.Table.from_batches(batches, schema=schema)
        if truncated and not allow_truncated:
            warn_truncated(self.max_rows, "this engine")
        return Result(table, truncated, (time.perf_counter() - t0) * 1e3)

    def _asof_fast_path(self, cur: _Cursor, sql: str
                        ) -> tuple[str, list[str], pa.Table | None]:
        """(the SQL to run, names registered for it, or the whole result when the query is
        nothing but the join). A history engine runs each `aj_trades(day)` /
        `aj(left, right, day)` call with literal arguments through hdb.asof (both partitions
        are sorted by sym then time: no sort needed) and the query reads its result in place of
        the macro; anything else - today's data, a NULL or computed day, a missing or unsorted
        partition - is left to the macro. Of several quotes at the same nanosecond this takes
        the last; DuckDB's ASOF join takes any one of them."""
        if self.hdb_dir is None or self.today is not None or not _AJ_CALL.search(sql):
            return sql, [], None
        try:
            tree = json.loads(cur.con.execute("SELECT json_serialize_sql($1)", [sql]).fetchall()[0][0])
        except (duckdb.Error, ValueError):
            return sql, [], None
        if tree.get("error"):
            return sql, [], None
        bare = _bare_call(tree)
        if bare is not None:
            spec = _aj_spec(bare["function"])
            if spec is not None and all(t.isidentifier() for t in spec[:2]):
                try:
                    table = join_day(self.hdb_dir, spec[2], *spec[:2], spec[3])
                except (AsofError, OSError, pa.ArrowException):
                    table = None
                if table is not None:
                    return sql, [], _as_duckdb_gives(table)
        calls = sorted(_aj_calls(tree), key=lambda n: -n["query_location"])
        text = sql.encode()
        names: list[str] = []
        try:
            for node in calls:
                spec = _aj_spec(node["function"])
                if spec is None:
                    continue
                left, right, day, columns = spec
                if not all(t.isidentifier() for t in (left, right)):
                    continue
                table = join_day(self.hdb_dir, day, left, right, columns)
                if table is None:
                    continue
                name = f"_aj_{len(names)}_{threading.get_ident()}"
                cur.con.register(name, table)
                names.append(name)
                alias = _ident(node["alias"] or node["function"]["function_name"])
                cols = node.get("column_name_alias") or []
                if cols:
                    alias += "(" + ", ".join(_ident(c) for c in cols) + ")"
                at, n = node["query_location"], node["query_location_length"]
                text = text[:at] + f"{_ident(name)} AS {alias}".encode() + text[at + n:]
        except (AsofError, OSError, pa.ArrowException, duckdb.Error):
            for name in names:
                cur.con.unregister(name)
            return sql, [], None
        return text.decode(), names, None

    def close(self) -> None:
        """Close every thread's cursor, then the database (call once queries have stopped:
        a DuckDB connection left to interpreter shutdown can abort the process)."""
        with self._lock:
            for cur in self._cursors:
                cur.con.close()
            self._cursors.clear()
            self._con.close()
