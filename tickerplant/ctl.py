"""Requests to the tickerplant's control socket (REQ; a fresh socket per request, so a lost
reply can never wedge the REQ state machine)."""
from __future__ import annotations

import json

import zmq


class Unreachable(ConnectionError):
    """The process did not answer in time."""


def request(endpoint: str, cmd: str, timeout: float = 5.0, **fields) -> dict:
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    try:
        s.connect(endpoint)
        s.send(json.dumps({"cmd": cmd, **fields}).encode())
        if not s.poll(int(timeout * 1000)):
            raise Unreachable(f"no answer from {endpoint} in {timeout}s: is the tickerplant "
                              "running? (`tickstack status`)")
        reply = json.loads(s.recv())
    finally:
        s.close(0)
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return reply
