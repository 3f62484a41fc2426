"""Peer servers for the benchmarks: Redis and NATS started on 127.0.0.1, on a free port, with
their files in a temp dir, and always stopped by pid.

`redis(workdir)` and `nats(workdir)` are context managers yielding a `Server` (pid, address):
the process is started in its own session (a Ctrl-C in the terminal reaches the bench, not the
server, so the bench decides how it stops), readiness is a real protocol exchange, and on the
way out (normal exit, error or KeyboardInterrupt) it gets SIGTERM, then SIGKILL after a grace
period, and is reaped; if the bench itself is killed, Linux kills the server (PDEATHSIG).
A server that fails to start raises `ServerError` with its log's tail.

Redis: AOF on with `appendfsync everysec` (the documented durable-and-fast setting), RDB
snapshots off (`save ""`); everything else is Redis's default. NATS: JetStream on, its store in
the temp dir; streams are created by the client with file storage (`peers.py`).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

INSTALL = "apt-get install -y redis-server nats-server"
BINARIES = {"redis": "redis-server", "nats": "nats-server"}
_START_TIMEOUT = 20.0
_STOP_GRACE = 5.0


class ServerError(RuntimeError):
    """A peer server could not start; the text says why and what to do."""


@dataclass(frozen=True)
class Server:
    name: str
    pid: int
    host: str
    port: int
    workdir: Path


def binary(name: str) -> str | None:
    """Path of the peer's server binary: on PATH, else /usr/bin or /usr/sbin (Debian puts
    nats-server in sbin, which a non-root PATH lacks). None when it is not installed."""
    exe = BINARIES[name]
    found = shutil.which(exe)
    if found:
        return found
    for d in ("/usr/bin", "/usr/sbin", "/usr/local/bin"):
        p = Path(d) / exe
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def alive(pid: int) -> bool:
    """True while `pid` is a running process (a zombie is not running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM by pid, SIGKILL if it has not exited after the grace period; always reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _linux_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _linux_prctl()  # looked up here: the child between fork and exec only calls it
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the server between fork and exec: Linux sends it SIGKILL if the bench dies without
    running its cleanup (kill -9, OOM), so no server outlives the bench."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except FileNotFoundError:
        return "(no log written)"


def _handshake(port: int, send: bytes, expect: bytes) -> bool:
    """One request/reply on a fresh loopback connection; False if refused or answered otherwise."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            if send:
                s.sendall(send)
            got = b""
            while b"\n" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            return got.startswith(expect)
    except OSError:
        return False


def _start(name: str, argv: list[str], log: Path, ready) -> subprocess.Popen:
    """Start argv in its own session and wait until `ready()` is true; stopped again if not."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)
    try:
        end = time.monotonic() + _START_TIMEOUT
        while not ready():
            if proc.poll() is not None:
                raise ServerError(f"{name} exited with status {proc.returncode} at start; "
                                  f"its log ({log}):\n{_tail(log)}")
            if time.monotonic() > end:
                raise ServerError(f"{name} not ready after {_START_TIMEOUT:.0f} s; its log ({log}):\n{_tail(log)}")
            time.sleep(0.02)
    except BaseException:
        stop(proc)
        raise
    return proc


def _start_on_free_port(name: str, command, log: Path, ready_on) -> tuple[subprocess.Popen, int]:
    """`command(port)` started on a free port; retried when another process took the port
    between our probe and the server's bind."""
    for attempt in range(3):
        port = free_port()
        try:
            return _start(name, command(port), log, lambda: ready_on(port)), port
        except ServerError:
            if attempt == 2 or "address already in use" not in _tail(log).lower():
                raise
    raise AssertionError("unreachable")


def _require(name: str) -> str:
    exe = binary(name)
    if exe is None:
        raise ServerError(f"{BINARIES[name]} not found on PATH, /usr/bin or /usr/sbin: install it "
                          f"with `{INSTALL}`")
    return exe


@contextlib.contextmanager
def _serving(name: str, workdir: Path, command, ready_on):
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    proc, port = _start_on_free_port(BINARIES[name], command, log, ready_on)
    try:
        yield Server(name, proc.pid, "127.0.0.1", port, workdir)
    finally:
        stop(proc)


def redis(workdir: Path):
    """redis-server on 127.0.0.1: AOF with fsync every second, no RDB snapshots."""
    exe = _require("redis")
    return _serving("redis", workdir, lambda port: [
        exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir),
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        "--daemonize", "no", "--logfile", str(workdir / "redis.log")],
        lambda port: _handshake(port, b"PING\r\n", b"+PONG"))


def nats(workdir: Path):
    """nats-server on 127.0.0.1 with JetStream, its store under `workdir`. JetStream is enabled
    before the client listener accepts, so the server's INFO greeting means ready."""
    exe = _require("nats")
    return _serving("nats", workdir, lambda port: [
        exe, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(workdir / "jetstream"),
        "-l", str(workdir / "nats.log")],
        lambda port: _handshake(port, b"", b"INFO "))
