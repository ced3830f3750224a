"""roomcast.Server against a real roomcast (standalone and a cluster), with
python-socketio clients."""

import asyncio
import time

import pytest

import roomcast
from sdk_testkit import API_KEY, TIMEOUT, Client, Cluster, eventually, run

pytestmark = pytest.mark.timeout(120)


def server(target, **kwargs):
    return roomcast.Server(target.grpc_addr, api_key=API_KEY, **kwargs)


def test_emit_to_a_room_skips_skip_sid(target, clients):
    async def main():
        async with server(target) as rc:
            a, b, c = await clients(3)
            await rc.enter_room(a.sid, "lobby")
            await rc.enter_room(b.sid, "lobby")
            await rc.emit("news", {"title": "hi"}, room="lobby", skip_sid=b.sid)
            assert await a.next_event() == ("news", [{"title": "hi"}])
            # a tuple is several arguments; `to` is `room`'s synonym
            await rc.emit("pair", (1, "two"), to="lobby")
            assert await a.next_event() == ("pair", [1, "two"])
            assert await b.next_event() == ("pair", [1, "two"])
            await c.nothing()

    run(main())


def test_enter_and_leave_room(target, clients):
    async def main():
        async with server(target) as rc:
            (a,) = await clients(1)
            await rc.enter_room(a.sid, ["r1", "r2"])
            assert set(await rc.rooms(a.sid)) == {a.sid, "r1", "r2"}
            await rc.leave_room(a.sid, "r1")
            assert set(await rc.rooms(a.sid)) == {a.sid, "r2"}
            await rc.emit("gone", 1, room="r1")
            await rc.emit("here", 2, room="r2")
            assert await a.next_event() == ("here", [2])
            await rc.close_room("r2")
            assert await rc.rooms(a.sid) == [a.sid]

    run(main())


def test_disconnect(target, clients):
    async def main():
        async with server(target) as rc:
            a, b = await clients(2)
            assert await rc.disconnect(a.sid) == 1
            assert await a.wait_disconnect() == ("server disconnect",)
            assert b.sio.connected
            assert await rc.disconnect("no-such-socket") == 0

    run(main())


def test_call_returns_the_clients_ack(target, clients):
    async def main():
        async with server(target) as rc:
            (a,) = await clients(1, handlers={"poll": lambda question: {"answer": question.upper()}})
            assert await rc.call("poll", "ready?", to=a.sid, timeout=TIMEOUT) == {"answer": "READY?"}
            (silent,) = await clients(1, handlers={"poll": lambda q: None})
            assert await rc.call("poll", "x", to=silent.sid, timeout=TIMEOUT) is None
            with pytest.raises(roomcast.TimeoutError):
                await rc.call("poll", "x", to="no-such-socket", timeout=0.5)
            (slow,) = await clients(1, handlers={"slow": lambda q: time.sleep(1)})  # acks too late
            with pytest.raises(roomcast.TimeoutError):
                await rc.call("slow", "x", to=slow.sid, timeout=0.3)

    run(main())


def test_fetch_sockets(target, clients):
    async def main():
        async with server(target) as rc:
            a, b = await clients(2, query={"tenant": "acme"})
            await rc.enter_room(a.sid, "vip")
            sockets = await rc.fetch_sockets(room="vip")
            assert [s.sid for s in sockets] == [a.sid]
            (s,) = sockets
            assert s.user_id == a.sub and s.namespace == "/" and s.query.get("tenant") == "acme"
            assert "vip" in s.rooms and s.transport == "websocket" and s.node_id
            everyone = await rc.fetch_sockets()
            assert {a.sid, b.sid} <= {s.sid for s in everyone}
            assert [s.sid for s in await rc.fetch_sockets(user=b.sub)] == [b.sid]

    run(main())


