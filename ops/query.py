"""`tickstack query`: route SQL to the RDB, the HDB, both (one engine over history and today) or
QuestDB, and print or save the answer."""
from __future__ import annotations

import sys

import pyarrow as pa


class QueryFailed(RuntimeError):
    """The query was refused or failed; the text says why and what to do."""


def run_query(cfg, sql: str, source: str, timeout: float) -> pa.Table:
    from hdb.server import query
    from hdb.sql import QueryError
    try:
        if source in ("rdb", "hdb"):
            return query(getattr(cfg, source).query, sql, timeout=timeout).table
        if source == "questdb":
            from hdb.questdb import questdb_query
            return questdb_query(cfg.hdb.questdb.pg, sql)
        return _all(cfg, sql, timeout)
    except QueryError as e:
        raise QueryFailed(str(e)) from None
    except Exception as e:  # noqa: BLE001 - e.g. QuestDB unreachable: say so, don't trace
        raise QueryFailed(f"{source}: {e}") from None


def _all(cfg, sql: str, timeout: float) -> pa.Table:
    """History from the Parquet files plus today's tables fetched from the RDB, in one engine,
    so one statement spans both (`trade` = history and today; `trade_hist`, `trade_today`)."""
    from hdb.server import query
    from hdb.sql import Engine
    reg = cfg.registry()

    def today():
        return {t: query(cfg.rdb.query, f'select * from "{t}"', timeout=timeout).table for t in reg.tables}
    eng = Engine(hdb_dir=cfg.hdb_dir, today=today, day=lambda: _today(cfg),
                 timeout_s=timeout, max_rows=cfg.hdb.max_rows, registry=reg)
    try:
        return eng.query(sql).table
    finally:  # a DuckDB connection left to interpreter shutdown can abort the process
        eng.close()


def _today(cfg):
    """The TP's trading day (ahead of the clock after a forced end of day), else the clock's."""
    import datetime as dt
    from tickerplant.clock import Clock
    from tickerplant.protocol import control
    try:
        return dt.date.fromisoformat(control(cfg.tickerplant.ctl, "status", timeout=2)["date"])
    except Exception:  # noqa: BLE001 - no TP: the configured clock decides
        return Clock(cfg.eod.time, cfg.eod.tz).day()


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
            import pyarrow.csv as pc
            pc.write_csv(table, stream)
        elif fmt == "json":
            import json
            for row in table.to_pylist():
                stream.write((json.dumps(row, default=str) + "\n").encode())
        else:
            import duckdb
            text = str(duckdb.from_arrow(table)) if table.num_rows or table.num_columns else "(no rows)\n"
            stream.write(text.encode())
        stream.flush()
    finally:
        if out:
            stream.close()
