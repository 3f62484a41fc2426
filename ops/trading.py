"""The operator's trading commands, through the gateway (the same risk path as a strategy):

    tickstack order buy|sell SYM QTY [--limit PX] [--tif day|ioc|fok|gtc] [--venue V] [--wait S]
    tickstack orders [--open] [--json]
    tickstack cancel ID            # a parent id (from `orders`) or a tag sent by the CLI
    tickstack halt [--reason R]    # kill switch: HALTED + cancel everything, confirmed by the venues
    tickstack resume [--reason R]

Each talks to the gateway's intents socket (gateway.client.OrderClient; client "cli", and
"cli-<random>" for each `order`, which listens for its order's events). A
gateway that is down is reported at once, naming the command that starts it. `order` prints
the gateway's answer, then the fills and the order's state as they come, for up to --wait
seconds (until the order is done). A denial exits with status 1 and says why (the risk code
and text).
"""
from __future__ import annotations

import json
import time
import uuid

import click

TERMINAL = {"FILLED", "CANCELED", "REJECTED", "EXPIRED"}


def _fail(msg: str) -> None:
    raise click.ClickException(msg)


def require_gateway(cfg) -> None:
    """Fail at once, naming the fix, unless the gateway's intents socket accepts connections."""
    from ops.processes import accepts, running
    endpoint = cfg.gateway.intents
    if accepts(endpoint, timeout=1.0) is not False:
        return
    pid = running(cfg, "gateway")
    if pid:
        _fail(f"gateway (pid {pid}) does not accept connections on {endpoint} (yet): it may still be "
              f"starting; see {cfg.log_dir / 'gateway.log'}")
    _fail(f"gateway is not running: `tickstack start gateway` (nothing accepts connections on {endpoint})")


def _client(cfg, mode: str = "req", timeout: float = 10.0, client: str = "cli"):
    from gateway.client import OrderClient
    require_gateway(cfg)
    return OrderClient(cfg.gateway.intents, client=client, mode=mode, timeout=timeout, curve=cfg.curve)


def _call(fn, *args, **kw) -> dict:
    from gateway.client import GatewayUnavailable
    try:
        return fn(*args, **kw)
    except GatewayUnavailable as e:
        _fail(str(e))
    except ValueError as e:                       # refused before sending: a bad argument
        _fail(str(e))


def _px(v) -> str:
    return "-" if v is None else f"{v:g}"


def _children(r: dict) -> str:
    return ", ".join(f"{c['venue']} {c['qty']}" for c in r.get("children", [])) or "nothing routed"


@click.command()
@click.argument("side", type=click.Choice(["buy", "sell"]))
@click.argument("sym")
@click.argument("qty", type=int)
@click.option("--limit", "price", type=float, help="Limit price (default: a market order).")
@click.option("--tif", type=click.Choice(["day", "ioc", "fok", "gtc"]), default="day", show_default=True)
@click.option("--venue", help="Send it to this venue (default: smart order routing).")
@click.option("--account", help="Account (default: gateway.account).")
@click.option("--strategy", default="cli", show_default=True)
@click.option("--wait", type=float, default=2.0, show_default=True, help="Seconds to show fills for.")
@click.pass_obj
def order(cfg, side, sym, qty, price, tif, venue, account, strategy, wait):
    """Send an order through the gateway (pre-trade risk, routing, FIX); print what happens."""
    # its own client id: the gateway sends a client's events to the connection it last used,
    # so two `order` commands at once must not share one
    oc = _client(cfg, mode="dealer", client=f"cli-{uuid.uuid4().hex[:8]}")
    try:
        tag = f"cli-{uuid.uuid4().hex[:16]}"
        r = _call(oc.new, sym, side, qty, price, tif=tif, venue=venue, account=account,
                  strategy=strategy, tag=tag)
        what = f"{side} {qty} {sym} " + (f"limit {price:g}" if price is not None else "market") + f" {tif}"
        if not r["ok"]:
            _fail(f"{r.get('id') or ''} {what}: denied ({r['code']}): {r['text']}".strip())
        click.echo(f"{r['id']}  {what} -> {r['status']} ({_children(r)})"
                   + (f"  {r['text']}" if r.get("text") else ""))
        status, end = r["status"], time.monotonic() + wait
        while status not in TERMINAL and time.monotonic() < end:
            for ev in oc.events(min(0.2, max(0.0, end - time.monotonic()))):
                if ev.get("id") != r["id"]:
                    continue
                if ev.get("event") == "fill":
                    click.echo(f"  fill  {ev['venue']} {ev['qty']} @ {ev['price']:g}  fee {ev['fee']:.4f}")
                elif ev.get("event") == "order" and "venue" not in ev:
                    status = ev["status"]
                    click.echo(f"  {status} {ev['cum_qty']}/{qty}" + (f" avg {ev['avg_px']:g}" if ev["cum_qty"] else "")
                               + (f"  {ev['text']}" if ev.get("text") else ""))
        if status not in TERMINAL:
            click.echo(f"  still {status} after {wait:g}s: `tickstack orders --open`, `tickstack cancel {r['id']}`")
    finally:
        oc.close()


@click.command()
@click.option("--open", "open_only", is_flag=True, help="Only orders still working.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one order (with its children) per line.")
@click.option("--limit", type=int, default=1000, show_default=True, help="The newest N orders.")
@click.pass_obj
def orders(cfg, open_only, as_json, limit):
    """The gateway's orders today: each parent with its children at the venues."""
    rows = _call(_client(cfg).orders, open=open_only, limit=limit)["orders"]
    if as_json:
        for o in rows:
            click.echo(json.dumps(o))
        return
    if not rows:
        click.echo("no orders" + (" working" if open_only else ""))
        return
    click.echo(f"{'id':18} {'tag':20} {'sym':8} {'side':4} {'qty':>8} {'price':>10} {'status':17} "
               f"{'filled':>8} {'avg':>10}  venues")
    for o in rows:
        venues = " ".join(f"{c['venue']}:{c['cum_qty']}/{c['qty']}" for c in o["children"])
        click.echo(f"{o['id']:18} {o['tag'][:20]:20} {o['sym']:8} {o['side']:4} {o['qty']:>8} "
                   f"{_px(o['price']):>10} {o['status']:17} {o['cum_qty']:>8} "
                   f"{_px(o['avg_px'] if o['cum_qty'] else None):>10}  {venues}"
                   + (f"  ({o['reason']})" if o["reason"] else ""))


@click.command()
@click.argument("order_id")
@click.pass_obj
def cancel(cfg, order_id):
    """Cancel a working order (its id from `tickstack orders`)."""
    r = _call(_client(cfg).cancel, order_id)
    if not r["ok"]:
        _fail(f"{order_id}: {r['code']}: {r['text']}")
    click.echo(f"{r['id']}: {r['text']}")


@click.command()
@click.option("--reason", default="operator", show_default=True)
@click.pass_obj
def halt(cfg, reason):
    """Kill switch: trading HALTED (cancels only) and every working order canceled, confirmed
    by the venues."""
    r = _call(_client(cfg, timeout=30.0).halt, reason)
    if not r["ok"]:
        _fail(f"{r['code']}: {r['text']}")
    click.echo(f"HALTED ({reason}): {r['text']}")


@click.command()
@click.option("--reason", default="operator", show_default=True)
@click.pass_obj
def resume(cfg, reason):
    """Back to ACTIVE trading."""
    r = _call(_client(cfg).resume, reason)
    click.echo(f"{r['state']} ({reason})")
