"""CURVE on the tickerplant's endpoints, against a real TP process: a client holding the stack's
client key publishes, subscribes and asks for status as usual; a plain client and a client with
an unknown key are refused during the handshake (nothing they send is logged) and each refusal
is counted in the TP's status. Also `tickstack keys`: the files, their modes, the lines printed."""
from __future__ import annotations

import os
import stat

import pytest
import zmq
import zmq.auth
from click.testing import CliRunner

from helpers import trades, wait_for
from ops.cli import cli
from schemas.codec import encode
from tickerplant import protocol as p
from tickerplant.curve import make_keys, secure_client
from tickerplant.subscriber import Subscriber

pytestmark = pytest.mark.process


@pytest.fixture
def curve_stack(make_stack, tmp_path):
    files = make_keys(tmp_path / "keys")
    cfg, procs = make_stack(curve={"enabled": True, **{k: str(v) for k, v in files.items()}})
    procs.start("tickerplant", name="tp")
    wait_for(lambda: _status(cfg), timeout=20, what="the CURVE tickerplant's ctl (with the key)")
    return cfg, procs, files


def _status(cfg, curve="config"):
    try:
        return p.control(cfg.tickerplant.ctl, "status", timeout=0.5,
                         curve=cfg.curve if curve == "config" else curve)
    except p.Unreachable:
        return None


def _dealer(cfg, curve=None, server_key=None):
    d = zmq.Context.instance().socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        secure_client(d, curve, server_key)
    d.connect(cfg.tickerplant.ingest)
    return d


def _publish(d, reg, feed: int, n: int, wait_s: float = 2.0) -> bytes | None:
    """Send `n` messages of 5 rows as `feed`; the TP's first answer, or None if none in `wait_s`."""
    for i, cols in enumerate(trades(n, 5)):
        try:  # a refused peer may leave the DEALER without a pipe: a blocking send would hang
            d.send(encode(reg["trade"], cols, feed=feed, fseq=i + 1), zmq.NOBLOCK)
        except zmq.Again:
            break
    return d.recv_multipart()[0] if d.poll(int(wait_s * 1000)) else None


def test_keys_command_writes_private_keys_and_prints_the_config(tmp_path):
    out = CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), "keys"])
    assert out.exit_code == 0, out.output
    d = (tmp_path / "home" / "keys").resolve()
    for name in ("server", "client"):
        assert stat.S_IMODE((d / f"{name}.key_secret").stat().st_mode) == 0o600
        pub, sec = zmq.auth.load_certificate(d / f"{name}.key_secret")
        assert sec is not None and zmq.auth.load_certificate(d / f"{name}.key")[0] == pub
    assert (d / "authorized" / "client.key").read_bytes() == (d / "client.key").read_bytes()
    assert "[curve]" in out.output and "enabled = true" in out.output
    assert f'server_secret_file = "{d / "server.key_secret"}"' in out.output
    again = CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), "keys"])
    assert again.exit_code != 0 and "exists" in again.output  # never overwrites keys in use


def test_curve_tp_refuses_clients_without_the_key_and_counts_them(curve_stack, tmp_path):
    cfg, procs, files = curve_stack
    reg = cfg.registry()
    assert _status(cfg, curve=None) is None  # a plain request never gets an answer

    plain = _dealer(cfg)
    wrong_keys = zmq.auth.create_certificates(tmp_path, "stranger")  # a keypair never authorized
    stranger = cfg.curve.model_copy(update={"client_secret_file": wrong_keys[1],
                                            "client_public_file": None})
    unknown = _dealer(cfg, stranger)
    good = _dealer(cfg, cfg.curve)
    try:
        assert _publish(plain, reg, feed=3, n=5) is None
        assert _publish(unknown, reg, feed=4, n=5) is None
        assert _publish(good, reg, feed=5, n=5, wait_s=20) == p.ACK
        last = {}

        def counted():
            last.update(_status(cfg) or {})
            c = last.get("counters", {})
            # each plain client (the status request and `plain`) is refused at least once, as
            # protocol or no_detail depending on which end saw the mismatch first (curve.py)
            return c.get("auth_denied_auth", 0) > 0 and c.get("rows", 0) >= 25 \
                and c.get("auth_denied_protocol", 0) + c.get("auth_denied_no_detail", 0) >= 2 and dict(last)
        st = wait_for(counted, timeout=20, what=lambda: f"both refusals counted and the good rows logged; "
                      f"last status: {last.get('counters')}")
        assert st["counters"]["auth_denied"] >= 3
        assert st["feeds"] == {"5": 5}           # only the client with the key got anything in
        assert st["counters"]["rows"] == 25
    finally:
        for d in (plain, unknown, good):
            d.close(0)


