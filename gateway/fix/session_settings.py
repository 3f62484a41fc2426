"""quickfix SessionSettings for our FIX 4.4 sessions, built from typed arguments.

Choices that hold for every session of this stack (not settings, on purpose):
  * FIX.4.4 with our own data dictionary (FIX44.xml beside this module), UseDataDictionary=Y:
    quickfix validates every incoming message against it before the application sees it.
  * File store and file log under the caller's directory: sequence numbers and sent messages
    survive a crash, so a peer that comes back is resynchronised by ResendRequest / gap fill.
  * ResetOnLogon/ResetOnLogout/ResetOnDisconnect=N by default, for both roles: a gateway
    killed with kill -9 comes back with its sequence numbers and the venue resends what it
    missed (fills included). Resetting would silently drop those messages. `reset_on_logon`
    exists for tests and deliberate day starts, not for recovery.
  * NonStopSession=Y: no session schedule; the stack's own start/stop is the schedule.
  * SocketNodelay=Y: orders are small, latency matters, Nagle must not batch them.
  * Timestamps with microsecond precision (TimestampPrecision=6) in SendingTime.

Network: an initiator connects to the host it is given (127.0.0.1 by default in our
settings). quickfix 1.16's acceptor has no bind-address setting: it listens on every
interface. `allowed_remote` (default loopback only) becomes AllowedRemoteAddresses, so a
connection from any other address is closed before it can log on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import quickfix as fix

DICTIONARY = Path(__file__).with_name("FIX44.xml")
BEGIN_STRING = "FIX.4.4"
LOOPBACK = ("127.0.0.1",)
_COMP_ID = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """One FIX session as seen from our side: we are `sender`, the peer is `target`.
    `host`/`port` are where an initiator connects; an acceptor ignores them."""
    sender: str
    target: str
    host: str = "127.0.0.1"
    port: int = 0


def _flag(v: bool) -> str:
    return "Y" if v else "N"


def _common(directory: Path, reset_on_logon: bool) -> dict[str, str]:
    directory = Path(directory)
    (directory / "store").mkdir(parents=True, exist_ok=True)
    (directory / "log").mkdir(parents=True, exist_ok=True)
    return {
        "BeginString": BEGIN_STRING,
        "FileStorePath": str(directory / "store"),
        "FileLogPath": str(directory / "log"),
        "UseDataDictionary": "Y",
        "DataDictionary": str(DICTIONARY),
        "ValidateUserDefinedFields": "Y",
        "AllowUnknownMsgFields": "N",
        "ValidateFieldsHaveValues": "Y",
        "ResetOnLogon": _flag(reset_on_logon),
        "ResetOnLogout": "N",
        "ResetOnDisconnect": "N",
        "PersistMessages": "Y",
        "NonStopSession": "Y",
        "SocketNodelay": "Y",
        "TimestampPrecision": "6",
        "LogoutTimeout": "2",
    }


def _render(default: dict[str, str], sessions: list[dict[str, str]]) -> str:
    lines = ["[DEFAULT]", *(f"{k}={v}" for k, v in default.items())]
    for s in sessions:
        lines += ["", "[SESSION]", *(f"{k}={v}" for k, v in s.items())]
    return "\n".join(lines) + "\n"


def _check_id(name: str, value: str) -> str:
    if not _COMP_ID.fullmatch(value):
        raise ValueError(f"{name} {value!r} is not a usable FIX CompID: use letters, digits and _-.")
    return value


def _build(text: str) -> fix.SessionSettings:
    settings = fix.SessionSettings()
    settings.setFromString(text)
    return settings


def acceptor_text(sessions: Iterable[SessionSpec], *, port: int, directory: Path,
                  allowed_remote: Iterable[str] = LOOPBACK, reset_on_logon: bool = False) -> str:
    """The settings file text for an acceptor on `port` serving `sessions` (one per client)."""
    sessions = list(sessions)
    if not sessions:
        raise ValueError("an acceptor needs at least one session (a client CompID to accept)")
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not a TCP port")
    default = _common(directory, reset_on_logon) | {
        "ConnectionType": "acceptor",
        "SocketAcceptPort": str(port),
        "SocketReuseAddress": "Y",
    }
    allowed = ",".join(allowed_remote)
    if allowed:
        default["AllowedRemoteAddresses"] = allowed
    return _render(default, [{"SenderCompID": _check_id("SenderCompID", s.sender),
                               "TargetCompID": _check_id("TargetCompID", s.target)} for s in sessions])


def initiator_text(sessions: Iterable[SessionSpec], *, heartbeat_s: int, reconnect_s: int,
                   directory: Path, reset_on_logon: bool = False) -> str:
    """The settings file text for an initiator with one session per venue in `sessions`."""
    sessions = list(sessions)
    if not sessions:
        raise ValueError("an initiator needs at least one session (one per venue)")
    if heartbeat_s < 1 or reconnect_s < 1:
        raise ValueError("heartbeat_s and reconnect_s are whole seconds >= 1")
    default = _common(directory, reset_on_logon) | {
        "ConnectionType": "initiator",
        "HeartBtInt": str(heartbeat_s),
        "ReconnectInterval": str(reconnect_s),
        "LogonTimeout": "5",
    }
    rows = []
    for s in sessions:
        if not 0 < s.port < 65536:
            raise ValueError(f"session {s.sender}->{s.target}: port {s.port} is not a TCP port")
        rows.append({"SenderCompID": _check_id("SenderCompID", s.sender),
                     "TargetCompID": _check_id("TargetCompID", s.target),
                     "SocketConnectHost": s.host, "SocketConnectPort": str(s.port)})
    return _render(default, rows)


def acceptor_settings(sessions: Iterable[SessionSpec], *, port: int, directory: Path,
                      allowed_remote: Iterable[str] = LOOPBACK,
                      reset_on_logon: bool = False) -> fix.SessionSettings:
    return _build(acceptor_text(sessions, port=port, directory=directory,
                                allowed_remote=allowed_remote, reset_on_logon=reset_on_logon))


def initiator_settings(sessions: Iterable[SessionSpec], *, heartbeat_s: int, reconnect_s: int,
                       directory: Path, reset_on_logon: bool = False) -> fix.SessionSettings:
    return _build(initiator_text(sessions, heartbeat_s=heartbeat_s, reconnect_s=reconnect_s,
                                 directory=directory, reset_on_logon=reset_on_logon))
