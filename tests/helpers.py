"""Test helpers: free loopback ports, configs in a temp home, real processes stopped by pid,
a plain DEALER feed that waits for the TP's acks."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(home: Path, **sections) -> Path:
    """A TOML config with fresh ports; `sections` override, e.g. tickerplant={"mode": "batched"}."""
    base = {
        "tickerplant": {"ingest": f"tcp://127.0.0.1:{free_port()}", "pub": f"tcp://127.0.0.1:{free_port()}",
                        "ctl": f"tcp://127.0.0.1:{free_port()}", "heartbeat_ms": 100},
        "rdb": {"query": f"tcp://127.0.0.1:{free_port()}"},
        "hdb": {"query": f"tcp://127.0.0.1:{free_port()}"},
        "gateway": {"intents": f"tcp://127.0.0.1:{free_port()}"},
        "venues.A": {"port": free_port()},
        "venues.B": {"port": free_port()},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        for k, v in values.items():
            lines.append(f"{k} = {v!r}".replace("'", '"') if not isinstance(v, bool) else f"{k} = {str(v).lower()}")
    path = home / "tickstack.toml"
    home.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


class Procs:
    """Starts `python -m MODULE --config C --home H` processes; `stop_all` kills them by pid."""

    def __init__(self, config: Path, home: Path):
        self.config, self.home = config, home
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, module: str, *args: str, name: str | None = None) -> subprocess.Popen:
        name = name or module
        out = open(self.home / f"{name}.out", "ab")
        p = subprocess.Popen([sys.executable, "-m", module, "--config", str(self.config),
                              "--home", str(self.home), *args], stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.running[name] = p
        return p

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.running.pop(name)
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        p.wait(timeout=20)

    def output(self, name: str) -> str:
        return (self.home / f"{name}.out").read_text(errors="replace")

    def stop_all(self) -> None:
        for name in list(self.running):
            self.kill(name)


def wait_for(cond, timeout: float = 30.0, every: float = 0.05, what: str = "condition"):
    """Poll `cond()` until truthy; fail with `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def send(cfg, table: str, batches, feed: int = 7, first_fseq: int = 1, timeout: float = 30.0) -> int:
    """Send encoded batches (dicts of columns) as one feed and wait until the TP acked the last.
    Returns the number of rows sent."""
    import struct
    import zmq
    from schemas.codec import encode
    schema = cfg.registry()[table]
    d = zmq.Context.instance().socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(cfg.tickerplant.ingest)
    rows, fseq = 0, first_fseq - 1
    try:
        for cols in batches:
            fseq += 1
            d.send(encode(schema, cols, feed=feed, fseq=fseq))
            rows += len(cols["time"])
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if d.poll(100):
                f = d.recv_multipart()
                if f[0] == b"ack" and struct.unpack("<IQ", f[1])[1] >= fseq:
                    return rows
                if f[0] == b"err":
                    raise AssertionError(f"TP rejected: {f[2].decode()}")
        raise AssertionError("no ack from the TP")
    finally:
        d.close(0)


def trades(n_msgs: int, rows: int, start: int = 0, syms=("AAPL", "MSFT", "IBM")):
    """Deterministic trade batches; row i of the stream has size == i (so counts are checkable)."""
    import numpy as np
    syms = np.array(syms)
    for m in range(n_msgs):
        i = start + m * rows + np.arange(rows)
        yield {"time": 1_700_000_000_000_000_000 + i, "sym": syms[i % len(syms)],
               "price": 100.0 + (i % 100) / 100, "size": i}


class Flood:
    """A feed sending `rows`-row trade batches flat out, in a thread, until `stop()`, which
    returns the rows the TP acked."""

    def __init__(self, cfg, rows: int):
        import threading
        self.running = threading.Event()
        self.running.set()
        self.sent: list[int] = []

        def batches():
            for b in trades(10**7, rows):
                if not self.running.is_set():
                    return
                yield b
        self.thread = threading.Thread(target=lambda: self.sent.append(send(cfg, "trade", batches())))
        self.thread.start()

    def stop(self) -> int:
        self.running.clear()
        self.thread.join()
        return self.sent[0]


def tp_status(cfg):
    """The TP's status, or None while it does not answer."""
    from tickerplant.protocol import control as request
    try:
        return request(cfg.tickerplant.ctl, "status", timeout=0.5)
    except Exception:  # noqa: BLE001 - not up (yet)
        return None


def start_tp(cfg, procs):
    """Start the TP as a process (named "tp") and wait until its control socket answers."""
    procs.start("tickerplant", name="tp")
    wait_for(lambda: tp_status(cfg), timeout=20, what="tickerplant ctl")
