"""OpenTelemetry traces: with --otlp-endpoint, an emit's trace holds the gRPC
span of the control plane and the delivery span of the edge, across NATS, as
an OTLP receiver started here sees them; a caller's W3C `traceparent` is
continued; spans have the right kinds, and failed calls an error status."""

import os
import threading
from concurrent import futures

import grpc
import pytest
import socketio
import websocket
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from kit import SECRET, TIMEOUT, NatsServer, Roomcast, mint_token, wait_for

SERVER, PRODUCER, CONSUMER = (trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_PRODUCER,
                              trace_pb2.Span.SPAN_KIND_CONSUMER)
ERROR = trace_pb2.Status.STATUS_CODE_ERROR


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps every span, with its service name."""

    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):
        with self.lock:
            for rs in request.resource_spans:
                service = next(
                    (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), ""
                )
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        self.spans.append((service, span))
        return trace_service_pb2.ExportTraceServiceResponse()

    def named(self, service, name, trace_id=None):
        with self.lock:
            return [s for svc, s in self.spans
                    if svc == service and s.name == name and (trace_id is None or s.trace_id.hex() == trace_id)]


@pytest.fixture(scope="module")
def traced(pb):
    """An OTLP receiver, nats-server, an edge (recovery on for rooms feed-*) and
    a control plane exporting to it, and a client of the edge (user "tracy")
    that acks what asks for an ack."""
    receiver = Receiver()
    nats = NatsServer()
    otlp = ["--otlp-endpoint", f"http://127.0.0.1:{receiver.port}"]
    edge = Roomcast("edge", "--nats-url", nats.url, "--jwt-secret", SECRET, "--recovery-room", "feed-*", *otlp)
    control = Roomcast("control", "--nats-url", nats.url, *otlp)
    client = socketio.Client(reconnection=False)
    got = []

    def on_traced(*args):
        got.append(args)
        return "ok"

    client.on("traced", on_traced)
    client.connect(edge.http_url, auth={"token": mint_token("tracy")}, transports=["websocket"], wait_timeout=TIMEOUT)
    channel = grpc.insecure_channel(control.grpc_addr)
    yield receiver, pb[0], pb[1].RoomcastStub(channel), client, got, edge
    channel.close()
    client.disconnect()
    for proc in (edge, control):
        assert proc.stop() == 0
    nats.stop()
    receiver.server.stop(0)


def test_an_emit_is_one_trace_from_the_grpc_call_to_the_edge(traced):
    receiver, messages, api, client, got, _ = traced
    before = len(got)
    api.Emit(messages.EmitRequest(to=messages.Selector(socket_ids=[client.get_sid("/")]), event="traced",
                                  args_json="[1]"), timeout=TIMEOUT)
    wait_for(lambda: len(got) > before, "the traced event")
    (emit,) = wait_for(lambda: receiver.named("roomcast-control", "Emit"), "the control plane's Emit span", timeout=15)
    trace_id = emit.trace_id.hex()
    assert emit.kind == SERVER
    deliver = wait_for(lambda: receiver.named("roomcast-edge", "deliver", trace_id),
                       "the edge's deliver span in the same trace", timeout=15)[0]
    assert deliver.kind == CONSUMER
    # Its parent is the control plane's publication, a PRODUCER span under the call's span.
    publishes = {p.span_id: p for p in receiver.named("roomcast-control", "publish", trace_id)}
    publish = publishes.get(deliver.parent_span_id)
    assert publish is not None, "the deliver span's parent is a publish span"
    assert publish.kind == PRODUCER and publish.parent_span_id == emit.span_id
    assert emit.status.code != ERROR


def test_a_call_with_a_traceparent_joins_the_callers_trace(traced):
    receiver, messages, api, client, _, _ = traced
    trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
    api.FetchSockets(messages.FetchSocketsRequest(target=messages.Selector(socket_ids=[client.get_sid("/")])),
                     timeout=TIMEOUT, metadata=[("traceparent", f"00-{trace_id}-{parent_id}-01")])
    (span,) = wait_for(lambda: receiver.named("roomcast-control", "FetchSockets", trace_id),
                       "the call's span in the caller's trace", timeout=15)
    assert span.parent_span_id.hex() == parent_id
    assert span.kind == SERVER


def test_a_failed_call_has_an_error_status(traced):
    receiver, messages, api, _, _, _ = traced
    trace_id = os.urandom(16).hex()
    with pytest.raises(grpc.RpcError) as bad:
        api.Emit(messages.EmitRequest(to=messages.Selector(rooms=[""]), event="traced", args_json="[1]"),
                 timeout=TIMEOUT, metadata=[("traceparent", f"00-{trace_id}-{os.urandom(8).hex()}-01")])
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (span,) = wait_for(lambda: receiver.named("roomcast-control", "Emit", trace_id), "the failed call's span", timeout=15)
    assert span.status.code == ERROR
    assert span.kind == SERVER
    codes = {a.key: a.value.int_value for a in span.attributes if a.key == "rpc.grpc.status_code"}
    assert codes == {"rpc.grpc.status_code": grpc.StatusCode.INVALID_ARGUMENT.value[0]}


def test_an_at_least_once_emit_has_a_delivery_span(traced):
    receiver, messages, api, _, got, _ = traced
    before = len(got)
    answer = api.Emit(messages.EmitRequest(to=messages.Selector(user_ids=["tracy"]), event="traced", args_json="[2]",
                                           at_least_once=True, ttl_ms=10000), timeout=TIMEOUT)
    assert answer.message_id
    wait_for(lambda: len(got) > before, "the at-least-once event")
    spans = wait_for(lambda: [s for s in receiver.named("roomcast-control", "delivery")
                              if any(a.key == "message_id" and a.value.string_value == answer.message_id
                                     for a in s.attributes)],
                     "the delivery span of the message", timeout=15)
    acked = {a.key: a.value.bool_value for a in spans[0].attributes if a.key == "acked"}
    assert acked == {"acked": True}
    # Its send to the user's edge is a publication on NATS under it.
    wait_for(lambda: [p for p in receiver.named("roomcast-control", "publish", spans[0].trace_id.hex())
                      if p.parent_span_id == spans[0].span_id and p.kind == PRODUCER],
             "the delivery's publish span", timeout=15)


def test_a_recovery_attempt_has_a_recovery_span(traced):
    """A CONNECT that asks to recover a session (here one the edge never
    issued, as a client would after the session expired) runs in a
    `recovery` span that names the outcome."""
    receiver, edge = traced[0], traced[-1]
    ws = websocket.create_connection(
        edge.http_url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket", timeout=TIMEOUT)
    try:
        assert ws.recv().startswith("0{")
        token = mint_token("tracy")
        ws.send('40{"token":"%s","pid":"no-such-session","offset":"7"}' % token)
        answer = ws.recv()
        assert answer.startswith('40{"sid":'), answer  # a fresh socket
    finally:
        ws.close()

    def recoveries():
        return [s for s in receiver.named("roomcast-edge", "recovery")
                if any(a.key == "outcome" and a.value.string_value == "unknown_session" for a in s.attributes)]

    wait_for(recoveries, "the edge's recovery span", timeout=15)
