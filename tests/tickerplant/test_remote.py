"""A subscriber on another host: two network namespaces joined by a veth pair, the TP (CURVE on,
log served over the network) bound to its veth address in one, a subscriber in the other that
cannot see the TP's home (a tmpfs is mounted over it in the subscriber's mount namespace) and has
only the client key and the server's public key. It joins late, is made to miss messages (a
one-message queue while it pauses), and must end with every row exactly once, in the TP's log
order, all of it read from the network.

Needs root and `ip netns` (skipped, saying why, where either is missing or not permitted).
Namespaces are deleted and processes killed by pid in `finally`.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import wait_for, write_config
from tickerplant import protocol as p
from tickerplant.curve import make_keys
from tickerplant.log import scan

pytestmark = pytest.mark.process

PEER = str(Path(__file__).with_name("remote_peer.py"))


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if r.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def _can_use_netns() -> str | None:
    """None if namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root (this test runs as uid %d)" % os.geteuid()
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) to make network namespaces"
    probe = f"tsprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as e:
        return f"`ip netns add` is not permitted here ({e})"
    _ip("netns", "del", probe)
    return None


@pytest.fixture
def two_hosts():
    """(tp_ns, sub_ns, tp_addr): two namespaces and a veth pair, addresses 10.x.y.1 and .2."""
    why = _can_use_netns()
    if why:
        pytest.skip(why)
    tag = secrets.token_hex(3)
    ns = (f"ts-tp-{tag}", f"ts-sub-{tag}")
    x, y = 200 + secrets.randbelow(50), secrets.randbelow(256)
    made = []
    try:
        for n in ns:
            _ip("netns", "add", n)
            made.append(n)
        _ip("link", "add", f"vtp{tag}", "type", "veth", "peer", "name", f"vsb{tag}")
        for dev, n, host in ((f"vtp{tag}", ns[0], 1), (f"vsb{tag}", ns[1], 2)):
            _ip("link", "set", dev, "netns", n)
            _ip("-n", n, "addr", "add", f"10.{x}.{y}.{host}/24", "dev", dev)
            _ip("-n", n, "link", "set", dev, "up")
            _ip("-n", n, "link", "set", "lo", "up")
        yield ns[0], ns[1], f"10.{x}.{y}.1"
    finally:
        for n in made:  # deleting a namespace deletes its end of the veth pair, and so the pair
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=20)


def _in_ns(ns: str, *cmd: str, log: Path, hide: Path | None = None) -> subprocess.Popen:
    """`cmd` in namespace `ns` (its own mount namespace: `ip netns exec` makes one), with
    `hide` covered by an empty tmpfs there."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("TICKSTACK_CONFIG", None)
    env.pop("TICKSTACK_HOME", None)
    argv = ["ip", "netns", "exec", ns]
    if hide is not None:
        argv += ["sh", "-c", f'mount -t tmpfs tmpfs "{hide}" && exec "$0" "$@"']
    return subprocess.Popen([*argv, *cmd], stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _kill(procs: list[subprocess.Popen]) -> None:
    for pr in procs:
        if pr.poll() is None:
            os.kill(pr.pid, 9)
        pr.wait(timeout=20)


def test_subscriber_on_another_host_gets_every_row_once_over_the_network(two_hosts, tmp_path):
    tp_ns, sub_ns, addr = two_hosts
    tp_home, sub_home = tmp_path / "tp", tmp_path / "sub"
    keys = make_keys(tp_home / "keys")
    endpoints = {"ingest": f"tcp://{addr}:5010", "pub": f"tcp://{addr}:5011",
                 "ctl": f"tcp://{addr}:5012", "log_serve": f"tcp://{addr}:5013",
                 "heartbeat_ms": 100, "pub_queue_bytes": 1 << 20}   # 1 MB of 1 MB messages: hwm 1
    tp_cfg = write_config(tp_home, tickerplant=endpoints,
                          curve={"enabled": True, **{k: str(v) for k, v in keys.items()}})
    # the other host holds the client keypair and the server's public key, nothing else
    (sub_home / "keys").mkdir(parents=True)
    for f in ("client.key_secret", "server.key"):
        shutil.copy(tp_home / "keys" / f, sub_home / "keys" / f)
    sub_cfg = write_config(sub_home, tickerplant=endpoints, curve={
        "enabled": True, "client_secret_file": str(sub_home / "keys" / "client.key_secret"),
        "server_public_file": str(sub_home / "keys" / "server.key")})
    py = sys.executable
    procs: list[subprocess.Popen] = []
    out = str(sub_home / "result.json")
    try:
        procs.append(_in_ns(tp_ns, py, "-m", "tickerplant", "--config", str(tp_cfg), "--home", str(tp_home),
                            log=tmp_path / "tp.out"))

        def feed(n_msgs: int, rows: int, start: int) -> int:
            f = _in_ns(tp_ns, py, PEER, "feed", str(tp_cfg), str(n_msgs), str(rows), str(start),
                       log=tmp_path / "feed.out")
            procs.append(f)
            assert f.wait(timeout=90) == 0, (tmp_path / "feed.out").read_text()[-2000:]
            return n_msgs * rows

        n = feed(200, 50, 0)                                      # before the subscriber exists
        total = n + 1500 * 500 + 200 * 50
        sub = _in_ns(sub_ns, py, PEER, "sub", str(sub_cfg), out, str(total), log=tmp_path / "sub.out",
                     hide=tp_home)
        procs.append(sub)
        wait_for(lambda: os.path.exists(out + ".ready") or sub.poll() is not None, timeout=40,
                 what="the remote subscriber's handshake")
        assert sub.poll() is None, (tmp_path / "sub.out").read_text()[-3000:]
        n += feed(1500, 500, n)                                   # it does not read: drops
        Path(out + ".go").touch()
        n += feed(200, 50, n)                                     # live again
        assert sub.wait(timeout=90) == 0, (tmp_path / "sub.out").read_text()[-3000:]
        got = json.loads(Path(out).read_text())
        log_seqs = [seq for seq, _, _ in scan(p.log_path(tp_home / "tplog", _log_day(tp_home)), ["trade"])]
        assert got["mode"] == "network"               # the TP's file was not visible there
        assert got["counters"]["gaps"] > 0 and got["counters"]["from_network"] > 0, got["counters"]
        assert got["seqs"] == log_seqs                # every message once, in the log's order
        sizes = np.sort(np.array(got["sizes"]))
        assert len(sizes) == n == total and (sizes == np.arange(n)).all()
        assert "refused a handshake" not in (tmp_path / "tp.out").read_text()  # the key was enough
    finally:
        _kill(procs)


def _log_day(home: Path):
    logs = sorted((home / "tplog").glob("tp_????????.log"))
    return p.log_day(logs[-1])
