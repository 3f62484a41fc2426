"""Start, stop and inspect the stack's processes. Each runs detached as
`python -m MODULE --home HOME ...`, its output in <home>/logs/NAME.log and its pid in
<home>/run/NAME.pid.

This is the library: `start` launches and waits for readiness, `stop` signals, and nothing
watches the processes afterwards (`tickstack run` and tests use it so). `tickstack start|stop`
go through ops.supervisor, which uses `port_conflict`, `spawn`, `ready`, `alive` from here and
restarts what dies; `status` merges the supervisor's state (<home>/run/supervisor.json, read by
`supervision`) into its rows (`_supervised`: uptime_s, restarts, last_exit, last_error, rss;
states starting, restarting, failed).

The processes, in start order: tp rdb hdb feed, one `venue-X` per configured venue
(`python -m gateway.venue --name X`: a FIX acceptor with its matching engine), gateway (the
order gateway, trading those venues), risk (`python -m strategy.risk`: positions, PnL, VaR,
limits), then one `strategy-NAME` per name in `[strategy] run` (`python -m strategy --name
NAME`; any other name can be started by hand: `tickstack strategy start NAME`). `stop` goes in
reverse order. Ready means: the TP answers `status` on its control socket, the RDB/HDB answer
a query, a venue's FIX port accepts connections, the gateway answers `status` on its intents
socket and has caught up with its venues (or given up waiting for them after
gateway.recovery_timeout_s), risk answers `status` on `[risk] ctl`, a strategy has written
its pid to <home>/run/strategy-NAME.ready (it does once subscribed to the TP).

A pid file is only a hint: a process counts as running only if that pid is alive, is not a
zombie, and its command line is `python -m MODULE ... --home <this home>` (Linux: read from
/proc). So a process killed with -9 but not yet reaped, or a pid reused by another program,
is "dead", never "running", and `stop` never signals a process that is not ours.

Before a process starts, every endpoint it binds is tried: a port already taken (e.g. by a
second stack with another home on the default ports) is reported with the config key that
moves it, instead of a process that dies at once.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

MODULES = {"tp": "tickerplant", "rdb": "rdb", "hdb": "hdb", "feed": "feedhandlers",
           "gateway": "gateway", "risk": "strategy.risk"}
VENUE_MODULE = "gateway.venue"
STRATEGY_MODULE = "strategy"
SUPERVISOR = "supervisor"           # its pid file is <home>/run/supervisor.pid, like the others'
SUPERVISOR_MODULE = "ops.supervisor"
# the default stack (venues A and B, the pairs strategy); `process_names(cfg)` is the order
# for a config's venues and strategies
ORDER = ["tp", "rdb", "hdb", "feed", "venue-A", "venue-B", "gateway", "risk", "strategy-pairs"]
# the folder names work too: `tickstack start tickerplant`
ALIASES = {module: name for name, module in MODULES.items() if module != name and "." not in module}
# the endpoints each process binds, as config keys (section.key)
BINDS = {"tp": ["tickerplant.ingest", "tickerplant.pub", "tickerplant.ctl"],
         "rdb": ["rdb.query"], "hdb": ["hdb.query"], "feed": [], "gateway": ["gateway.intents"],
         "risk": ["risk.ctl"]}


def process_names(cfg, extra=()) -> list[str]:
    """Every process of this config's stack, in start order; `extra` strategy processes
    (strategy-NAME) not in `[strategy] run` go last."""
    strategies = [f"strategy-{n}" for n in cfg.strategy.run]
    strategies += [n for n in extra if strategy_of(n) and n not in strategies]
    return ORDER[:4] + [f"venue-{v}" for v in cfg.venues] + ["gateway", "risk"] + strategies


def venue_of(name: str) -> str | None:
    """"venue-A" -> "A"; None for the other processes."""
    return name[len("venue-"):] if name.startswith("venue-") else None


def strategy_of(name: str) -> str | None:
    """"strategy-pairs" -> "pairs"; None for the other processes."""
    return name[len("strategy-"):] or None if name.startswith("strategy-") else None


def running_strategies(cfg) -> list[str]:
    """strategy-NAME processes with a pid file under this home (started by hand or by config)."""
    return sorted(p.stem for p in cfg.run_dir.glob("strategy-*.pid")) if cfg.run_dir.is_dir() else []


def command(name: str) -> tuple[str, list[str]]:
    """(module, arguments that identify it) of a process name."""
    if name == SUPERVISOR:
        return SUPERVISOR_MODULE, []
    v = venue_of(name)
    if v:
        return VENUE_MODULE, ["--name", v]
    st = strategy_of(name)
    if st:
        return STRATEGY_MODULE, ["--name", st]
    return MODULES[name], []


def binds(cfg, name: str) -> list[tuple[str, str]]:
    """(config key, endpoint) of everything the process binds."""
    v = venue_of(name)
    if v:
        return [(f"venues.{v}.port", f"tcp://127.0.0.1:{cfg.venues[v].port}")] if v in cfg.venues else []
    if strategy_of(name):
        return []
    return [(key, endpoint_of(cfg, key)) for key in BINDS[name]]


class ProcError(RuntimeError):
    """A process did not start or stop; the message says why and what to do."""


def canonical(name: str) -> str:
    """The process name for a name or its folder's name (tickerplant -> tp)."""
    return ALIASES.get(name, name)


