"""Tickerplant settings; the defaults here are the only ones."""
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from schemas.settings import Settings, StackSettings
from tickerplant.clock import known_zone


class EodSettings(Settings):
    time: str = Field("17:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")  # local roll time HH:MM
    tz: str = "America/New_York"

    _zone = field_validator("tz")(known_zone)


class CurveSettings(Settings):
    """[curve]: ZeroMQ CURVE on every endpoint of the stack (tickerplant/curve.py). Off by
    default: loopback without keys. `tickstack keys` makes the files and prints these lines.
    A client host needs client_secret_file and server_public_file; a server host needs
    server_secret_file and the authorized client keys."""
    enabled: bool = False
    server_secret_file: Path | None = None    # the server keypair (.key_secret, mode 0600)
    server_public_file: Path | None = None    # the server's public key: what clients trust
    client_secret_file: Path | None = None    # the client keypair (.key_secret, mode 0600)
    client_public_file: Path | None = None    # a client key the servers accept
    authorized_clients_dir: Path | None = None  # every *.key here is an accepted client key


class TickerplantSettings(Settings):
    """The TP's sockets and policies; clients (feeds, subscribers) read its endpoints."""
    ingest: str = "tcp://127.0.0.1:5010"   # ROUTER: feeds send batches, get acks/errors back
    pub: str = "tcp://127.0.0.1:5011"      # PUB: fan-out to subscribers
    ctl: str = "tcp://127.0.0.1:5012"      # ROUTER (clients speak REQ): sub handshake, status, eod, stop
    mode: Literal["immediate", "batched"] = "immediate"  # zero-latency or timer publish
    batch_ms: int = Field(100, ge=1)       # publish interval in batched mode
    pub_hwm: int = Field(100_000, ge=100)  # per-subscriber queue in messages at most; beyond it, drop + log catch-up
    # per-subscriber queue in bytes: the queue holds pub_queue_bytes // pub_message_bytes
    # messages (at most pub_hwm), and each published message holds at most pub_message_bytes
    pub_queue_bytes: int = Field(128 << 20, ge=1 << 20)
    # the largest message the TP publishes: a loop's payloads of one table go out together as
    # one message up to this size, counting 128 bytes per frame (a single larger payload goes
    # alone; our feeds never send one). Feeds split their messages to fit it.
    pub_message_bytes: int = Field(1 << 20, ge=4096)
    heartbeat_ms: int = Field(500, ge=10)
    max_message_bytes: int = Field(256 << 20, ge=1024)
    ctl_max_bytes: int = Field(1 << 20, ge=1024)  # a control frame over this: ZeroMQ drops the peer
    loop_msgs: int = Field(4096, ge=1)     # ingest messages taken per loop before logging/publishing
    fsync: Literal["never", "eod", "always"] = "eod"
    # ROUTER serving log records over the network (tickerplant/logserve.py), for subscribers
    # that cannot read the log file (another host); None: not served
    log_serve: str | None = None
    log_serve_max_bytes: int = Field(4096, ge=256)        # a request frame over this: refused
    log_chunk_bytes: int = Field(4 << 20, ge=64 << 10)    # payload bytes per reply, at most

    def queue_messages(self, message_bytes: int | None = None) -> int:
        """The high-water mark, in messages, that holds a subscriber's queue to pub_queue_bytes
        when each message is at most `message_bytes` (default pub_message_bytes)."""
        size = message_bytes or self.pub_message_bytes
        return max(1, min(self.pub_hwm, self.pub_queue_bytes // size))


class HealthSettings(Settings):
    """Every process's heartbeat (a `heartbeat` row through the TP) and its Prometheus metrics
    endpoint (tickerplant/health.py). One section, shared by all processes."""
    heartbeat_s: float = Field(5.0, gt=0)   # a heartbeat row per process this often
    quiet_after: int = Field(3, ge=1)       # `tickstack status`: quiet after this many silent intervals
    metrics: bool = True                    # serve /metrics over HTTP
    metrics_host: str = "127.0.0.1"         # loopback unless set: the endpoint is unauthenticated
    # process name (tp, rdb, venue-A, strategy-pairs, ...) -> port; absent or 0: a free port,
    # written to <home>/run/NAME.metrics either way
    metrics_ports: dict[str, Annotated[int, Field(ge=0, le=65535)]] = {}


class TickerplantConfig(StackSettings):
    """What `python -m tickerplant` reads."""
    tickerplant: TickerplantSettings = TickerplantSettings()
    eod: EodSettings = EodSettings()
    health: HealthSettings = HealthSettings()
    curve: CurveSettings = CurveSettings()
