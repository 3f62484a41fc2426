"""The tickerplant's protocol (kdb-tick's u.q): what feeds, subscribers, the gateway and the TP
say to each other, in one place. Endpoints come from `TickerplantSettings`.

    ingest  ROUTER  a feed's DEALER sends one codec batch (schemas/codec.py) per frame, stamped
                    with its feed id and fseq. Replies: [ACK, ack(feed, last fseq logged)] once per
                    TP loop per feed; [ERR, ack(feed, fseq), text] for a refused message, which
                    is never logged or published. [HELLO, feed_id(feed)] asks for the feed's last
                    logged fseq, so a restarted feed continues its numbering.
    pub     PUB     data: [topic(table) + one META per payload, payload, ...], META = (date as
                    yyyymmdd, seq, previous seq of the same table): a jump in `prev` is a gap.
                    control: [HB_TOPIC, json {date, seq, last}], [EOD_TOPIC, json {date, seq,
                    last}], [HELLO_TOPIC, token, META]. PUB drops silently for a subscriber whose
                    queue is full, and a new SUB's subscription reaches the PUB some time after
                    it connects (ZeroMQ's slow joiner): the subscriber handles both with the log.
    ctl     REQ/REP JSON {"cmd": ...} -> JSON reply; `control()` is its client. Commands:
                    sub {tables?, token} (day, log, log_id = [device, inode], seq, schemas; then
                    HELLO_TOPIC with the token is published), status, eod, stop.
    log_serve  ROUTER, optional: the log's records by (date, from_seq, to_seq, tables), in
                    chunks; see tickerplant/logserve.py.
With [curve] on, every socket above is a CURVE server and every client passes `curve=` (the
CurveSettings) so that `secure_client` makes it a CURVE client; see tickerplant/curve.py.

Days travel as yyyymmdd ints; the log of day D is `tp_YYYYMMDD.log` in the TP's log directory.
`request()` is the one request client of the stack (control and query endpoints alike): a fresh
REQ socket per request, so a lost reply can never wedge the REQ state machine.
"""
from __future__ import annotations

import datetime as dt
import json
import struct
from pathlib import Path

import zmq

from tickerplant.curve import secure_client

META = struct.Struct("<IQQ")        # date yyyymmdd, seq, previous seq of the same table
ACK, ERR, HELLO = b"ack", b"err", b"hello"
_ACK = struct.Struct("<IQ")         # feed id, fseq
_FEED = struct.Struct("<I")
HELLO_TOPIC, HB_TOPIC, EOD_TOPIC = b"!hello", b"!hb", b"!eod"
CONTROL_PREFIX = b"!"               # every control topic starts with it; a SUB always takes them
NOBLOCK, SNDMORE = int(zmq.NOBLOCK), int(zmq.SNDMORE)  # plain ints: pyzmq's enum flags cost per call

_TOPICS: dict[str, bytes] = {}


def topic(table: str) -> bytes:
    """The PUB/SUB topic of a table's data messages (a SUB filters on this prefix)."""
    t = _TOPICS.get(table)
    if t is None:
        t = _TOPICS[table] = table.encode() + b"\0"
    return t


def ack(feed: int, fseq: int) -> bytes:
    return _ACK.pack(feed, fseq)


def parse_ack(frame: bytes) -> tuple[int, int]:
    """(feed, fseq); struct.error if the frame is not one."""
    return _ACK.unpack(frame)


def feed_id(feed: int) -> bytes:
    return _FEED.pack(feed)


def parse_feed_id(frame: bytes) -> int | None:
    return _FEED.unpack(frame)[0] if len(frame) == _FEED.size else None


def ymd(day: dt.date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


def date_of(n: int) -> dt.date:
    return dt.date(n // 10000, n // 100 % 100, n % 100)


def log_path(directory: str | Path, day: dt.date) -> Path:
    return Path(directory) / f"tp_{day:%Y%m%d}.log"


def log_day(path: str | Path) -> dt.date:
    return dt.datetime.strptime(Path(path).stem[3:11], "%Y%m%d").date()


def news(topic_: bytes, day: dt.date, seq: int, last: dict[str, int]) -> list[bytes]:
    """A heartbeat or end-of-day message: the day, the last seq and each table's last seq."""
    return [topic_, json.dumps({"date": day.isoformat(), "seq": seq, "last": last}).encode()]


def parse_news(frame: bytes) -> tuple[dt.date, int, dict[str, int]]:
    info = json.loads(frame)
    return dt.date.fromisoformat(info["date"]), int(info["seq"]), info["last"]


def split_envelope(frames: list) -> tuple[list | None, list]:
    """(envelope, body) of a message a ROUTER received from a REQ-speaking peer: the envelope is
    the routing ids up to and including the first empty frame. (None, frames) without one."""
    for i in range(1, len(frames)):
        if not len(frames[i]):
            return frames[: i + 1], frames[i + 1:]
    return None, frames


class Unreachable(ConnectionError):
    """The process did not answer in time."""


class ControlError(RuntimeError):
    """The process answered with an error; the text says what to do."""


def request(endpoint: str, frames: list[bytes], timeout: float = 5.0,
            what: str = "the process", curve=None) -> list[zmq.Frame]:
    """Send one request, return the reply's frames (zero-copy). Unreachable if nothing answers
    within `timeout` seconds. `curve`: the [curve] settings (CurveSettings) when the endpoint is
    a CURVE server (a plain request to it is refused during the handshake: no answer)."""
    s = zmq.Context.instance().socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    try:
        secure_client(s, curve)
        s.connect(endpoint)
        s.send_multipart(frames)
        if not s.poll(int(timeout * 1000)):
            raise Unreachable(f"no answer from {endpoint} in {timeout:g}s: is {what} running? "
                              "(`tickstack status`)")
        return s.recv_multipart(copy=False)
    except zmq.ZMQError as e:
        raise Unreachable(f"cannot reach {endpoint}: {e}") from None
    finally:
        s.close(0)


def control(endpoint: str, cmd: str, timeout: float = 5.0, curve=None, **fields) -> dict:
    """A control command to the TP's ctl socket; its JSON reply, or ControlError."""
    frames = request(endpoint, [json.dumps({"cmd": cmd, **fields}).encode()], timeout,
                     what="the tickerplant", curve=curve)
    reply = json.loads(frames[0].bytes)
    if "error" in reply:
        raise ControlError(reply["error"])
    return reply
