"""OpenTelemetry traces: with --otlp-endpoint, an emit's trace holds the gRPC
span of the control plane and the delivery span of the edge, across NATS, as
an OTLP receiver started here sees them."""

import threading
from concurrent import futures

import grpc
import socketio
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from kit import SECRET, TIMEOUT, NatsServer, Roomcast, mint_token, wait_for


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps every span: (service, name, trace id, parent)."""

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
                        self.spans.append((service, span.name, span.trace_id.hex(), span.parent_span_id.hex()))
        return trace_service_pb2.ExportTraceServiceResponse()

    def named(self, service, name):
        with self.lock:
            return [s for s in self.spans if s[0] == service and s[1] == name]


def test_an_emit_is_one_trace_from_the_grpc_call_to_the_edge(pb):
    messages, stubs = pb
    receiver = Receiver()
    nats = NatsServer()
    otlp = ["--otlp-endpoint", f"http://127.0.0.1:{receiver.port}"]
    edge = Roomcast("edge", "--nats-url", nats.url, "--jwt-secret", SECRET, *otlp)
    control = Roomcast("control", "--nats-url", nats.url, *otlp)
    client = socketio.Client(reconnection=False)
    got = []
    client.on("traced", lambda *args: got.append(args))
    try:
        client.connect(edge.http_url, auth={"token": mint_token("tracy")}, transports=["websocket"], wait_timeout=TIMEOUT)
        with grpc.insecure_channel(control.grpc_addr) as channel:
            stubs.RoomcastStub(channel).Emit(
                messages.EmitRequest(
                    to=messages.Selector(socket_ids=[client.get_sid("/")]), event="traced", args_json="[1]"
                ),
                timeout=TIMEOUT,
            )
        wait_for(lambda: got, "the traced event")
        emits = wait_for(lambda: receiver.named("roomcast-control", "Emit"), "the control plane's Emit span", timeout=15)
        trace_id = emits[0][2]
        delivers = wait_for(
            lambda: [s for s in receiver.named("roomcast-edge", "deliver") if s[2] == trace_id],
            "the edge's deliver span in the same trace",
            timeout=15,
        )
        assert delivers[0][3], "the deliver span has a parent"
    finally:
        client.disconnect()
        for proc in (edge, control):
            assert proc.stop() == 0
        nats.stop()
        receiver.server.stop(0)