def test_presence(target, clients):
    async def main():
        async with server(target) as rc:
            a, b = await clients(2)
            await rc.enter_room(a.sid, "desk")
            async def online():
                status = await rc.presence([a.sub, "never-seen"])
                return status if status[a.sub].online else None

            status = await eventually(online, "the user to be online")
            assert status[a.sub].online and status[a.sub].sockets == 1
            assert not status["never-seen"].online and status["never-seen"].last_seen_ms == 0
            assert await rc.room_users("desk") == [a.sub]

    run(main())


def test_connect_and_disconnect_handlers(target, clients):
    async def main():
        rc = server(target)
        connects, disconnects = asyncio.Queue(), asyncio.Queue()

        @rc.event
        async def connect(sid, environ, auth):
            await connects.put((sid, environ, auth))

        @rc.event
        async def disconnect(sid, reason):
            await disconnects.put((sid, reason))

        async with rc:
            (a,) = await clients(1, auth={"room": "blue"}, query={"v": "7"}, headers={"X-Tenant": "acme"})
            sid, environ, auth = await asyncio.wait_for(connects.get(), TIMEOUT)
            assert sid == a.sid
            assert auth == {"room": "blue"}, "the token is left out"
            assert environ["QUERY_STRING"] == "v=7"
            assert environ["HTTP_X_TENANT"] == "acme"
            assert environ["REMOTE_ADDR"] == "127.0.0.1"
            conn = environ["roomcast.connection"]
            assert conn.user_id == a.sub and conn.transport == "websocket" and not conn.recovered

            a_sid = a.sid
            await a.disconnect()
            # python-socketio sends the namespace DISCONNECT and closes the transport at once
            sid, reason = await asyncio.wait_for(disconnects.get(), TIMEOUT)
            assert sid == a_sid and reason in ("client namespace disconnect", "transport close")

            (b,) = await clients(1)
            assert (await asyncio.wait_for(connects.get(), TIMEOUT))[0] == b.sid
            b_sid = b.sid
            await rc.disconnect(b_sid)
            assert await asyncio.wait_for(disconnects.get(), TIMEOUT) == (b_sid, "server namespace disconnect")

    run(main())


def test_a_connect_handler_that_refuses_disconnects_the_socket(target, clients):
    async def main():
        rc = server(target)
        handled = asyncio.Queue()

        @rc.on("connect")
        async def refuse(sid, environ):
            handled.put_nowait(sid)
            if environ["roomcast.connection"].auth.get("ok") is not True:
                raise ConnectionRefusedError("not today")

        async with rc:
            (good,) = await clients(1, auth={"ok": True})
            (bad,) = await clients(1)
            good_sid, bad_sid = good.sid, bad.sid
            assert [await asyncio.wait_for(handled.get(), TIMEOUT) for _ in range(2)] == [good_sid, bad_sid]
            assert await bad.wait_disconnect() == ("server disconnect",)
            # the good socket's connect was handled before the bad one's: it stays
            assert good.sio.connected
            assert [s.sid for s in await rc.fetch_sockets(to=[good_sid, bad_sid])] == [good_sid]

    run(main())


def test_event_handler_return_value_answers_the_ack(target, clients):
    async def main():
        rc = server(target)
        seen = asyncio.Queue()

        @rc.on("feature:subscribe")
        async def subscribe(sid, data):
            await rc.enter_room(sid, f"feature:{data['id']}")
            return {"ok": True, "id": data["id"]}

        @rc.on("pair")
        async def pair(sid, x, y):
            return x + y, x * y

        @rc.on("note")
        def note(sid, text):  # plain functions work too; no ack asked
            seen.put_nowait((sid, text))

        async with rc:
            (a,) = await clients(1)
            assert await a.call("feature:subscribe", {"id": "dark-mode"}) == {"ok": True, "id": "dark-mode"}
            assert "feature:dark-mode" in await rc.rooms(a.sid)
            assert await asyncio.to_thread(a.sio.call, "pair", (3, 4), timeout=TIMEOUT) == (7, 12)
            a.sio.emit("note", "hello")
            assert await asyncio.wait_for(seen.get(), TIMEOUT) == (a.sid, "hello")

    run(main())


