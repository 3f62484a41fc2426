"""The FIX 4.4 layer on quickfix, shared by the gateway (initiator) and the venues (acceptor).

    session_settings  quickfix SessionSettings from typed arguments (file store, our dictionary)
    convert           gateway.model objects <-> quickfix messages; MessageError on bad input
    app               FixApp: callbacks that only validate, convert and hand over (never raise)
    inbox             Inbox: a thread-safe queue a single consumer polls beside ZeroMQ sockets
    endpoint          Endpoint: a threaded acceptor/initiator + FixApp + Inbox, started together
    FIX44.xml         our FIX 4.4 data dictionary (a subset: session messages + order flow)

quickfix comes from the `quickfix-tls` wheel (import name `quickfix`); see pyproject.toml.
"""
from gateway.fix.app import (CLIENT_ACCEPTS, VENUE_ACCEPTS, BusinessReject, FixApp, Heartbeat, LoggedOn,
                             LoggedOut, Received, SessionReject)
from gateway.fix.convert import (MessageError, fields_of, format_price, format_time, from_fields, from_fix,
                                 parse_time, to_fix)
from gateway.fix.endpoint import Endpoint
from gateway.fix.inbox import Inbox
from gateway.fix.session_settings import (DICTIONARY, SessionSpec, acceptor_settings, acceptor_text,
                                          initiator_settings, initiator_text)

__all__ = ["CLIENT_ACCEPTS", "VENUE_ACCEPTS", "BusinessReject", "FixApp", "Heartbeat", "LoggedOn", "LoggedOut",
           "Received", "SessionReject", "MessageError", "fields_of", "format_price", "format_time",
           "from_fields", "from_fix",
           "parse_time", "to_fix", "Endpoint", "Inbox", "DICTIONARY", "SessionSpec", "acceptor_settings",
           "acceptor_text", "initiator_settings", "initiator_text"]
