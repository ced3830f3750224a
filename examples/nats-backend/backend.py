"""A roomcast backend that takes client events straight from NATS.

Every `socket.emit("chat", ...)` of a client connected to any edge arrives here
(one worker of the queue group gets each event), is logged, and is answered
through the client's ack callback when it passed one:

    client:  socket.emit("chat", {"text": "hi"}, (answer) => console.log(answer))
    backend: replies ["received", {"text": "hi", "from": "<user id>"}]

Run it next to a cluster (deploy/cluster.sh):

    pip install -r requirements.txt
    python backend.py --nats nats://127.0.0.1:4222 --event chat
"""

import argparse
import asyncio
import json
import signal


def token(name: str) -> str:
    """roomcast's subject token: [A-Za-z0-9_-] kept, every other byte as ~XX."""
    if name == "":
        return "~"
    out = []
    for b in name.encode():
        c = chr(b)
        out.append(c if (c.isascii() and c.isalnum()) or c in "_-" else "~%02X" % b)
    return "".join(out)


def untoken(tok: str) -> str:
    if tok == "~":
        return ""
    raw, i = bytearray(), 0
    while i < len(tok):
        if tok[i] == "~":
            raw.append(int(tok[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(tok[i]))
            i += 1
    return raw.decode()


def client_event(msg):
    """The event a NATS message carries: who sent it, and its arguments."""
    h = msg.headers or {}
    parts = h.get("rc-parts")
    data = msg.data
    if parts:  # binary arguments: JSON text, then the attachments
        lengths = [int(n) for n in parts.split(",")]
        data = data[: lengths[0]]
    return {
        "namespace": untoken(h["rc-ns"]),
        "socket_id": untoken(h["rc-sock"]),
        "user_id": untoken(h["rc-user"]),
        "event": untoken(h["rc-event"]),
        "wants_ack": "rc-ack" in h,
        "args": json.loads(data or b"[]"),
    }


async def run(servers, cluster, namespace, event, group, ready=None):
    import nats  # nats-py

    nc = await nats.connect(servers=servers, name="roomcast-example-backend")
    subject = f"rc.{token(cluster)}.in.{token(namespace)}.{token(event)}"

    async def handle(msg):
        ev = client_event(msg)
        print(f"{ev['user_id'] or 'anonymous'} ({ev['socket_id']}) sent {ev['event']}: {ev['args']}", flush=True)
        if ev["wants_ack"] and msg.reply:
            first = ev["args"][0] if ev["args"] else None
            answer = {"text": first.get("text") if isinstance(first, dict) else first, "from": ev["user_id"]}
            await msg.respond(json.dumps(["received", answer]).encode())

    await nc.subscribe(subject, queue=group, cb=handle)
    await nc.flush()
    print(f"listening on {subject} (queue group {group})", flush=True)
    if ready is not None:
        ready.set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await nc.drain()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nats", action="append", default=None, help="NATS server URL (repeatable)")
    p.add_argument("--cluster", default="roomcast", help="roomcast cluster name")
    p.add_argument("--namespace", default="/")
    p.add_argument("--event", default="chat")
    p.add_argument("--group", default="chat-workers", help="NATS queue group")
    a = p.parse_args()
    asyncio.run(run(a.nats or ["nats://127.0.0.1:4222"], a.cluster, a.namespace, a.event, a.group))


if __name__ == "__main__":
    main()