def test_catch_all_handler(target, clients):
    async def main():
        rc = server(target)

        @rc.on("*")
        async def any_event(event, sid, *args):
            return [event, sid, *args]

        async with rc:
            (a,) = await clients(1)
            assert await a.call("whatever", 5) == ["whatever", a.sid, 5]

    run(main())


def test_binary_both_ways(target, clients):
    async def main():
        rc = server(target)

        @rc.on("upload")
        async def upload(sid, meta, blob):
            assert isinstance(blob, bytes)
            return {"name": meta["name"], "size": len(blob), "echo": blob[::-1]}

        async with rc:
            (a,) = await clients(1)
            blob = bytes(range(256))
            await rc.emit("file", {"name": "x.bin", "data": blob}, to=a.sid)
            assert await a.next_event() == ("file", [{"name": "x.bin", "data": blob}])
            answer = await asyncio.to_thread(a.sio.call, "upload", ({"name": "y"}, b"\x00\x01\xff"), timeout=TIMEOUT)
            assert answer == {"name": "y", "size": 3, "echo": b"\xff\x01\x00"}

    run(main())


def test_reliable_emit_to_a_user(target, clients):
    async def main():
        async with server(target) as rc:
            acked = []
            (a,) = await clients(1, handlers={"invoice": lambda data, meta: acked.append((data, meta)) or "got it"})
            message_id = await rc.emit("invoice", {"n": 1}, user=a.sub, reliable_ttl=30)
            assert message_id
            await eventually(lambda: asyncio.sleep(0, acked), "the reliable emit")
            assert acked[0] == ({"n": 1}, {"messageId": message_id})

            async def is_acked():
                return (await rc.get_delivery(message_id)).status == "acked"

            await eventually(is_acked, "the delivery to be acked")
            # a user with no socket yet gets it once one connects (from its inbox)
            later = await rc.emit("invoice", {"n": 2}, user=f"{a.sub}-later", reliable_ttl=30)
            assert (await rc.get_delivery(later)).status == "pending"
            inbox = []
            await clients(1, sub=f"{a.sub}-later", handlers={"invoice": lambda data, meta: inbox.append((data, meta))})
            await eventually(lambda: asyncio.sleep(0, inbox), "the inbox delivery")
            assert inbox[0] == ({"n": 2}, {"messageId": later})

            async def later_acked():
                return (await rc.get_delivery(later)).status == "acked"

            await eventually(later_acked, "the inbox delivery to be acked")

    run(main())


def test_api_errors_are_raised_with_their_code(target):
    async def main():
        async with server(target) as rc:
            with pytest.raises(roomcast.ApiError) as err:
                await rc.emit("connect", 1)  # a reserved name
            assert err.value.code.name == "INVALID_ARGUMENT"
        bad = roomcast.Server(target.grpc_addr, api_key="wrong")
        with pytest.raises(roomcast.ApiError) as err:
            await bad.emit("x", 1)
        assert err.value.code.name == "UNAUTHENTICATED"

        @bad.on("x")
        async def x(sid):
            pass

        with pytest.raises(roomcast.StreamError):
            await asyncio.wait_for(bad.run(), TIMEOUT)
        await bad.close()

    run(main())


@pytest.fixture
def cluster():
    c = Cluster()
    yield c
    c.stop()


