"""Start, stop and inspect the stack's processes. Each runs detached as `python -m MODULE`,
its output in <home>/logs/NAME.log and its pid in <home>/run/NAME.pid."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MODULES = {"tp": "tickerplant", "rdb": "rdb", "hdb": "hdb", "feed": "feedhandlers"}
ORDER = ["tp", "rdb", "hdb", "feed"]


class ProcError(RuntimeError):
    """A process did not start or stop; the message points at its log."""


def _pidfile(cfg, name: str) -> Path:
    return cfg.run_dir / f"{name}.pid"


def pid_of(cfg, name: str) -> int | None:
    try:
        return int(_pidfile(cfg, name).read_text())
    except (FileNotFoundError, ValueError):
        return None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def ready(cfg, name: str) -> bool:
    from tickerplant.protocol import control
    try:
        if name == "tp":
            control(cfg.tickerplant.ctl, "status", timeout=0.5)
        elif name in ("rdb", "hdb"):
            from hdb.server import query
            query(getattr(cfg, name).query, "select 1", timeout=0.5)
        return True
    except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
        return False


def start(cfg, names=None, config_path=None, args: dict | None = None, timeout: float = 30.0) -> list[str]:
    """Start the named processes (default: all) in order, each once ready before the next."""
    names = names or ORDER
    for d in (cfg.log_dir, cfg.run_dir):
        d.mkdir(parents=True, exist_ok=True)
    started = []
    for name in [n for n in ORDER if n in names]:
        if alive(pid_of(cfg, name)):
            continue
        cmd = [sys.executable, "-m", MODULES[name], "--home", str(cfg.root)]
        if config_path:
            cmd += ["--config", str(Path(config_path).resolve())]
        cmd += list((args or {}).get(name, ()))
        if name == "feed" and not (args or {}).get(name):
            cmd += ["sim"]
        with open(cfg.log_dir / f"{name}.log", "ab") as out:
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        _pidfile(cfg, name).write_text(str(p.pid))
        end = time.monotonic() + timeout
        while not ready(cfg, name):
            if p.poll() is not None or time.monotonic() > end:
                raise ProcError(f"{name} did not start; see {cfg.log_dir / (name + '.log')}")
            time.sleep(0.1)
        started.append(name)
    return started


def stop(cfg, names=None, timeout: float = 15.0) -> list[str]:
    """SIGTERM (clean close of logs and files), then SIGKILL after `timeout`; reverse order."""
    stopped = []
    for name in [n for n in reversed(ORDER) if n in (names or ORDER)]:
        pid = pid_of(cfg, name)
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
            end = time.monotonic() + timeout
            while alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
            stopped.append(name)
        _pidfile(cfg, name).unlink(missing_ok=True)
    return stopped


def status(cfg) -> list[dict]:
    from tickerplant.protocol import control
    out = []
    for name in ORDER:
        pid = pid_of(cfg, name)
        state = "running" if alive(pid) else ("dead" if pid else "stopped")
        row = {"name": name, "pid": pid if state != "stopped" else None, "state": state}
        if name == "tp" and state == "running":
            try:
                st = control(cfg.tickerplant.ctl, "status", timeout=1.0)
                row.update(log=st["log"], date=st["date"], seq=st["seq"], counters=st["counters"])
            except Exception as e:  # noqa: BLE001
                row.update(state="unresponsive", error=str(e))
        out.append(row)
    return out


def to_json(rows) -> str:
    return json.dumps(rows, indent=2, default=str)
