"""`roomcast.Server`: python-socketio's server surface over roomcast's gRPC API."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import grpc
import grpc.aio

from . import _codec
from .errors import ApiError, StreamError, TimeoutError
from .v1 import roomcast_pb2 as pb
from .v1 import roomcast_pb2_grpc as pb_grpc

logger = logging.getLogger("roomcast")

Targets = Union[str, Iterable[str], None]
Handler = Callable[..., Any]

# Handler names that WatchConnections serves; every other name is a client event.
LIFECYCLE = ("connect", "disconnect")
# A stream that ends with one of these is opened again (with backoff); any other
# code (a wrong API key, an invalid request) will not get better by retrying.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)
MAX_ACK_TIMEOUT = 300.0  # seconds: EmitWithAck's limit


@dataclass
class Socket:
    """A connected socket, as `fetch_sockets` describes it."""

    sid: str
    user_id: str
    namespace: str
    node_id: str
    rooms: List[str]
    connected_at_ms: int
    remote_addr: str
    transport: str
    query: Dict[str, str]
    headers: Dict[str, str]
    data: Any = None


@dataclass
class Connection:
    """A WatchConnections event: what `environ["roomcast.connection"]` holds in a
    connect handler."""

    kind: str
    sid: str
    user_id: str
    namespace: str
    node_id: str
    at_ms: int
    rooms: List[str] = field(default_factory=list)
    auth: Dict[str, Any] = field(default_factory=dict)
    query: Dict[str, str] = field(default_factory=dict)
    headers: Dict[str, str] = field(default_factory=dict)
    remote_addr: str = ""
    transport: str = ""
    data: Any = None
    recovered: bool = False
    reason: str = ""


@dataclass
class Recipient:
    user_id: str
    sid: str
    status: str
    done_at_ms: int


@dataclass
class UserStatus:
    """A user's presence across the cluster (`presence`): online from its
    first socket to the grace period after its last; `last_seen_ms` is 0 for a
    user never seen."""

    user_id: str
    online: bool
    last_seen_ms: int
    sockets: int


@dataclass
class Delivery:
    """Where an at-least-once emit stands (`get_delivery`); statuses are
    "pending", "acked", "expired" or "purged"."""

    message_id: str
    namespace: str
    event: str
    status: str
    recipients: List[Recipient]
    created_at_ms: int
    expires_at_ms: int


def _as_list(value: Targets) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _json_or(text: str, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _status_name(value: int) -> str:
    return pb.DeliveryStatus.Name(value).removeprefix("DELIVERY_STATUS_").lower()


def _accepts(handler: Handler, count: int) -> bool:
    """Whether `handler` can be called with `count` positional arguments."""
    try:
        inspect.signature(handler).bind(*([None] * count))
    except TypeError:
        return False
    except ValueError:  # no signature (a builtin): assume it can
        return True
    return True


async def _invoke(handler: Handler, *args: Any) -> Any:
    result = handler(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _environ(conn: Connection) -> Dict[str, Any]:
    """A WSGI-style environ for a connect handler, like python-socketio's."""
    environ: Dict[str, Any] = {
        "QUERY_STRING": urllib.parse.urlencode(conn.query),
        "roomcast.connection": conn,
        "roomcast.user_id": conn.user_id,
        "roomcast.transport": conn.transport,
    }
    host, sep, port = conn.remote_addr.rpartition(":")
    if sep and port.isdigit():
        environ["REMOTE_ADDR"] = host.strip("[]")
        environ["REMOTE_PORT"] = port
    else:
        environ["REMOTE_ADDR"] = conn.remote_addr
    for name, value in conn.headers.items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ["HTTP_" + key] = value
    return environ


