#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into seeds/<target>/.

The seeds are valid inputs from the protocol specifications and the unit tests,
so each target starts from inputs that reach deep into its decoder. HS256 tokens
are signed with the targets' fuzz secret. Kept as they are: the RS256 seeds
(seeds/edge_auth/rs256-*), signed once with a throwaway key whose public half is
fixtures/rs256-public.pem, and the inputs of past crashes (regression-*).

Run from fuzz/: ./gen-seeds.py
"""
import base64
import hashlib
import hmac
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")
SECRET = b"fuzz-secret"
FAR_FUTURE = 4102444800  # 2100-01-01


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hs256(claims: dict) -> str:
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def write(target: str, seeds: dict) -> None:
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


EIO_PACKETS = {
    "open": "0",
    "close": "1",
    "probe": "2probe",
    "pong": "3",
    "message": "4hello",
    "message-utf8": "4€",
    "upgrade": "5",
    "noop": "6",
    "event": '42["chat","hi"]',
}

SIO_PACKETS = {
    "connect": "0",
    "connect-nsp-auth": '0/admin,{"token":"123"}',
    "connect-nsp-nocomma": "0/admin",
    "disconnect": "1/admin,",
    "event": '2["foo"]',
    "event-nsp-ack": '2/admin,456["bar",1,{"a":[true,null]}]',
    "event-number-name": "2[1,2]",
    "ack": '3/admin,13["bar"]',
    "ack-empty": "313[]",
    "binary-event": '51-["baz",{"_placeholder":true,"num":0}]',
    "binary-ack": '61-/admin,15[{"_placeholder":true,"num":0}]',
    "binary-event-two": '52-["up",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]',
}


def frames(*fs) -> bytes:
    """socketio_assembler records: [kind][len][bytes]; even kind = text."""
    out = b""
    for kind, data in fs:
        if isinstance(data, str):
            data = data.encode()
        out += bytes([0 if kind == "t" else 1, len(data)]) + data
    return out


def envelope(headers, payload=b"") -> bytes:
    head = "\n".join(f"{k}:{v}" for k, v in headers).encode()
    if isinstance(payload, str):
        payload = payload.encode()
    return head + b"\n\n" + payload


def http(method, uri, headers=(), body=b"") -> bytes:
    head = "\n".join([f"{method} {uri}", *(f"{k}: {v}" for k, v in headers)]).encode()
    if isinstance(body, str):
        body = body.encode()
    return head + b"\n\n" + body


def ws_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client WebSocket frame (RFC 6455 5.2)."""
    mask = b"\x01\x02\x03\x04"
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n <= 0xFFFF:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def main() -> None:
    # Kept as they are: the RS256 tokens and the inputs of past crashes.
    kept = ("rs256-", "regression-")
    if os.path.isdir(SEEDS):
        for t in os.listdir(SEEDS):
            for f in os.listdir(os.path.join(SEEDS, t)):
                if not f.startswith(kept):
                    os.remove(os.path.join(SEEDS, t, f))

    write("engineio_packet", EIO_PACKETS)
    write("engineio_payload", {
        "spec": "4hello\x1e4€\x1ebAQIDBA==",
        "binary": "451-[\"a\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID",
        "control": "2\x1e3\x1e6\x1e1",
    })
    # ws_frames: the first byte picks the read size (0: whole, n: n bytes).
    write("ws_frames", {
        "messages": b"\x00" + ws_frame(1, b'42["a"]') + ws_frame(2, b"\x01\x02")
        + ws_frame(1, "é".encode() * 70) + ws_frame(8, b"\x03\xe8bye"),
        "fragments-split": b"\x03" + ws_frame(1, "h\u00e9".encode()[:2], fin=False)
        + ws_frame(9, b"p") + ws_frame(0, "h\u00e9".encode()[2:], fin=False)
        + ws_frame(0, b"llo") + ws_frame(10, b""),
        "long": b"\x10" + ws_frame(2, bytes(300)) + ws_frame(8, b""),
    })
    write("socketio_packet", SIO_PACKETS)
    write("socketio_assembler", {
        "binary-event": frames(("t", SIO_PACKETS["binary-event"]), ("b", b"\x01\x02\x03")),
        "two-attachments": frames(("t", SIO_PACKETS["binary-event-two"]), ("b", b"a"), ("b", b"")),
        "text-while-pending": frames(("t", SIO_PACKETS["binary-ack"]), ("t", '2["x"]'), ("b", b"z")),
        "events": frames(("t", "0"), ("t", '2["a"]'), ("t", "313[]")),
    })
    target = [("rc-ns", "~2F"), ("rc-room", "news~2Eeu"), ("rc-sock", "abc"), ("rc-xroom", "x")]
    write("bus_envelope", {
        "emit": envelope([("rc-op", "emit"), ("rc-sent", "1700000000000000"), *target, ("rc-vol", "1")],
                         '42["chat","hi"]'),
        "emit-binary": envelope([("rc-op", "emit"), ("rc-ns", "~2F"), ("rc-parts", "39,3")],
                                '451-["a",{"_placeholder":true,"num":0}]' + "xyz"),
        "join": envelope([("rc-op", "join"), *target, ("rc-rooms", "r1"), ("rc-rooms", "~")]),
        "reply": envelope([("rc-op", "reply"), ("rc-ns", "~2F"), ("rc-sock", "s1")], '4313["ok"]'),
        "emit-ack": envelope([("rc-op", "emit-ack"), ("rc-ns", "~2F"), ("rc-ack", "3"),
                              ("rc-timeout", "5000")], '423["q"]'),
        "disconnect": envelope([("rc-op", "disconnect"), ("rc-ns", "~2Fadmin"), ("rc-users", "u1"),
                                ("rc-close", "1")]),
        "rooms": envelope([("rc-op", "rooms"), ("rc-ns", "~2F")]),
        "ping": envelope([("rc-op", "ping")]),
        "hello": envelope([("rc-op", "hello"), ("rc-node", "n1")]),
        "done": envelope([("rc-op", "done"), ("rc-node", "n1"), ("rc-count", "2")]),
        "sockets": envelope([("rc-op", "sockets"), ("rc-node", "n1")], json.dumps([{
            "id": "s", "user": "u", "ns": "/", "node": "n1", "rooms": ["a"], "connected_at_ms": 1,
            "remote_addr": "127.0.0.1:1", "transport": "websocket", "query": [["a", "b"]],
            "headers": [["h", "v"]], "data_json": "{}"}])),
        "room-counts": envelope([("rc-op", "room-counts"), ("rc-node", "n1")], '[["a",2]]'),
        "targets": envelope([("rc-op", "targets"), ("rc-node", "n1")], '["s1","s2"]'),
        "edge-ack": envelope([("rc-op", "ack"), ("rc-node", "n1"), ("rc-sock", "s1"), ("rc-parts", "2,1")],
                             "[]x"),
        "client-event": envelope([("rc-ns", "~2F"), ("rc-sock", "s1"), ("rc-user", "u1"), ("rc-event", "chat"),
                                  ("rc-reply", "rc~2Eroomcast~2Enode~2En1"), ("rc-at", "1700000000000"),
                                  ("rc-ack", "12")], '["hi"]'),
        "ack-reply": envelope([("rc-parts", "38,2")], '[{"_placeholder":true,"num":0},"done"]' + "\x00\x01"),
        "ack-reply-empty": envelope([], " "),
    })
    write("bus_subject", {
        "plain": "chat",
        "dots": "news.eu",
        "escapes": "~2Fadmin",
        "empty-token": "~",
        "ns-room": "/admin\x00room with spaces.*>",
        "utf8": "é~C3~A9",
    })
    write("bus_traceparent", {
        "valid": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "with-state": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00\ncongo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        "future-version": "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    })
    claims = {"sub": "u1", "exp": FAR_FUTURE, "aud": "roomcast", "iss": "fuzz", "rooms": ["a", "b"]}
    write("edge_auth", {
        "hs256-valid": b"\x00" + hs256(claims).encode(),
        "hs256-expired": b"\x00" + hs256({**claims, "exp": 1}).encode(),
        "none-alg": b"\x00" + (b64url(b'{"alg":"none"}') + "." + b64url(json.dumps(claims).encode()) + ".").encode(),
        "claims": b"\x01" + json.dumps(claims).encode(),
        "claims-bad-rooms": b"\x01" + json.dumps({**claims, "rooms": "a", "nbf": FAR_FUTURE}).encode(),
    })
    token = hs256({"sub": "u1", "exp": FAR_FUTURE, "rooms": ["r"]})
    polling = "/socket.io/?EIO=4&transport=polling&sid=SID"
    write("edge_http", {
        "handshake": http("GET", "/socket.io/?EIO=4&transport=polling&foo=bar",
                          [("Origin", "http://localhost"), ("Authorization", f"Bearer {token}")]),
        "options": http("OPTIONS", "/socket.io/?EIO=4&transport=polling",
                        [("Origin", "http://localhost"), ("Access-Control-Request-Headers", "x-a")]),
        "connect-event-ack": http("POST", polling, body=(
            '40{"token":"' + token + '"}\x1e42["chat","hi"]\x1e421["ask",1]\x1e43[]')),
        "connect-admin": http("POST", polling, body='40/admin,\x1e42/admin,["x"]\x1e41/admin,'),
        "connect-recover": http("POST", polling, body='40{"pid":"AAAAAAAAAAAAAAAAAAAA","offset":"1"}\x1e42["ev",1]'),
        "binary": http("POST", polling, body='40\x1e451-["up",{"_placeholder":true,"num":0}]\x1ebAQIDBA=='),
        "two-requests": http("POST", polling, body="40") + b"\x00" + http("POST", polling, body='42["b"]\x1e3'),
        "websocket": http("GET", "/socket.io/?EIO=4&transport=websocket&sid=SID",
                          [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
                           ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]),
    })


if __name__ == "__main__":
    main()
