"""CURVE on the stack's endpoints: keys, server and client sockets, and counting who is refused.

    tickstack keys                        # make_keys(<home>/keys): prints the [curve] lines
    secure_server(sock, curve)            # before bind: a CURVE server whose clients ZAP checks
    secure_client(sock, curve)            # before connect: a CURVE client of the stack's server key
    refused(ctx)                          # {"auth_denied": n, ...} refused handshakes so far

Disabled (the default), both helpers do nothing: sockets stay plain (ZeroMQ's NULL mechanism),
as on loopback. Enabled, every bound socket is a CURVE server with the server keypair, and a
connecting peer must (1) speak CURVE (a plain socket fails the handshake: mechanism mismatch),
(2) know the server's public key (else its HELLO does not decrypt), and (3) hold a client key
whose public half is in `authorized_clients_dir` (or is `client_public_file`): ZAP denies any
other. All three are refused by ZeroMQ during the handshake, before a single message reaches the
socket, and each refusal is counted from the server socket's monitor events
(EVENT_HANDSHAKE_FAILED_AUTH: ZAP denied; _PROTOCOL: no CURVE or a wrong server key; _NO_DETAIL:
the peer hung up mid-handshake). Each attempt counts once, and libzmq decides who retries: a
wrong server key retries, a ZAP denial gives up. A plain peer is a race: if the server sees the
mismatch first it counts _PROTOCOL and the peer retries; if the peer does, it gives up for good
and the server counts one _NO_DETAIL.

ZAP is per ZeroMQ context: the first server socket of a context starts one authenticator thread
and one monitor thread for it (`Guard`); later ones add their keys and monitors. Setup happens
only when a socket is made, never per message. Key files are zmq.auth's certificate format
(`*.key` public, `*.key_secret` both halves; secret files mode 0600).
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
from collections import Counter
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import parse_monitor_message

from tickerplant.config import CurveSettings

__all__ = ["CurveSettings", "make_keys", "secure_server", "secure_client", "refused", "release",
           "Guard", "config_lines"]

log = logging.getLogger("curve")

_FAILED = {int(zmq.EVENT_HANDSHAKE_FAILED_AUTH): "auth",
           int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL): "protocol",
           int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL): "no_detail"}
_EVENTS = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | \
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
_guards: dict[int, "Guard"] = {}
_guards_lock = threading.Lock()


def make_keys(directory: str | Path) -> dict[str, Path]:
    """A server keypair and a client keypair in `directory` (secret files 0600), and the client's
    public key in `directory`/authorized; returns the [curve] settings that use them. Refuses to
    overwrite existing keys: every client holding the old server key would be locked out."""
    d = Path(directory).expanduser().resolve()
    for name in ("server", "client"):
        for suffix in (".key", ".key_secret"):
            if (d / (name + suffix)).exists():
                raise FileExistsError(f"{d / (name + suffix)} exists; remove the old keys first "
                                      "(clients holding the old server key will be refused) or "
                                      "pass another --dir")
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    files = {}
    for name in ("server", "client"):
        old = os.umask(0o077)  # the secret file is never readable by others, not even briefly
        try:
            public, secret = zmq.auth.create_certificates(d, name)
        finally:
            os.umask(old)
        os.chmod(secret, 0o600)
        os.chmod(public, 0o644)
        files[f"{name}_public_file"], files[f"{name}_secret_file"] = Path(public), Path(secret)
    authorized = d / "authorized"
    authorized.mkdir(exist_ok=True)
    shutil.copy(files["client_public_file"], authorized / "client.key")
    files["authorized_clients_dir"] = authorized
    return files


def config_lines(files: dict[str, Path]) -> str:
    """The [curve] section that enables CURVE with `files` (what `make_keys` returned)."""
    lines = ["[curve]", "enabled = true"]
    lines += [f'{k} = "{v}"' for k, v in files.items()]
    return "\n".join(lines)


def _keypair(public_file: Path | None, secret_file: Path | None, what: str) -> tuple[bytes, bytes]:
    if secret_file is None:
        raise ValueError(f"[curve] is enabled but {what}_secret_file is not set; run `tickstack keys` "
                         "and add the lines it prints to the config")
    try:
        public, secret = zmq.auth.load_certificate(secret_file)
        if public_file is not None:
            public = zmq.auth.load_certificate(public_file)[0]
    except (OSError, ValueError) as e:
        raise ValueError(f"[curve] {what} key: {e}; run `tickstack keys` or fix the path") from None
    if secret is None:
        raise ValueError(f"[curve] {what}_secret_file {secret_file} holds no secret key "
                         "(it is a public .key file; use the .key_secret one)")
    return public, secret


def server_public(curve: CurveSettings) -> bytes:
    """The server's public key, which every client needs."""
    f = curve.server_public_file or curve.server_secret_file
    if f is None:
        raise ValueError("[curve] is enabled but server_public_file is not set; copy the server's "
                         "public key file here and name it in the config")
    try:
        return zmq.auth.load_certificate(f)[0]
    except (OSError, ValueError) as e:
        raise ValueError(f"[curve] server public key: {e}") from None