def test_streams_reopen_after_the_control_plane_restarts(cluster):
    target = cluster
    made = []

    async def clients(n):
        batch = [Client(target.http_urls[0]) for _ in range(n)]
        made.extend(batch)
        for client in batch:
            await client.connect()
        return batch

    async def main():
        rc = server(target, reconnect_delay=0.05, reconnect_delay_max=0.5)
        reconnects = asyncio.Queue()
        connects = asyncio.Queue()
        rc.on_reconnect(reconnects.put_nowait)

        @rc.event
        async def connect(sid, environ, auth):
            connects.put_nowait(sid)

        @rc.on("ping")
        async def ping(sid, n):
            return n + 1

        async with rc:
            (a,) = await clients(1)
            assert await asyncio.wait_for(connects.get(), TIMEOUT) == a.sid
            assert await a.call("ping", 1) == 2

            await asyncio.to_thread(target.restart_control)
            got = {await asyncio.wait_for(reconnects.get(), 20), await asyncio.wait_for(reconnects.get(), 20)}
            assert got == {"connections", "events"}
            await rc.wait_live(timeout=TIMEOUT)

            assert await a.call("ping", 41) == 42
            (b,) = await clients(1)
            assert await asyncio.wait_for(connects.get(), TIMEOUT) == b.sid
            await rc.emit("after", "restart", to=b.sid)
            assert await b.next_event() == ("after", ["restart"])

    try:
        run(main())
    finally:
        for client in made:
            client.sio.disconnect()


def test_replicas_in_a_group_share_the_events(target, clients):
    async def main():
        handled = {"r1": [], "r2": []}
        replicas = []
        for name in handled:
            rc = server(target, group="workers")

            @rc.on("job")
            async def job(sid, n, name=name):
                handled[name].append(n)
                return name

            replicas.append(rc)
        async with replicas[0], replicas[1]:
            (a,) = await clients(1)
            answers = [await a.call("job", n) for n in range(20)]
            assert set(answers) <= {"r1", "r2"}
            assert sorted(handled["r1"] + handled["r2"]) == list(range(20)), "each event to one replica"

    run(main())


def test_streams_wait_for_roomcast_to_come_up(cluster):
    async def main():
        address = cluster.grpc_addr
        await asyncio.to_thread(cluster.control.stop)
        rc = server(cluster, reconnect_delay=0.05, reconnect_delay_max=0.2)
        reconnects = []
        rc.on_reconnect(reconnects.append)

        @rc.on("ping")
        async def ping(sid, n):
            return n + 1

        rc.start()
        with pytest.raises(asyncio.TimeoutError):
            await rc.wait_live(timeout=0.3)
        await asyncio.to_thread(cluster.restart_control)
        assert cluster.grpc_addr == address
        await rc.wait_live(timeout=20)
        assert reconnects == [], "no stream was live before: nothing was missed"
        client = Client(cluster.http_urls[0])
        await client.connect()
        try:
            assert await client.call("ping", 1) == 2
        finally:
            await client.disconnect()
            await rc.close()

    run(main())


def test_namespaces(target, clients):
    async def main():
        admin_rc = server(target, namespace="/admin")
        every_rc = server(target, namespace=None, group="every")  # every namespace
        seen = asyncio.Queue()

        @admin_rc.on("whoami")
        async def whoami(sid):
            return "admin handler"

        @every_rc.event
        async def connect(sid, environ):
            seen.put_nowait((environ["roomcast.connection"].namespace, sid))

        async with admin_rc, every_rc:
            (a,) = await clients(1, namespace="/admin")
            assert await asyncio.wait_for(seen.get(), TIMEOUT) == ("/admin", a.sid)
            (root,) = await clients(1)
            assert await asyncio.wait_for(seen.get(), TIMEOUT) == ("/", root.sid)
            assert await a.call("whoami", None) == "admin handler"
            await admin_rc.enter_room(a.sid, "ops")  # the Server's namespace by default
            await admin_rc.emit("alert", "disk", room="ops")
            assert await a.next_event() == ("alert", ["disk"])
            assert [s.sid for s in await every_rc.fetch_sockets(room="ops", namespace="/admin")] == [a.sid]
            assert await every_rc.fetch_sockets(room="ops") == [], "the default namespace is /"
            await root.nothing()

    run(main())
