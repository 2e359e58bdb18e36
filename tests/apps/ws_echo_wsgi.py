# SPDX-License-Identifier: MIT
"""ws_echo.py's WebSocket echo as a plain WSGI app, for a blocking pool (gatehouse.wsgi) behind
the gateway's WebSocket-over-HTTP (adapters/uwsgi/WEBSOCKET.md): each POST of
application/websocket-events is answered at once, so no worker waits between messages.

The same paths and commands as ws_echo.py (deny, deny-response, close:, flood:, scope), the
same event log ($WS_ECHO_LOG, with ws_echo's log_event), and more for the protocol's own
features, each a text command:
  post-info          the POST's Connection-Id, its Meta-* fields and the event types it
                     carried, as JSON
  meta:<name>:<v>    answers with Set-Meta-<name>: <v>, then "meta-set"
  keepalive:<s>      answers with Keep-Alive-Interval: <s>, then "keepalive-set"
  ping / pong        answers with a PING or PONG event
  disconnect         answers with DISCONNECT
  slow:<s>           sleeps s seconds (holding the worker), then "slow-done"
  bad-events         answers with a body that is not events (text/plain)
  truncated          answers with events cut inside one
  closeflood:<n>:<s> answers n binary messages of s bytes, CLOSE 1000 "bye", n more
  status:<n>         answers with status n
and paths for broken answers to OPEN: .../open-html (200, text/html), .../open-no-open (200,
events without OPEN), .../bad-proto (accepts with a subprotocol nobody offered).
Every POST is logged as {"event": "post", "path", "types", "size", "connection_id", "meta"}."""

import json
import time

from gatehouse import wsevents
from gatehouse.wsevents import Event

from ws_echo import PREFERRED, flood_message, log_event


def _path(environ):
    return environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")


def _headers(environ):
    out = []
    for k, v in environ.items():
        if k.startswith("HTTP_"):
            out.append([k[5:].replace("_", "-").lower(), v])
    return out


def _offered(environ):
    v = environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")
    return [p.strip() for p in v.split(",") if p.strip()]


def scope_json(environ):
    return json.dumps({
        "type": "websocket",
        "path": _path(environ),
        "query_string": environ.get("QUERY_STRING", ""),
        "subprotocols": _offered(environ),
        "headers": _headers(environ),
        "scheme": "wss" if environ.get("HTTPS") == "on" else "ws",
        "http_version": "1.1",
    })


def _meta(environ):
    return {k[10:].lower(): v for k, v in environ.items() if k.startswith("HTTP_META_")}


def _reply(start_response, events, headers=(), status="200 OK"):
    body = wsevents.encode(events)
    start_response(status, [("Content-Type", wsevents.CONTENT_TYPE),
                            ("Content-Length", str(len(body)))] + list(headers))
    return [body]


def _plain(start_response, status, body, headers=()):
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))] + list(headers))
    return [body]


def command(environ, text, out, headers):
    """Runs a text command, adding to |out| and |headers|. Returns a status line to answer
    with instead of events, or None."""
    if text.startswith("close:"):
        _, code, reason = text.split(":", 2)
        out.append(Event("CLOSE", wsevents.close_content(int(code), reason)))
    elif text.startswith("flood:"):
        _, n, size = text.split(":")
        out.extend(Event("BINARY", flood_message(i, int(size))) for i in range(int(n)))
        out.append(Event("TEXT", b"flood-done"))
    elif text == "scope":
        out.append(Event("TEXT", scope_json(environ).encode()))
    elif text == "post-info":
        out.append(Event("TEXT", json.dumps({
            "connection_id": environ.get("HTTP_CONNECTION_ID"),
            "meta": _meta(environ),
        }).encode()))
    elif text.startswith("meta:"):
        _, name, value = text.split(":", 2)
        headers.append(("Set-Meta-" + name, value))
        out.append(Event("TEXT", b"meta-set"))
    elif text.startswith("keepalive:"):
        headers.append(("Keep-Alive-Interval", text.split(":", 1)[1]))
        out.append(Event("TEXT", b"keepalive-set"))
    elif text in ("ping", "pong"):
        out.append(Event(text.upper()))
    elif text == "disconnect":
        out.append(Event("DISCONNECT"))
    elif text.startswith("slow:"):
        time.sleep(float(text.split(":", 1)[1]))
        out.append(Event("TEXT", b"slow-done"))
    elif text == "bad-events":
        return "bad"
    elif text == "truncated":
        return "truncated"
    elif text.startswith("closeflood:"):
        _, n, size = text.split(":")
        msgs = [Event("BINARY", flood_message(i, int(size))) for i in range(int(n))]
        out.extend(msgs)
        out.append(Event("CLOSE", wsevents.close_content(1000, "bye")))
        out.extend(msgs)
    elif text.startswith("status:"):
        return text.split(":", 1)[1] + " Status"
    else:
        out.append(Event("TEXT", text.encode("utf-8")))
    return None


def app(environ, start_response):
    path = _path(environ)
    if not wsevents.is_events(environ):
        log_event(event="http", path=path)
        return _plain(start_response, "200 OK", b"ws_echo")
    n = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(n)
    events = wsevents.decode(body)
    log_event(event="post", path=path, types=[e.type for e in events], size=len(body),
              connection_id=environ.get("HTTP_CONNECTION_ID"), meta=_meta(environ))
    out, headers = [], []
    for ev in events:
        if ev.type == "OPEN":
            log_event(event="connect", path=path)
            if path.endswith("/deny"):
                return _plain(start_response, "403 Forbidden", b"")
            if path.endswith("/open-html"):
                start_response("200 OK", [("Content-Type", "text/html"),
                                          ("Content-Length", "6")])
                return [b"<html>"]
            if path.endswith("/open-no-open"):
                return _reply(start_response, [Event("TEXT", b"hello")])
            if path.endswith("/bad-proto"):
                return _reply(start_response, [Event("OPEN")],
                              [("Sec-WebSocket-Protocol", "nobody.offered")])
            if path.endswith("/deny-response"):
                return _plain(start_response, "401 Unauthorized", b"denied",
                              [("x-denied", "yes")])
            chosen = next((p for p in _offered(environ) if p in PREFERRED), None)
            if chosen:
                headers.append(("Sec-WebSocket-Protocol", chosen))
            headers.append(("x-echo", "1"))
            out.append(Event("OPEN"))
        elif ev.type == "TEXT":
            special = command(environ, ev.text, out, headers)
            if special == "bad":
                return _plain(start_response, "200 OK", b"<html>not events</html>")
            if special == "truncated":
                body = b"TEXT 10\r\nabc"
                start_response("200 OK", [("Content-Type", wsevents.CONTENT_TYPE),
                                          ("Content-Length", str(len(body)))])
                return [body]
            if special is not None:
                return _plain(start_response, special, b"refused")
        elif ev.type == "BINARY":
            out.append(ev)
        elif ev.type == "CLOSE":
            code, _ = wsevents.parse_close(ev.content)
            log_event(event="disconnect", code=code, path=path)
            out.append(Event("CLOSE", ev.content))
        elif ev.type == "DISCONNECT":
            log_event(event="disconnect", code=1006, path=path)
    return _reply(start_response, out, headers)