def test_feed_and_subscriber_with_the_key_flow_normally(curve_stack):
    from feedhandlers.base import Feed
    cfg, procs, files = curve_stack
    reg = cfg.registry()
    feed = Feed(cfg.tickerplant, 21, reg, curve=cfg.curve)
    try:
        for cols in trades(20, 10):
            feed.publish("trade", cols)
        assert feed.wait_acked(timeout=10)
        sub = Subscriber(cfg.tickerplant, ["trade"], registry=reg, curve=cfg.curve, connect_timeout=10)
        got, seqs = 0, []
        for ev in sub:                       # late join: the day so far, then live
            got += ev.batch.num_rows
            seqs.append(ev.seq)
            if got == 200:
                for cols in trades(5, 10, start=200):
                    feed.publish("trade", cols)
            if got >= 250:
                break
        sub.close()
        assert got == 250 and seqs == sorted(set(seqs))
        st = _status(cfg)
        assert st["counters"]["rows"] == 250 and st["counters"].get("auth_denied", 0) == 0
    finally:
        feed.close()


def test_query_endpoint_with_curve_answers_the_key_and_refuses_the_rest(tmp_path):
    from hdb.server import QueryServer, query
    from hdb.sql import Engine, QueryError
    from tickerplant.config import CurveSettings
    files = make_keys(tmp_path / "keys")
    curve = CurveSettings(enabled=True, **files)
    srv = QueryServer("tcp://127.0.0.1:*", Engine(hdb_dir=tmp_path / "hdb"), workers=1,
                      curve=curve).start()
    try:
        assert query(srv.endpoint, "select 41 + 1 as x", timeout=10, curve=curve).table.to_pylist() == [{"x": 42}]
        with pytest.raises(QueryError, match="no answer"):
            query(srv.endpoint, "select 1", timeout=1)             # plain: refused, no answer
        plain = zmq.Context.instance().socket(zmq.DEALER)      # retries until closed: counted
        plain.setsockopt(zmq.LINGER, 0)
        plain.connect(srv.endpoint)
        try:
            # the plain request and `plain`, as protocol or no_detail (see curve.py)
            wait_for(lambda: srv.counters().get("auth_denied_protocol", 0)
                     + srv.counters().get("auth_denied_no_detail", 0) >= 2, timeout=20,
                     what=lambda: f"the plain clients' refusals counted; counters: {srv.counters()}")
        finally:
            plain.close(0)
        assert srv.counters()["ok"] == 1
    finally:
        srv.stop()  # its own context: terminates only if the CURVE guard let go of it


def test_config_check_judges_the_curve_keys(tmp_path):
    from ops.configtool import check_data
    files = {k: str(v) for k, v in make_keys(tmp_path / "keys").items()}
    assert check_data({"curve": {"enabled": True, **files}}) == []
    os.chmod(files["client_secret_file"], 0o644)
    bad = {"curve": {**files, "enabled": True, "server_secret_file": str(tmp_path / "nope"),
                     "server_public_file": files["client_public_file"]}}
    keys = {p.key: p.message for p in check_data(bad)}
    assert "cannot read a key" in keys["curve.server_secret_file"]
    assert "chmod 600" in keys["curve.client_secret_file"]
    assert check_data({"curve": {"enabled": False, "server_secret_file": "/nowhere"}}) == []
    lone = {p.key for p in check_data({"curve": {"enabled": True}})}
    assert lone == {"curve"}                              # on, but no keys at all
