"""`tickstack top`: a live terminal view of a running stack.

    snap = snapshot(cfg, previous=None)    # a plain dict: everything the view shows
    console.print(render(snap))             # a rich renderable; pure, no I/O
    watch(cfg, interval=2.0)                # refresh until Ctrl-C (rich Live)

`snapshot` asks each part of the stack (the pid files and /proc through `processes.status`,
the TP's `status` on its control socket, a `count(*)` per table on the RDB's query endpoint,
the risk process's `status`) and never raises: a part that does not answer is recorded as
down with the reason, and the view shows it so. Message rates come from the status rows'
`rates` when a row has them, else from the difference of the TP's counters (`logged`
messages, `rows`) between this snapshot and `previous`. The last errors are the status rows'
`error`/`last_error` and the last ERROR lines of <home>/logs/*.log (only their tails are read).

`render(snap)` builds the view from the dict alone, so it is tested headless by printing into
`rich.console.Console(file=io.StringIO(), width=140)`.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ops import processes

# per-process extras a status row may carry (the supervisor adds them); shown when present
EXTRAS = ("uptime_s", "restarts", "rss", "rates", "lag")
LOG_TAIL_BYTES = 64 * 1024
ERROR_LINE = re.compile(r"\bERROR\b|Traceback|Error:")
MAX_ERRORS = 8


def snapshot(cfg, previous: dict | None = None, timeout: float = 1.0) -> dict:
    """Everything the view shows, as plain data; `previous` (the last snapshot) gives the
    rates. Parts that are down are {"down": reason}; this never raises for a down stack."""
    snap: dict = {"time": time.time(), "mono": time.monotonic(), "home": str(cfg.root)}
    try:
        rows = processes.status(cfg)
    except Exception as e:  # noqa: BLE001 - e.g. an unreadable run dir: show it, keep going
        rows = []
        snap["status_error"] = f"{type(e).__name__}: {e}"
    snap["processes"] = rows
    snap["tp"] = _tp(rows, previous, snap["mono"])
    snap["rdb"] = rdb_counts(cfg, timeout) if _up(rows, "rdb") else {"down": _why(rows, "rdb")}
    snap["risk"] = _risk(cfg, timeout) if _up(rows, "risk") else {"down": _why(rows, "risk")}
    snap["errors"] = _errors(cfg, rows)
    return snap


def _up(rows, name) -> bool:
    return any(r["name"] == name and r["state"] == "running" for r in rows)


def _why(rows, name) -> str:
    for r in rows:
        if r["name"] == name:
            return r.get("error") or r["state"]
    return "not in this stack"


def _tp(rows, previous, mono) -> dict:
    row = next((r for r in rows if r["name"] == "tp"), None)
    if row is None or row["state"] != "running" or "counters" not in row:
        return {"down": (row or {}).get("error") or (row or {}).get("state", "not in this stack")}
    c = row["counters"]
    out = {"date": row.get("date"), "seq": row.get("seq"), "log": row.get("log"),
           "messages": c.get("logged", 0), "rows": c.get("rows", 0), "rejected": c.get("rejected", 0),
           "msgs_s": None, "rows_s": None}
    before = (previous or {}).get("tp") or {}
    dt = mono - (previous or {}).get("mono", mono)
    # a restarted TP starts its counters again: no rate across that
    if dt > 0 and "messages" in before and out["messages"] >= before["messages"]:
        out["msgs_s"] = (out["messages"] - before["messages"]) / dt
        out["rows_s"] = (out["rows"] - before["rows"]) / dt
    return out


def rdb_counts(cfg, timeout: float = 1.0) -> dict:
    """{"tables": {table: rows}} as the RDB counts them now, or {"down": reason}."""
    from hdb.server import query
    names = list(cfg.rdb.tables) or cfg.registry().tables
    sql = " UNION ALL ".join(f"SELECT '{n}' AS t, count(*) AS n FROM \"{n}\"" for n in names)
    try:
        res = query(cfg.rdb.query, sql, timeout=timeout, allow_truncated=True, curve=cfg.curve)
        counts = dict(zip(res.table.column("t").to_pylist(), res.table.column("n").to_pylist()))
    except Exception as e:  # noqa: BLE001 - a status view: show why, don't fail
        return {"down": f"{type(e).__name__}: {e}"}
    return {"tables": {n: int(counts.get(n, 0)) for n in names}}


def _risk(cfg, timeout: float) -> dict:
    st = processes.risk_status(cfg, timeout=timeout)
    if st is None:
        return {"down": f"no answer on {cfg.risk.ctl}"}
    return {k: st.get(k) for k in ("trading", "trading_reason", "books", "positions", "actions")}


def _errors(cfg, rows) -> list[str]:
    out = []
    for r in rows:
        for key in ("error", "last_error"):
            if r.get(key):
                out.append(f"{r['name']}: {r[key]}")
    if cfg.log_dir.is_dir():
        for log in sorted(cfg.log_dir.glob("*.log")):
            out += [f"{log.stem}: {line}" for line in error_lines(log)[-3:]]
    return out[-MAX_ERRORS:]


def error_lines(log: Path) -> list[str]:
    """The ERROR lines (and tracebacks' last lines) in the tail of a process log."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - LOG_TAIL_BYTES))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [x.strip() for x in text.splitlines() if ERROR_LINE.search(x)]


# -- rendering (pure: the snapshot in, a renderable out) ---------------------------------------
def _dash(v) -> str:
    return "-" if v is None or v == "" or (isinstance(v, float) and v != v) else str(v)


def _num(v, fmt=",.2f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, fmt)


def _duration(s) -> str:
    if s is None:
        return "-"
    s = int(s)
    h, m = divmod(s, 3600)
    m, sec = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


def _bytes(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        return f"{v / 2**20:,.1f} MiB"
    return str(v)


def _mapping(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        return " ".join(f"{k}={_num(x, ',.0f') if isinstance(x, (int, float)) else x}" for k, x in v.items())
    if isinstance(v, (int, float)):
        return _num(v, ",.0f")
    return str(v)


STATE_STYLE = {"running": "green", "stopped": "dim", "dead": "bold red", "unresponsive": "yellow"}


def _processes(rows) -> Table:
    t = Table(title="processes", box=box.SIMPLE_HEAD, title_justify="left", show_edge=False)
    for col, just in (("name", "left"), ("state", "left"), ("pid", "right"), ("uptime", "right"),
                      ("restarts", "right"), ("rss", "right"), ("rates", "left"), ("lag", "left"),
                      ("detail", "left")):
        t.add_column(col, justify=just)
    for r in rows:
        detail = ""
        if "trading" in r and "venues" in r:
            detail = (f"{r['trading']} orders={r.get('orders')} working={r.get('working')} "
                      + " ".join(f"{v}:{x}" for v, x in r["venues"].items()))
        elif "trading" in r:
            detail = f"{r['trading']} books={r.get('books')}"
        elif "seq" in r:
            detail = f"seq={r['seq']} date={r.get('date')}"
        state = r["state"] + (" (quiet)" if r.get("quiet") else "")
        t.add_row(r["name"], Text(state, style=STATE_STYLE.get(r["state"], "")), _dash(r.get("pid")),
                  _duration(r.get("uptime_s")), _dash(r.get("restarts")), _bytes(r.get("rss")),
                  _mapping(r.get("rates")), _mapping(r.get("lag")), detail)
    return t


def _tp_line(tp: dict) -> Text:
    if "down" in tp:
        return Text(f"tickerplant: down ({tp['down']})", style="red")
    rate = (f"{_num(tp['msgs_s'], ',.0f')} msg/s, {_num(tp['rows_s'], ',.0f')} rows/s"
            if tp.get("msgs_s") is not None else "rates after the next refresh")
    return Text(f"tickerplant {tp['date']}  seq {tp['seq']:,}  messages {tp['messages']:,}  "
                f"rows {tp['rows']:,}  rejected {tp['rejected']:,}  {rate}")


def _rdb(rdb: dict):
    if "down" in rdb:
        return Text(f"rdb: down ({rdb['down']})", style="red")
    # one column per table: the counts of a whole stack fit on two lines
    t = Table(title="rdb rows", box=box.SIMPLE_HEAD, title_justify="left", show_edge=False)
    for name in rdb["tables"]:
        t.add_column(name, justify="right")
    t.add_row(*(f"{n:,}" for n in rdb["tables"].values()))
    return t


def _risk_view(risk: dict) -> list:
    if "down" in risk:
        return [Text(f"risk: down ({risk['down']})", style="red")]
    head = Text(f"trading {risk.get('trading')}"
                + (f" ({risk['trading_reason']})" if risk.get("trading_reason") else ""))
    books = Table(title="pnl by book", box=box.SIMPLE_HEAD, title_justify="left", show_edge=False)
    for col in ("book", "state", "realized", "unrealized", "pnl", "gross", "net", "var"):
        books.add_column(col, justify="left" if col in ("book", "state") else "right")
    for b in risk.get("books") or []:
        state = b.get("state", "") + (" BREACHED " + ",".join(b["breached"]) if b.get("breached") else "")
        books.add_row(b["book"], state, _num(b.get("realized")), _num(b.get("unrealized")), _num(b.get("pnl")),
                      _num(b.get("gross")), _num(b.get("net")), _num(b.get("var")))
    pos = Table(title="positions", box=box.SIMPLE_HEAD, title_justify="left", show_edge=False)
    for col in ("book", "sym", "position", "avg_cost", "mid", "realized", "unrealized", "net"):
        pos.add_column(col, justify="left" if col in ("book", "sym") else "right")
    for p in risk.get("positions") or []:
        pos.add_row(p["book"], p["sym"], f"{p['position']:,}", _num(p.get("avg_cost"), ".4f"),
                    _num(p.get("mid"), ".4f"), _num(p.get("realized")), _num(p.get("unrealized")),
                    _num(p.get("net")))
    if not risk.get("positions"):
        pos.add_row("-", "-", "none", "", "", "", "", "")
    return [head, books, pos]


def render(snap: dict):
    """The view of a snapshot (see `snapshot`), as one rich renderable."""
    when = time.strftime("%H:%M:%S", time.localtime(snap.get("time", 0)))
    parts = [Text(f"tickstack top  {when}  home {snap.get('home', '-')}", style="bold")]
    if snap.get("status_error"):
        parts.append(Text(f"status: {snap['status_error']}", style="red"))
    parts += [_processes(snap.get("processes") or []), _tp_line(snap.get("tp") or {"down": "-"}),
              _rdb(snap.get("rdb") or {"down": "-"}), *_risk_view(snap.get("risk") or {"down": "-"})]
    errors = snap.get("errors") or []
    parts.append(Text("last errors:" if errors else "last errors: none", style="bold" if errors else "dim"))
    for e in errors:
        parts.append(Text("  " + e[:300], style="red"))
    return Group(*parts)


def summary_line(snap: dict) -> str:
    """One plain line of a snapshot, for output that is not a terminal."""
    parts = []
    tp = snap.get("tp") or {}
    parts.append(f"tp seq={tp['seq']}" + (f" {tp['msgs_s']:,.0f}msg/s" if tp.get("msgs_s") is not None else "")
                 if "down" not in tp else "tp down")
    rdb = snap.get("rdb") or {}
    if "down" in rdb:
        parts.append("rdb down")
    else:
        parts.append("rdb " + " ".join(f"{k}={v}" for k, v in rdb["tables"].items() if v))
    risk = snap.get("risk") or {}
    if "down" in risk:
        parts.append("risk down")
    else:
        parts.append(f"trading={risk.get('trading')} " + " ".join(
            f"{b['book']}:pnl={_num(b.get('pnl'))}" for b in risk.get("books") or []))
    bad = [r["name"] for r in snap.get("processes") or [] if r["state"] != "running"]
    if bad:
        parts.append("not running: " + ",".join(bad))
    return "  ".join(parts)


def watch(cfg, interval: float = 2.0, seconds: float | None = None, console=None, check=None) -> None:
    """Refresh the view every `interval` seconds, for `seconds` (None: until Ctrl-C). On a
    terminal a rich Live view; otherwise one summary line per refresh. `check(snap)` is called
    on each snapshot (the demo raises from it when a process died)."""
    from rich.console import Console
    from rich.live import Live
    console = console or Console()
    end = None if seconds is None else time.monotonic() + seconds
    snap = snapshot(cfg)

    def pause() -> bool:
        left = None if end is None else end - time.monotonic()
        if left is not None and left <= 0:
            return False
        time.sleep(interval if left is None else min(interval, left))
        return True
    if console.is_terminal:
        with Live(render(snap), console=console, refresh_per_second=4, transient=False) as live:
            while pause():
                snap = snapshot(cfg, snap)
                live.update(render(snap))
                if check:
                    check(snap)
    else:
        while pause():
            snap = snapshot(cfg, snap)
            console.print(summary_line(snap), highlight=False, soft_wrap=True)
            if check:
                check(snap)
