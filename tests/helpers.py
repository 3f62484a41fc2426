"""Test helpers: free loopback ports, configs in a temp home, real processes stopped by pid,
a plain DEALER feed that waits for the TP's acks."""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path



_PORTS = range(20000, 32000)   # below the kernel's ephemeral range (32768-60999 here)
_given: set[int] = set()


def free_port() -> int:
    """A loopback port that binds now and was not handed out before in this run. Taken below
    the ephemeral range: a port bound to 0 and closed comes from that range, and between our
    close and the process's bind, any outgoing connection may take it as its source port (a
    test failed on "in use" that way)."""
    while True:
        port = random.choice(_PORTS)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port


def write_config(home: Path, **sections) -> Path:
    """A TOML config with fresh ports; `sections` override, e.g. tickerplant={"mode": "batched"}."""
    base = {
        "tickerplant": {"ingest": f"tcp://127.0.0.1:{free_port()}", "pub": f"tcp://127.0.0.1:{free_port()}",
                        "ctl": f"tcp://127.0.0.1:{free_port()}", "heartbeat_ms": 100},
        "rdb": {"query": f"tcp://127.0.0.1:{free_port()}"},
        "hdb": {"query": f"tcp://127.0.0.1:{free_port()}"},
        "gateway": {"intents": f"tcp://127.0.0.1:{free_port()}"},
        "risk": {"ctl": f"tcp://127.0.0.1:{free_port()}"},
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


def wait_for(cond, timeout: float = 30.0, every: float = 0.05, what="condition"):
    """Poll `cond()` until truthy; fail with `what` after `timeout` seconds (a callable `what`
    is called then, so the message can tell what was last seen)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")


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


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class AckedFeed:
    """A feed's DEALER that keeps at most `window` messages unacked (so the TP's ingest queue
    stays small) and records when each ack arrived (time.monotonic)."""

    def __init__(self, cfg, feed: int, window: int = 4):
        import zmq
        self.cfg, self.feed, self.window = cfg, feed, window
        self.schema = cfg.registry()["trade"]
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(cfg.tickerplant.ingest)
        self.fseq = self.acked = self.rows = 0
        self.ack_times: list[float] = []

    def _take_acks(self, timeout_ms: int) -> None:
        import struct
        if not self.sock.poll(timeout_ms):
            return
        while self.sock.poll(0):
            f = self.sock.recv_multipart()
            if f[0] == b"err":
                raise AssertionError(f"TP rejected a good message: {f[2].decode()}")
            if f[0] == b"ack":
                self.ack_times.append(time.monotonic())
                self.acked = max(self.acked, struct.unpack("<IQ", f[1])[1])

    def send(self, cols, timeout: float = 30.0) -> None:
        from schemas.codec import encode
        self.fseq += 1
        self.sock.send(encode(self.schema, cols, feed=self.feed, fseq=self.fseq))
        self.rows += len(cols["time"])
        end = time.monotonic() + timeout
        while self.fseq - self.acked >= self.window:
            if time.monotonic() > end:
                raise AssertionError(f"no ack from the TP for {timeout}s (fseq {self.acked} of {self.fseq})")
            self._take_acks(100)

    def drain(self, timeout: float = 30.0) -> int:
        """Wait until everything sent is acked; the rows sent."""
        end = time.monotonic() + timeout
        while self.acked < self.fseq:
            if time.monotonic() > end:
                raise AssertionError(f"no ack from the TP for {timeout}s (fseq {self.acked} of {self.fseq})")
            self._take_acks(100)
        return self.rows

    def largest_ack_gap(self) -> float:
        """The longest time without an ack, up to now (while the feed is sending)."""
        t = self.ack_times
        gap = max((b - a for a, b in zip(t, t[1:])), default=0.0)
        return max(gap, time.monotonic() - t[-1]) if t and self.acked < self.fseq else gap

    def close(self) -> None:
        self.sock.close(0)
