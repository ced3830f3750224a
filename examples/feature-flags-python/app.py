"""Feature flags over roomcast, the backend side (Python SDK).

Clients subscribe to a flag with an acked event and get its current value in
the ack; from then on they are in the room `feature:<id>` and get every change
as a `feature:update` event. Admins (user ids given with --admin) change flags
with an acked `feature:set`. The backend holds no connection to any client:
roomcast's edges do, and this process talks to roomcast's gRPC API.

    python app.py --grpc 127.0.0.1:50051 --api-key KEY --admin alice

Client events (socket.io-client):
    socket.emitWithAck("feature:subscribe", { id: "dark-mode" })
        -> { ok: true, id: "dark-mode", value: false } | { ok: false, error }
    socket.emitWithAck("feature:unsubscribe", { id: "dark-mode" }) -> { ok: true }
    socket.emitWithAck("feature:set", { id: "dark-mode", value: true })   (admins)
        -> { ok: true } | { ok: false, error }
    socket.on("feature:update", ({ id, value }) => ...)
"""

import argparse
import asyncio
import json
import logging
import re
import signal
import sys
from typing import Any, Dict

import roomcast

FLAG_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
DEFAULT_FLAGS = {"dark-mode": False, "new-checkout": {"rollout": 10}, "beta-banner": "Try the beta!"}

log = logging.getLogger("feature-flags")


def room_of(flag_id: str) -> str:
    return f"feature:{flag_id}"


class FeatureFlags:
    def __init__(self, rc: roomcast.Server, flags: Dict[str, Any], admins: set) -> None:
        self.rc = rc
        self.flags = dict(flags)
        self.admins = admins
        rc.on("feature:subscribe", self.subscribe)
        rc.on("feature:unsubscribe", self.unsubscribe)
        rc.on("feature:set", self.set)
        rc.on("connect", self.connect)
        rc.on_reconnect(self.reconnected)
        self.users: Dict[str, str] = {}  # sid -> user id, from the connect events

    def _flag_id(self, data: Any) -> str:
        flag_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(flag_id, str) or not FLAG_ID.match(flag_id):
            raise ValueError("id must be a flag id (a-z, 0-9, -)")
        if flag_id not in self.flags:
            raise ValueError(f"unknown feature {flag_id}")
        return flag_id

    async def connect(self, sid: str, environ: Dict[str, Any]) -> None:
        self.users[sid] = environ["roomcast.user_id"]

    async def subscribe(self, sid: str, data: Any = None) -> Dict[str, Any]:
        try:
            flag_id = self._flag_id(data)
        except ValueError as err:
            return {"ok": False, "error": str(err)}
        await self.rc.enter_room(sid, room_of(flag_id))
        # read after joining: a change made in between reaches the room, so the
        # client may see the new value twice but never misses it
        return {"ok": True, "id": flag_id, "value": self.flags[flag_id]}

    async def unsubscribe(self, sid: str, data: Any = None) -> Dict[str, Any]:
        try:
            flag_id = self._flag_id(data)
        except ValueError as err:
            return {"ok": False, "error": str(err)}
        await self.rc.leave_room(sid, room_of(flag_id))
        return {"ok": True}

    async def set(self, sid: str, data: Any = None) -> Dict[str, Any]:
        user = await self._user_of(sid)
        if user not in self.admins:
            return {"ok": False, "error": "admins only"}
        try:
            flag_id = self._flag_id(data)
        except ValueError as err:
            return {"ok": False, "error": str(err)}
        if "value" not in data:
            return {"ok": False, "error": "value is missing"}
        await self.update(flag_id, data["value"])
        return {"ok": True}

    async def _user_of(self, sid: str) -> str:
        if sid not in self.users:  # connected before this process started
            sockets = await self.rc.fetch_sockets(to=sid)
            self.users[sid] = sockets[0].user_id if sockets else ""
        return self.users[sid]

    async def update(self, flag_id: str, value: Any) -> None:
        self.flags[flag_id] = value
        await self.rc.emit("feature:update", {"id": flag_id, "value": value}, room=room_of(flag_id))
        log.info("feature %s is now %s", flag_id, json.dumps(value))

    async def reconnected(self, stream: str) -> None:
        # Client events of the gap got no answer; their clients' acks time out
        # and they subscribe again. Nothing to rebuild here.
        log.warning("the %s stream broke and is live again", stream)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpc", default="127.0.0.1:50051", help="roomcast gRPC address")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--admin", action="append", default=[], help="a user id that may set flags (repeatable)")
    parser.add_argument("--group", default="feature-flags", help="consumer group shared by replicas")
    parser.add_argument("--flags", default=None, help="initial flags as a JSON object")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)

    flags = json.loads(args.flags) if args.flags else DEFAULT_FLAGS
    rc = roomcast.Server(args.grpc, api_key=args.api_key, group=args.group)
    FeatureFlags(rc, flags, set(args.admin))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with rc:
        print("feature-flags ready", flush=True)
        streams = asyncio.ensure_future(rc.wait())
        done, _ = await asyncio.wait({asyncio.ensure_future(stop.wait()), streams}, return_when=asyncio.FIRST_COMPLETED)
        if streams in done:
            streams.result()  # raises the StreamError (a wrong API key, ...)


if __name__ == "__main__":
    asyncio.run(main())