def secure_server(sock: zmq.Socket, curve: CurveSettings | None) -> zmq.Socket:
    """Make `sock` (not yet bound) a CURVE server whose peers ZAP checks and whose refusals are
    counted in its context's `refused()`. Nothing when CURVE is disabled."""
    if curve is None or not curve.enabled:
        return sock
    public, secret = _keypair(curve.server_public_file, curve.server_secret_file, "server")
    guard = Guard.of(sock.context)
    guard.authorize(curve)
    sock.setsockopt(zmq.ZAP_DOMAIN, b"tickstack")
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    guard.watch(sock)
    return sock


def secure_client(sock: zmq.Socket, curve: CurveSettings | None,
                  server_key: bytes | None = None) -> zmq.Socket:
    """Make `sock` (not yet connected) a CURVE client with the client keypair, trusting the
    server key `server_key` (default: the configured one). Nothing when CURVE is disabled."""
    if curve is None or not curve.enabled:
        return sock
    public, secret = _keypair(curve.client_public_file, curve.client_secret_file, "client")
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_key or server_public(curve)
    return sock


def refused(ctx: zmq.Context | None = None) -> dict[str, int]:
    """Handshakes refused so far on the CURVE servers of `ctx` (default: the global context):
    `auth_denied` in all, and by cause (`auth_denied_auth`: ZAP denied the client key;
    `auth_denied_protocol`: no CURVE, or a wrong server key; `auth_denied_no_detail`: the peer
    hung up mid-handshake, e.g. a plain client that saw the mismatch first). Empty when CURVE is
    off."""
    g = _guards.get(id(ctx or zmq.Context.instance()))
    return g.snapshot() if g is not None else {}


def release(ctx: zmq.Context) -> None:
    """Stop `ctx`'s authenticator and monitor threads (their sockets would keep ctx.term() waiting
    forever). For a context that is about to be terminated; its CURVE servers are closed."""
    with _guards_lock:
        g = _guards.pop(id(ctx), None)
    if g is not None and g.ctx is ctx:
        g.stop()


class Guard:
    """A context's ZAP authenticator and the monitor thread counting refused handshakes."""

    def __init__(self, ctx: zmq.Context):
        self.ctx = ctx
        self.counters: Counter = Counter()
        self.last_refused = ""
        self.auth = ThreadAuthenticator(ctx, log=logging.getLogger("curve.zap"))
        self.auth.start()
        self.auth.certs["tickstack"] = {}
        self._lock = threading.Lock()
        self._pending: list[str] = []          # monitor endpoints the thread has not opened yet
        self._n = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="curve-monitor", daemon=True)
        self._thread.start()

    @classmethod
    def of(cls, ctx: zmq.Context) -> "Guard":
        with _guards_lock:
            g = _guards.get(id(ctx))
            if g is None or g.ctx is not ctx:
                g = _guards[id(ctx)] = cls(ctx)
            return g

    def authorize(self, curve: CurveSettings) -> None:
        """Accept the client keys of `curve`: every *.key in authorized_clients_dir, and
        client_public_file."""
        keys: dict = {}
        if curve.authorized_clients_dir is not None:
            d = Path(curve.authorized_clients_dir)
            if not d.is_dir():
                raise ValueError(f"[curve] authorized_clients_dir {d} is not a directory; run "
                                 "`tickstack keys` or create it and put the clients' .key files in it")
            keys.update(zmq.auth.load_certificates(d))
        if curve.client_public_file is not None:
            keys[zmq.auth.load_certificate(curve.client_public_file)[0]] = True
        if not keys:
            raise ValueError("[curve] is enabled but no client key is authorized: set "
                             "authorized_clients_dir or client_public_file")
        # the authenticator thread reads this dict; replacing it whole is atomic
        self.auth.certs["tickstack"] = {**self.auth.certs.get("tickstack", {}), **keys}

    def watch(self, sock: zmq.Socket) -> None:
        """Count the refused handshakes of `sock` (called in the socket's own thread, at setup)."""
        with self._lock:
            self._n += 1
            endpoint = f"inproc://curve-monitor-{id(self):x}-{self._n}"
            self._pending.append(endpoint)
        sock.monitor(endpoint, _EVENTS)

    def stop(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.auth.stop()

    def snapshot(self) -> dict[str, int]:
        return dict(self.counters)

    def _run(self) -> None:
        """Read every watched socket's monitor events (sockets of this thread only)."""
        poller = zmq.Poller()
        socks: list[zmq.Socket] = []
        while not self._stop:
            with self._lock:
                pending, self._pending = self._pending, []
            for endpoint in pending:
                m = self.ctx.socket(zmq.PAIR)
                m.setsockopt(zmq.LINGER, 0)
                m.connect(endpoint)
                poller.register(m, zmq.POLLIN)
                socks.append(m)
            try:
                ready = dict(poller.poll(100)) if socks else {}
            except zmq.ContextTerminated:
                break
            if not socks:
                threading.Event().wait(0.05)
            for m in ready:
                try:
                    msg = parse_monitor_message(m.recv_multipart(zmq.NOBLOCK))
                except (zmq.Again, ValueError):
                    continue
                except zmq.ContextTerminated:
                    return
                cause = _FAILED.get(int(msg["event"]))
                if cause is None:
                    continue
                self.counters["auth_denied"] += 1
                self.counters[f"auth_denied_{cause}"] += 1
                self.last_refused = f"{cause} ({msg['value']}) on {msg['endpoint']!r}"
                log.warning("refused a handshake on %s: %s", msg["endpoint"], cause)
        for m in socks:
            m.close(0)