class Server:
    """A backend's handle on roomcast, shaped like python-socketio's `AsyncServer`.

    `address` is the gRPC address of `roomcast standalone` or of a control plane
    ("host:port", "http://host:port", or "https://host:port" for TLS with the
    system's roots; pass `credentials` for anything else). `namespace` is the
    default namespace of every call and the one the streams watch (None: every
    namespace). Replicas of one backend give the same `group` so that each
    client event and connection event goes to one of them.
    """

    def __init__(
        self,
        address: str,
        *,
        api_key: Optional[str] = None,
        namespace: Optional[str] = "/",
        group: str = "",
        credentials: Optional[grpc.ChannelCredentials] = None,
        channel_options: Sequence[Tuple[str, Any]] = (),
        call_timeout: float = 10.0,
        reconnect_delay: float = 0.1,
        reconnect_delay_max: float = 5.0,
        async_handlers: bool = True,
    ) -> None:
        if address.startswith("https://"):
            address = address[len("https://"):]
            credentials = credentials or grpc.ssl_channel_credentials()
        elif address.startswith("http://"):
            address = address[len("http://"):]
        self.address = address.rstrip("/")
        self.namespace = namespace
        self.group = group
        self.call_timeout = call_timeout
        self.reconnect_delay = reconnect_delay
        self.reconnect_delay_max = reconnect_delay_max
        self.async_handlers = async_handlers
        self._credentials = credentials
        self._channel_options = list(channel_options)
        self._metadata: Tuple[Tuple[str, str], ...] = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._handlers: Dict[str, Handler] = {}
        self._reconnect_handlers: List[Handler] = []
        self._channel: Optional[grpc.aio.Channel] = None
        self._stub: Optional[pb_grpc.RoomcastStub] = None
        self._runner: Optional[asyncio.Task] = None
        self._tasks: set = set()
        self._live: Dict[str, asyncio.Event] = {}

    # --- handlers -----------------------------------------------------------

    def on(self, event: str, handler: Optional[Handler] = None) -> Any:
        """Registers a handler, as a decorator (`@rc.on("chat")`) or a call.

        "connect" handlers take `(sid, environ, auth)` (or `(sid, environ)`),
        "disconnect" handlers `(sid, reason)` (or `(sid)`), client event handlers
        `(sid, *args)` and return the acknowledgement's value, "*" handlers
        `(event, sid, *args)` for events without a handler of their own.
        Register handlers before `run()`: they decide what the streams ask for.
        """

        def register(fn: Handler) -> Handler:
            self._handlers[event] = fn
            return fn

        if handler is not None:
            return register(handler)
        return register

    def event(self, handler: Handler) -> Handler:
        """Registers a handler under its function's name (`@rc.event async def connect(...)`)."""
        return self.on(handler.__name__, handler)

    def on_reconnect(self, handler: Handler) -> Handler:
        """Registers `handler(stream)`, called when a stream ("connections" or
        "events") is live again after it broke: events of the gap were missed,
        so re-read what matters (`fetch_sockets`)."""
        self._reconnect_handlers.append(handler)
        return handler

    # --- the API --------------------------------------------------------------

    @property
    def api(self) -> pb_grpc.RoomcastStub:
        """The raw gRPC stub, for the calls this class does not wrap (pass
        `metadata=rc.metadata`)."""
        if self._stub is None:
            if self._credentials is not None:
                self._channel = grpc.aio.secure_channel(self.address, self._credentials, options=self._channel_options)
            else:
                self._channel = grpc.aio.insecure_channel(self.address, options=self._channel_options)
            self._stub = pb_grpc.RoomcastStub(self._channel)
        return self._stub

    @property
    def metadata(self) -> Tuple[Tuple[str, str], ...]:
        return self._metadata

    async def _unary(self, method: str, request: Any, timeout: Optional[float] = None) -> Any:
        try:
            return await getattr(self.api, method)(
                request, metadata=self._metadata, timeout=timeout if timeout is not None else self.call_timeout
            )
        except grpc.aio.AioRpcError as err:
            raise ApiError(method, err.code(), err.details()) from err

    def _ns(self, namespace: Optional[str]) -> str:
        return namespace if namespace is not None else (self.namespace or "/")

    def _selector(
        self,
        *,
        rooms: Targets = None,
        sids: Targets = None,
        users: Targets = None,
        skip_sid: Targets = None,
        namespace: Optional[str] = None,
    ) -> pb.Selector:
        return pb.Selector(
            namespace=self._ns(namespace),
            rooms=_as_list(rooms),
            socket_ids=_as_list(sids),
            user_ids=_as_list(users),
            except_socket_ids=_as_list(skip_sid),
        )

    async def emit(
        self,
        event: str,
        data: Any = None,
        *,
        to: Targets = None,
        room: Targets = None,
        skip_sid: Targets = None,
        namespace: Optional[str] = None,
        user: Targets = None,
        volatile: bool = False,
        reliable_ttl: Optional[float] = None,
    ) -> Optional[str]:
        """Emits `event` to the sockets in `to`/`room` (room names or socket ids),
        every socket of `user`, or the whole namespace when none is given, less
        `skip_sid`. `data` is one argument, a tuple several, None none; `bytes`
        travel as binary.

        With `reliable_ttl` (seconds) the emit is at-least-once: only `user` and
        socket ids in `to` may be targeted, the client gets `{"messageId": ...}`
        as its last argument with an ack callback, and the message id is returned.
        """
        text, attachments = _codec.encode(_codec.to_args(data))
        targets = to if to is not None else room
        if reliable_ttl is not None:
            if skip_sid is not None:
                raise ValueError("reliable emits take no skip_sid")
            selector = self._selector(sids=targets, users=user, namespace=namespace)
            ttl_ms = max(1, int(reliable_ttl * 1000))
        else:
            selector = self._selector(rooms=targets, users=user, skip_sid=skip_sid, namespace=namespace)
            ttl_ms = 0
        response = await self._unary(
            "Emit",
            pb.EmitRequest(
                to=selector,
                event=event,
                args_json=text,
                attachments=attachments,
                volatile=volatile,
                at_least_once=reliable_ttl is not None,
                ttl_ms=ttl_ms,
            ),
        )
        return response.message_id or None

    async def send(self, data: Any, **kwargs: Any) -> Optional[str]:
        """`emit("message", data, ...)`."""
        return await self.emit("message", data, **kwargs)

    async def call(
        self,
        event: str,
        data: Any = None,
        *,
        to: Optional[str] = None,
        sid: Optional[str] = None,
        namespace: Optional[str] = None,
        timeout: float = 60,
    ) -> Any:
        """Emits `event` to one socket with an ack callback and returns what the
        client acknowledged with (None for nothing, one value, or a tuple).
        Raises `roomcast.TimeoutError` when no ack came within `timeout` seconds
        (at most 300) or the socket is not connected."""
        target = to if to is not None else sid
        if not target:
            raise ValueError("call needs the socket id (to=...)")
        if not 0 < timeout <= MAX_ACK_TIMEOUT:
            raise ValueError(f"timeout must be in (0, {MAX_ACK_TIMEOUT:g}] seconds")
        text, attachments = _codec.encode(_codec.to_args(data))
        response = await self._unary(
            "EmitWithAck",
            pb.EmitWithAckRequest(
                to=self._selector(sids=target, namespace=namespace),
                event=event,
                args_json=text,
                attachments=attachments,
                timeout_ms=max(1, int(timeout * 1000)),
            ),
            timeout=timeout + self.call_timeout,
        )
        for result in response.results:
            if result.socket_id == target and result.acked:
                return _codec.ack_value(_codec.decode(result.args_json, result.attachments))
        if not response.results:
            raise TimeoutError(f"no socket {target} in namespace {self._ns(namespace)}")
        raise TimeoutError(f"socket {target} did not acknowledge {event!r} within {timeout:g}s")

    async def enter_room(self, sid: str, room: Union[str, Iterable[str]], namespace: Optional[str] = None) -> None:
        """Adds a socket to a room (or several), wherever it is connected."""
        await self._unary(
            "JoinRooms", pb.RoomsRequest(target=self._selector(sids=sid, namespace=namespace), rooms=_as_list(room))
        )

    async def leave_room(self, sid: str, room: Union[str, Iterable[str]], namespace: Optional[str] = None) -> None:
        """Removes a socket from a room (or several)."""
        await self._unary(
            "LeaveRooms", pb.RoomsRequest(target=self._selector(sids=sid, namespace=namespace), rooms=_as_list(room))
        )

    async def close_room(self, room: str, namespace: Optional[str] = None) -> None:
        """Removes every socket from a room."""
        await self._unary(
            "LeaveRooms", pb.RoomsRequest(target=self._selector(rooms=room, namespace=namespace), rooms=[room])
        )

    async def disconnect(self, sid: str, namespace: Optional[str] = None, *, close: bool = False) -> int:
        """Disconnects a socket from its namespace (its client sees
        "io server disconnect"); `close=True` closes its whole connection.
        Returns how many sockets were disconnected (0 when it was gone)."""
        response = await self._unary(
            "DisconnectSockets",
            pb.DisconnectSocketsRequest(target=self._selector(sids=sid, namespace=namespace), close=close),
        )
        return response.disconnected

    async def fetch_sockets(
        self,
        room: Targets = None,
        *,
        to: Targets = None,
        user: Targets = None,
        namespace: Optional[str] = None,
    ) -> List[Socket]:
        """The sockets in `room` (room names or socket ids; `to` is a synonym), of
        `user`, or of the whole namespace, on every edge."""
        rooms = to if to is not None else room
        response = await self._unary(
            "FetchSockets", pb.FetchSocketsRequest(target=self._selector(rooms=rooms, users=user, namespace=namespace))
        )
        return [
            Socket(
                sid=s.id,
                user_id=s.user_id,
                namespace=s.namespace,
                node_id=s.node_id,
                rooms=list(s.rooms),
                connected_at_ms=s.connected_at_ms,
                remote_addr=s.remote_addr,
                transport=s.transport,
                query=dict(s.query),
                headers=dict(s.headers),
                data=_json_or(s.data_json, None),
            )
            for s in response.sockets
        ]

    async def rooms(self, sid: str, namespace: Optional[str] = None) -> List[str]:
        """The rooms a socket is in (its own id included); [] when it is gone."""
        sockets = await self.fetch_sockets(to=sid, namespace=namespace)
        return sockets[0].rooms if sockets else []

    async def presence(self, user: Targets) -> Dict[str, UserStatus]:
        """Whether each user is online, with how many sockets, across the
        cluster; keyed by user id. Needs presence on the server."""
        users = _as_list(user)
        res = await self._unary("GetPresence", pb.GetPresenceRequest(user_ids=users))
        return {
            u.user_id: UserStatus(u.user_id, u.online, u.last_seen_ms, u.sockets) for u in res.users
        }

    async def room_users(self, room: str, namespace: Optional[str] = None) -> List[str]:
        """The distinct users with a socket in a room (anonymous sockets not
        counted)."""
        res = await self._unary(
            "GetPresence", pb.GetPresenceRequest(room=room, namespace=self._ns(namespace))
        )
        return list(res.room_user_ids)

    async def get_delivery(self, message_id: str) -> Delivery:
        """The outcome of a reliable emit, per recipient."""
        d = await self._unary("GetDelivery", pb.GetDeliveryRequest(message_id=message_id))
        return Delivery(
            message_id=d.message_id,
            namespace=d.namespace,
            event=d.event,
            status=_status_name(d.status),
            recipients=[
                Recipient(r.user_id, r.socket_id, _status_name(r.status), r.done_at_ms) for r in d.recipients
            ],
            created_at_ms=d.created_at_ms,
            expires_at_ms=d.expires_at_ms,
        )

    # --- the streams ------------------------------------------------------------

    def _streams(self) -> Dict[str, Callable[[], Any]]:
        names = set(self._handlers)
        streams: Dict[str, Callable[[], Any]] = {}
        if names & set(LIFECYCLE):
            request = pb.WatchConnectionsRequest(namespace=self.namespace or "", group=self.group)
            streams["connections"] = lambda r=request: self.api.WatchConnections(r, metadata=self._metadata)
        events = names - set(LIFECYCLE)
        if events:
            request = pb.ConsumeEventsRequest(
                namespace=self.namespace or "",
                events=[] if "*" in events else sorted(events),
                group=self.group,
            )
            streams["events"] = lambda r=request: self.api.ConsumeEvents(r, metadata=self._metadata)
        return streams

    async def run(self) -> None:
        """Runs the streams the handlers need until `close()`: WatchConnections
        for "connect"/"disconnect" handlers, ConsumeEvents for the others. A
        stream that breaks (UNAVAILABLE: roomcast restarted, the network
        dropped) is opened again with backoff, and `on_reconnect` handlers are
        told. Raises `StreamError` for an error retrying cannot fix."""
        streams = self._streams()
        for name in streams:
            self._live.setdefault(name, asyncio.Event())
        loops = [asyncio.ensure_future(self._stream_loop(name, open_call)) for name, open_call in streams.items()]
        try:
            if loops:
                await asyncio.gather(*loops)
            else:
                await asyncio.Event().wait()  # nothing to stream: wait for close()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    async def wait_live(self, timeout: Optional[float] = None) -> None:
        """Waits until every stream has its `roomcast-stream: live` headers: an
        event published from then on is received."""

        async def all_live() -> None:
            while set(self._live) != set(self._streams()):
                await asyncio.sleep(0.01)
            for name, live in list(self._live.items()):
                await live.wait()

        waiter = asyncio.ensure_future(all_live())
        pending = {waiter}
        if self._runner is not None:
            pending.add(self._runner)
        done, _ = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            if self._runner is not None and self._runner in done:
                self._runner.result()  # raises the runner's error
                raise StreamError("run", ApiError("run", grpc.StatusCode.CANCELLED, "stopped before live"))
            raise asyncio.TimeoutError("roomcast streams not live in time")

    async def _stream_loop(self, name: str, open_call: Callable[[], Any]) -> None:
        live = self._live[name]
        attempt = 0
        was_live = False
        while True:
            call = open_call()
            try:
                await call.initial_metadata()
                if not call.done():
                    live.set()
                    attempt = 0
                    if was_live:
                        logger.info("roomcast %s stream live again; events of the gap were missed", name)
                        for handler in self._reconnect_handlers:
                            self._spawn(self._guard(f"on_reconnect({name})", _invoke(handler, name)))
                    was_live = True
                async for message in call:
                    if name == "events":
                        await self._schedule(self._on_client_event(message))
                    else:
                        await self._schedule(self._on_connection(message))
                code, details = await call.code(), await call.details()
            except grpc.aio.AioRpcError as err:
                code, details = err.code(), err.details()
            except asyncio.CancelledError:
                call.cancel()
                raise
            live.clear()
            if code not in RETRYABLE and code != grpc.StatusCode.OK:
                raise StreamError(name, ApiError(name, code, details))
            delay = min(self.reconnect_delay_max, self.reconnect_delay * 2**attempt) * random.uniform(0.5, 1.0)
            attempt = min(attempt + 1, 16)
            logger.warning("roomcast %s stream ended (%s: %s); reopening in %.2fs", name, code.name, details, delay)
            await asyncio.sleep(delay)

    async def _schedule(self, coro: Awaitable[None]) -> None:
        if self.async_handlers:
            self._spawn(coro)
        else:
            await coro

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guard(what: str, coro: Awaitable[Any]) -> None:
        try:
            await coro
        except Exception:
            logger.exception("roomcast handler %s failed", what)

    async def _on_client_event(self, ev: pb.ClientEvent) -> None:
        handler = self._handlers.get(ev.event)
        catch_all = handler is None
        if handler is None:
            handler = self._handlers.get("*")
        if handler is None:
            return
        try:
            args = _codec.decode(ev.args_json, ev.attachments)
        except ValueError as err:
            logger.warning("roomcast event %r from %s has bad arguments: %s", ev.event, ev.socket_id, err)
            return
        try:
            if catch_all:
                result = await _invoke(handler, ev.event, ev.socket_id, *args)
            else:
                result = await _invoke(handler, ev.socket_id, *args)
        except Exception:
            logger.exception("roomcast handler of %r failed (sid %s)", ev.event, ev.socket_id)
            return
        if ev.HasField("ack_id"):
            text, attachments = _codec.encode(_codec.to_args(result))
            try:
                await self._unary(
                    "Reply",
                    pb.ReplyRequest(
                        reply_to=ev.reply_to,
                        socket_id=ev.socket_id,
                        namespace=ev.namespace,
                        ack_id=ev.ack_id,
                        args_json=text,
                        attachments=attachments,
                    ),
                )
            except ApiError as err:
                logger.warning("roomcast reply to %r of %s failed: %s", ev.event, ev.socket_id, err)

    async def _on_connection(self, ev: pb.ConnectionEvent) -> None:
        conn = Connection(
            kind=ev.kind,
            sid=ev.socket_id,
            user_id=ev.user_id,
            namespace=ev.namespace,
            node_id=ev.node_id,
            at_ms=ev.at_ms,
            rooms=list(ev.rooms),
            auth=_json_or(ev.auth_json, {}),
            query=dict(ev.query),
            headers=dict(ev.headers),
            remote_addr=ev.remote_addr,
            transport=ev.transport,
            data=_json_or(ev.data_json, None),
            recovered=ev.recovered,
            reason=ev.reason,
        )
        handler = self._handlers.get(conn.kind)
        if handler is None:
            return
        if conn.kind == "connect":
            args: Tuple[Any, ...] = (conn.sid, _environ(conn), conn.auth)
            if not _accepts(handler, 3):
                args = args[:2]
            refused = False
            try:
                refused = await _invoke(handler, *args) is False
            except ConnectionRefusedError:
                refused = True
            except Exception:
                logger.exception("roomcast connect handler failed (sid %s)", conn.sid)
                return
            if refused:
                # roomcast let the socket in at the edge already; the closest
                # thing to a refusal is disconnecting it now.
                logger.info("roomcast connect handler refused %s; disconnecting it", conn.sid)
                try:
                    await self.disconnect(conn.sid, namespace=conn.namespace)
                except ApiError as err:
                    logger.warning("roomcast disconnect of refused %s failed: %s", conn.sid, err)
        else:
            args = (conn.sid, conn.reason)
            if not _accepts(handler, 2):
                args = args[:1]
            await self._guard(f"disconnect({conn.sid})", _invoke(handler, *args))

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> asyncio.Task:
        """Starts `run()` in a background task (what `async with` does)."""
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self.run())
        return self._runner

    async def wait(self) -> None:
        """Waits until the streams started by `start()` (or `async with`) stop:
        returns after `close()`, raises `StreamError` when they failed."""
        runner = self._runner
        if runner is None:
            return
        try:
            await asyncio.shield(runner)
        except asyncio.CancelledError:
            if not runner.cancelled():
                raise

    async def close(self) -> None:
        """Stops the streams and running handlers and closes the channel."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._live.clear()
        if self._channel is not None:
            channel, self._channel, self._stub = self._channel, None, None
            await channel.close()

    async def __aenter__(self) -> "Server":
        self.start()
        try:
            await self.wait_live(timeout=None)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        runner = self._runner
        error: Optional[BaseException] = None
        if runner is not None and runner.done() and not runner.cancelled():
            error = runner.exception()
        await self.close()
        if error is not None and exc[0] is None:
            raise error
