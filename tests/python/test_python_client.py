"""python-socketio, a second client implementation independent of socket.io-client,
against a real `roomcast standalone` process driven through gRPC from Python.

The binary is `$ROOMCAST_BIN`, else `<repo>/target/debug/roomcast`. gRPC stubs are
generated from the proto into a temp dir at test time. Every wait has a deadline.
"""

import json
import queue
import threading
import time

import grpc
import jwt
import pytest
import socketio

from kit import REPO, SECRET, TIMEOUT, Standalone, mint_token, wait_for


@pytest.fixture(scope="module")
def server():
    standalone = Standalone("--jwt-secret", SECRET)
    yield standalone
    assert standalone.stop() == 0, "SIGTERM should exit cleanly"


@pytest.fixture
def api(pb, server):
    messages, stubs = pb
    channel = grpc.insecure_channel(server.grpc_addr)
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    yield stubs.RoomcastStub(channel)
    channel.close()


@pytest.fixture
def connect(server):
    """connect(sub, transports) → a connected python-socketio Client; all disconnected at the end."""
    clients = []

    def _connect(sub, transports=("websocket",), **token_claims):
        client = socketio.Client(reconnection=False)
        client.received = queue.Queue()
        client.on("*", lambda event, *args: client.received.put((event, list(args))))
        clients.append(client)
        client.connect(
            server.http_url,
            auth={"token": mint_token(sub, **token_claims)},
            transports=list(transports),
            wait_timeout=TIMEOUT,
        )
        return client

    yield _connect
    for client in clients:
        client.disconnect()


@pytest.mark.parametrize("transports", [["websocket"], ["polling"], ["polling", "websocket"]])
def test_receives_an_emit_from_the_backend(pb, api, connect, transports):
    messages, _ = pb
    client = connect("py-reader", transports)
    sid = client.get_sid("/")

    api.Emit(
        messages.EmitRequest(
            to=messages.Selector(socket_ids=[sid]),
            event="py-news",
            args_json=json.dumps([{"text": "hello"}, 42]),
        ),
        timeout=TIMEOUT,
    )

    event, args = client.received.get(timeout=TIMEOUT)
    assert (event, args) == ("py-news", [{"text": "hello"}, 42])


def test_receives_binary_from_the_backend(pb, api, connect):
    messages, _ = pb
    client = connect("py-binary")
    payload = bytes(range(256))

    api.Emit(
        messages.EmitRequest(
            to=messages.Selector(rooms=[client.get_sid("/")]),
            event="py-file",
            args_json=json.dumps(["blob", {"_placeholder": True, "num": 0}]),
            attachments=[payload],
        ),
        timeout=TIMEOUT,
    )

    assert client.received.get(timeout=TIMEOUT) == ("py-file", ["blob", payload])


def test_an_ack_is_answered_by_the_backend(pb, api, connect):
    messages, _ = pb
    events = api.ConsumeEvents(messages.ConsumeEventsRequest(events=["py-ask"]), timeout=30)
    events.initial_metadata()  # the server answered: the consumer is subscribed
    seen = []

    def backend():
        try:
            for event in events:
                seen.append(event)
                question = json.loads(event.args_json)[0]
                api.Reply(
                    messages.ReplyRequest(
                        reply_to=event.reply_to,
                        socket_id=event.socket_id,
                        namespace=event.namespace,
                        ack_id=event.ack_id,
                        args_json=json.dumps(["answer", question["n"] * 2]),
                    ),
                    timeout=TIMEOUT,
                )
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                raise

    thread = threading.Thread(target=backend, daemon=True)
    thread.start()
    try:
        client = connect("py-asker")
        answer = client.call("py-ask", {"n": 21}, timeout=TIMEOUT)

        assert answer == ("answer", 42)
        (event,) = wait_for(lambda: seen, "the ClientEvent")
        assert event.socket_id == client.get_sid("/")
        assert event.user_id == "py-asker"
        assert event.namespace == "/"
        assert event.event == "py-ask"
        assert event.HasField("ack_id")
    finally:
        events.cancel()
        thread.join(timeout=TIMEOUT)


def test_a_bad_token_is_refused(server):
    client = socketio.Client(reconnection=False)
    errors = []
    client.on("connect_error", lambda data=None: errors.append(data))
    forged = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "not-the-secret-but-just-as-long-0123456789", algorithm="HS256")

    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(server.http_url, auth={"token": forged}, transports=["websocket"], wait_timeout=TIMEOUT)

    assert len(errors) == 1
    message = errors[0]["message"] if isinstance(errors[0], dict) else str(errors[0])
    assert "invalid token" in message