def _pidfile(cfg, name: str) -> Path:
    return cfg.run_dir / f"{name}.pid"


def pid_of(cfg, name: str) -> int | None:
    try:
        return int(_pidfile(cfg, name).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _proc_state(pid: int) -> str | None:
    """The state letter from /proc/PID/stat (R, S, D, Z, ...); None if there is no such
    process or no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) S ...": comm may hold spaces and parentheses, so split after the last ')'
    return stat.rpartition(")")[2].split()[0]


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw.decode("utf-8", "replace").split("\0")[:-1] if raw else []


def _is_ours(argv: list[str], module: str, home: Path, ident: list[str] = ()) -> bool:
    """argv is `python -m MODULE ... --home HOME` for this home (with `ident`, e.g. a venue's
    `--name A`, among its arguments)."""
    if len(argv) < 3 or argv[1:3] != ["-m", module]:
        return False
    if ident and not any(argv[i:i + len(ident)] == list(ident) for i in range(3, len(argv))):
        return False
    for i, a in enumerate(argv[3:], 3):
        if a == "--home" and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith("--home="):
            value = a.split("=", 1)[1]
        else:
            continue
        return value == str(home) or Path(value).expanduser().resolve() == home
    return False


def alive(pid: int | None, name: str | None = None, home: Path | None = None) -> bool:
    """`pid` is a live process, not a zombie; with `name` and `home`, also that process of this
    stack (its command line is ours), so a reused pid does not count."""
    if not pid or pid <= 0:
        return False
    if not Path("/proc/self/stat").exists():  # no procfs (not Linux): the signal check alone
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    state = _proc_state(pid)
    if state is None or state in ("Z", "X", "x"):
        return False
    if name is None:
        return True
    argv = _cmdline(pid)
    module, ident = command(name)
    return argv is not None and _is_ours(argv, module, home, ident)


def running(cfg, name: str) -> int | None:
    """The pid of this stack's process `name` if it runs, else None."""
    pid = pid_of(cfg, name)
    return pid if alive(pid, name, cfg.root) else None


def endpoint_of(cfg, key: str) -> str:
    section, field = key.split(".")
    return getattr(getattr(cfg, section), field)


def _tcp_address(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of a tcp:// endpoint with a fixed port; None for others (ipc, wildcard)."""
    if not endpoint.startswith("tcp://"):
        return None
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return None
    host = host.strip("[]")
    return ("0.0.0.0" if host in ("*", "") else host), int(port)


def in_use(endpoint: str) -> bool:
    """Something already listens on this tcp endpoint (so binding it would fail)."""
    addr = _tcp_address(endpoint)
    if addr is None:
        return False
    try:
        infos = socket.getaddrinfo(addr[0], addr[1], type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False  # a bad host is the process's own error to report
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # as ZeroMQ does: a port left in TIME_WAIT by a killed process is free to bind
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sockaddr)
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def accepts(endpoint: str, timeout: float = 1.0) -> bool | None:
    """Whether something accepts connections at this endpoint: True, False (refused or no
    answer within `timeout`), or None when it cannot be told (not tcp/ipc)."""
    if endpoint.startswith("ipc://"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            try:
                s.connect(endpoint[len("ipc://"):])
                return True
            except OSError:
                return False
    addr = _tcp_address(endpoint)
    if addr is None:
        return None
    host = "127.0.0.1" if addr[0] == "0.0.0.0" else addr[0]
    try:
        socket.create_connection((host, addr[1]), timeout=timeout).close()
        return True
    except OSError:
        return False


def gateway_status(cfg, timeout: float = 0.5) -> dict | None:
    """The gateway's `status` reply, or None if it does not answer."""
    from gateway.client import GatewayUnavailable, OrderClient
    if accepts(cfg.gateway.intents, timeout=timeout) is False:
        return None
    try:
        return OrderClient(cfg.gateway.intents, client="tickstack", mode="req", timeout=timeout,
                           curve=cfg.curve).status()
    except (GatewayUnavailable, ValueError):
        return None


def risk_status(cfg, timeout: float = 0.5) -> dict | None:
    """The risk process's `status` reply, or None if it does not answer."""
    from tickerplant.protocol import request
    if accepts(cfg.risk.ctl, timeout=timeout) is False:
        return None
    try:
        frames = request(cfg.risk.ctl, [b'{"cmd": "status"}'], timeout=timeout, what="the risk process",
                         curve=cfg.curve)
        reply = json.loads(frames[0].bytes)
    except Exception:  # noqa: BLE001 - not up, or not answering in time
        return None
    return None if "error" in reply else reply


def ready(cfg, name: str, pid: int | None = None) -> bool:
    """The process answers on its endpoint (the TP and the gateway: and is the process `pid`,
    not another stack's on the same port)."""
    from tickerplant.protocol import control
    try:
        if name == "tp":
            st = control(cfg.tickerplant.ctl, "status", timeout=0.5, curve=cfg.curve)
            return pid is None or st.get("pid", pid) == pid
        elif name in ("rdb", "hdb"):
            from hdb.server import query
            query(getattr(cfg, name).query, "select 1", timeout=0.5, curve=cfg.curve)
        elif name == "gateway":
            st = gateway_status(cfg)
            return bool(st) and not st["recovering"] and (pid is None or st.get("pid", pid) == pid)
        elif name == "risk":
            st = risk_status(cfg)
            return bool(st) and (pid is None or st.get("pid", pid) == pid)
        elif strategy_of(name):
            f = cfg.run_dir / f"{name}.ready"
            return f.is_file() and (pid is None or f.read_text().strip() == str(pid))
        elif venue_of(name):
            return bool(accepts(binds(cfg, name)[0][1], timeout=0.5))
        return True
    except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
        return False


def last_error(log: Path, already: int = 0) -> str:
    """The last line the process wrote to its log since `already` bytes (its fatal error)."""
    try:
        with open(log, "rb") as f:
            f.seek(already)
            lines = [x.strip() for x in f.read().decode("utf-8", "replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def port_conflict(cfg, name: str) -> str | None:
    """Why `name` cannot bind its endpoints now (one is in use, and the key that moves it), or
    None when they are all free."""
    for key, ep in binds(cfg, name):
        if in_use(ep):
            return (f"{ep} is in use ({key}), perhaps by another stack or program; set another "
                    f"port for {key} in your config")
    return None


def spawn(cfg, name: str, config_path=None, args=()) -> tuple[subprocess.Popen, Path, int]:
    """Launch `name` detached (its own session: it outlives whoever started it), its output
    appended to <home>/logs/NAME.log, its pid written to <home>/run/NAME.pid. Returns (the
    process, its log, the log's size before it started: where its own output begins)."""
    for d in (cfg.log_dir, cfg.run_dir):
        d.mkdir(parents=True, exist_ok=True)
    module, ident = command(name)
    cmd = [sys.executable, "-m", module, *ident, "--home", str(cfg.root)]
    if config_path:
        cmd += ["--config", str(Path(config_path).resolve())]
    cmd += list(args or ())
    if name == "feed" and not args:
        cmd += ["sim"]
    log = cfg.log_dir / f"{name}.log"
    with open(log, "ab") as out:
        already = out.tell()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    _pidfile(cfg, name).write_text(str(p.pid))
    return p, log, already


def start(cfg, names=None, config_path=None, args: dict | None = None, timeout: float = 30.0) -> list[str]:
    """Start the named processes (default: all) in order, each once ready before the next,
    and leave them to themselves (`tickstack start` runs them under ops.supervisor instead)."""
    every = process_names(cfg, [canonical(n) for n in names or ()])
    names = [canonical(n) for n in names] if names else every
    started = []
    for name in [n for n in every if n in names]:
        if running(cfg, name):
            continue
        conflict = port_conflict(cfg, name)
        if conflict:
            raise ProcError(f"{name} did not start: {conflict}")
        p, log, already = spawn(cfg, name, config_path, (args or {}).get(name, ()))
        end = time.monotonic() + timeout
        while not ready(cfg, name, p.pid):
            if p.poll() is not None or time.monotonic() > end:
                why = last_error(log, already) if p.poll() is not None else f"not ready in {timeout:g}s"
                raise ProcError(f"{name} did not start: {why or 'no output'}; see {log}")
            time.sleep(0.1)
        started.append(name)
    return started


def stop(cfg, names=None, timeout: float = 15.0) -> list[str]:
    """SIGTERM (clean close of logs and files), then SIGKILL after `timeout`; reverse order.
    Only this stack's processes are signalled (see `alive`)."""
    every = process_names(cfg, [canonical(n) for n in names or ()] + running_strategies(cfg))
    names = [canonical(n) for n in names] if names else every
    stopped = []
    for name in [n for n in reversed(every) if n in names]:
        pid = running(cfg, name)
        if pid:
            os.kill(pid, signal.SIGTERM)
            end = time.monotonic() + timeout
            while alive(pid, name, cfg.root) and time.monotonic() < end:
                time.sleep(0.05)
            if alive(pid, name, cfg.root):
                os.kill(pid, signal.SIGKILL)
            stopped.append(name)
        _pidfile(cfg, name).unlink(missing_ok=True)
    return stopped


def supervisor_pid(cfg) -> int | None:
    """The pid of this home's supervisor (ops.supervisor) if it runs, else None."""
    return running(cfg, SUPERVISOR)


def state_file(cfg) -> Path:
    """Where the supervisor keeps its state (written whole, atomically, on every change)."""
    return cfg.run_dir / "supervisor.json"


def supervision(cfg) -> dict:
    """The running supervisor's state (see ops.supervisor), or {} when no supervisor of this
    home runs (a state file left by a dead one says nothing about now)."""
    pid = supervisor_pid(cfg)
    if not pid:
        return {}
    try:
        st = json.loads(state_file(cfg).read_text())
    except (OSError, ValueError):
        return {}
    return st if st.get("pid") == pid else {}


def rss_of(pid: int | None) -> int | None:
    """Resident memory of a process in bytes (VmRSS in /proc/PID/status), None if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def started_at_of(pid: int | None) -> float | None:
    """When a process started (epoch seconds), from /proc: boot time + its start in clock ticks."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
        btime = next(int(x.split()[1]) for x in Path("/proc/stat").read_text().splitlines()
                     if x.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


# how a supervisor's state shows in `status` when the process is not up
SHOWN = {"backoff": "restarting", "failed": "failed", "starting": "starting", "stopped": "stopped"}


def _supervised(row: dict, sup: dict | None, now: float | None = None) -> dict:
    """Add what the supervisor knows of the process (`sup`: its entry in supervisor.json, None
    when not supervised) and what /proc says to a status row: uptime_s, restarts, last_exit,
    last_error, rss (bytes), supervised. Other keys of the row are left alone."""
    now = time.time() if now is None else now
    live = row["state"] == "running"
    pid = row["pid"] if live else None
    sup = sup or {}
    started = sup.get("started_at") if sup.get("pid") == pid else None
    if live and started is None:
        started = started_at_of(pid)
    row.update(uptime_s=round(now - started, 1) if live and started else None,
               restarts=sup.get("restarts", 0), last_exit=sup.get("last_exit"),
               last_error=sup.get("last_error"), rss=rss_of(pid) if live else None,
               supervised=bool(sup))
    state = sup.get("state")
    if state == "starting" or (not live and state in SHOWN):
        row["state"] = SHOWN[state]
        if state == "stopped":
            row["pid"] = None
        if state == "backoff" and sup.get("next_start_at"):
            row["restart_in_s"] = round(max(0.0, sup["next_start_at"] - now), 1)
    return row


def status(cfg, names=None) -> list[dict]:
    """A row per process: name, state (running, dead, stopped; under a supervisor also starting,
    restarting, failed), pid, uptime_s, restarts, last_exit, last_error, rss, and what the
    process itself reports (the TP's log and seq, the gateway's and risk's trading state)."""
    from tickerplant.protocol import control
    every = process_names(cfg, [canonical(n) for n in names or ()] + running_strategies(cfg))
    names = [canonical(n) for n in names] if names else every
    sup = supervision(cfg).get("processes", {})
    out = []
    for name in [n for n in every if n in names]:
        pid = pid_of(cfg, name)
        state = "running" if alive(pid, name, cfg.root) else ("dead" if pid else "stopped")
        row = _supervised({"name": name, "pid": pid if state != "stopped" else None, "state": state},
                          sup.get(name))
        state = row["state"]
        if name == "tp" and state == "running":
            try:
                st = control(cfg.tickerplant.ctl, "status", timeout=1.0, curve=cfg.curve)
                row.update(log=st["log"], date=st["date"], seq=st["seq"], counters=st["counters"])
            except Exception as e:  # noqa: BLE001
                row.update(state="unresponsive", error=str(e))
        if name == "gateway" and state == "running":
            st = gateway_status(cfg, timeout=1.0)
            if st is None:
                row.update(state="unresponsive", error=f"no answer on {cfg.gateway.intents}")
            else:
                row.update(trading=st["state"], recovering=st["recovering"], orders=st["orders"],
                           working=st["working"], venues={v: ("ready" if x["ready"] else "logged on"
                                                              if x["logged_on"] else "down")
                                                          for v, x in st["venues"].items()})
        if name == "risk" and state == "running":
            st = risk_status(cfg, timeout=1.0)
            if st is None:
                row.update(state="unresponsive", error=f"no answer on {cfg.risk.ctl}")
            else:
                row.update(trading=st["trading"], books=len(st["books"]),
                           breached=[b["book"] for b in st["books"] if b["breached"]])
        if state == "running":
            row.update(health_of(cfg, name, row["pid"]))
        out.append(row)
    return out


def to_json(rows) -> str:
    return json.dumps(rows, indent=2, default=str)


def health_of(cfg, name: str, pid: int | None = None, timeout: float = 1.0) -> dict:
    """What process `name` says about its health (tickerplant/health.py); {} when it serves no
    metrics (no <home>/run/NAME.metrics). Keys: metrics (its /metrics URL), rates {"in", "out"}
    (messages/s over its last heartbeat interval), lag (seqs behind the TP, -1 n/a), errors,
    health_error (its last error's text), last_heartbeat (epoch s), heartbeat_age_s, and quiet:
    True when the last heartbeat is older than [health] quiet_after intervals. Scraped from its
    /metrics; a process that does not answer there (stopped, wedged) is judged by its last row
    in the RDB's heartbeat table, or is quiet with no last_heartbeat if the RDB cannot tell."""
    try:
        url = (cfg.run_dir / f"{name}.metrics").read_text().strip()
    except OSError:
        return {}
    out = {"metrics": url}
    got = _scrape(url, name, pid, timeout) or _last_heartbeat_row(cfg, name, pid, timeout)
    interval = (got or {}).pop("interval", None) or cfg.health.heartbeat_s
    if got:
        out.update(got)
        out["heartbeat_age_s"] = max(0.0, time.time() - got["last_heartbeat"])
    out["quiet"] = not got or out["heartbeat_age_s"] > cfg.health.quiet_after * interval
    return out


def _scrape(url: str, name: str, pid: int | None, timeout: float) -> dict | None:
    """The health keys from a process's /metrics, or None if it does not answer (or is not
    the process `pid`: a stale file, the port reused)."""
    from urllib.request import urlopen
    from prometheus_client.parser import text_string_to_metric_families
    try:
        with urlopen(url, timeout=timeout) as r:
            text = r.read(1 << 20).decode("utf-8", "replace")
        v, error = {}, ""
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.labels.get("process") == name:
                    v[s.name] = s.value
                    if s.name == "tickstack_last_error_info":
                        error = s.labels.get("error", "")
    except Exception:  # noqa: BLE001 - not answering, or not speaking Prometheus text
        return None
    if "tickstack_heartbeat_time_seconds" not in v or (pid and v.get("tickstack_process_id") != pid):
        return None
    return {"rates": {"in": v.get("tickstack_messages_in_per_second", 0.0),
                      "out": v.get("tickstack_messages_out_per_second", 0.0)},
            "lag": int(v.get("tickstack_lag_messages", -1)), "errors": int(v.get("tickstack_errors_total", 0)),
            "health_error": error, "last_heartbeat": v["tickstack_heartbeat_time_seconds"],
            "interval": v.get("tickstack_heartbeat_interval_seconds")}


def _last_heartbeat_row(cfg, name: str, pid: int | None, timeout: float) -> dict | None:
    """The health keys from the process's last row in the RDB's heartbeat table, or None."""
    from hdb.server import query
    quoted = name.replace("'", "''")
    try:
        rows = query(cfg.rdb.query, "select epoch_ns(time) as t, pid, in_rate, out_rate, lag, errors, "
                                    f"last_error from heartbeat where sym = '{quoted}' "
                                    "order by time desc limit 1", timeout=timeout, curve=cfg.curve).table.to_pylist()
    except Exception:  # noqa: BLE001 - no RDB, or it does not answer in time
        return None
    if not rows or (pid and rows[0]["pid"] != pid):
        return None
    r = rows[0]
    return {"rates": {"in": r["in_rate"], "out": r["out_rate"]}, "lag": r["lag"], "errors": r["errors"],
            "health_error": r["last_error"], "last_heartbeat": r["t"] / 1e9}
