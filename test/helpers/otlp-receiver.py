"""An OTLP/gRPC trace receiver for the trace test, on the official opentelemetry-proto stubs.

    .tools/otlp-venv/bin/python test/helpers/otlp-receiver.py [port] [--count]

Serves opentelemetry.proto.collector.trace.v1.TraceService on 127.0.0.1 (port 0 by default),
prints `listening <port>` once it serves, then one JSON line per span it receives: the span's
fields as the OTLP JSON mapping writes them (traceId and spanId in hex, as OTLP/JSON does), plus
`service`, its resource's service.name. With --count (the benchmark), only `spans <n>` when it
stops. Stops on SIGTERM or when stdin closes.
"""

import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def service_name(resource):
    for attribute in resource.attributes:
        if attribute.key == "service.name":
            return attribute.value.string_value
    return ""


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, count_only):
        self.lock = threading.Lock()
        self.count_only = count_only
        self.count = 0

    def Export(self, request, context):
        if self.count_only:
            n = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            with self.lock:
                self.count += n
            return trace_service_pb2.ExportTraceServiceResponse()
        lines = []
        for resource_spans in request.resource_spans:
            service = service_name(resource_spans.resource)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    fields = json_format.MessageToDict(span)
                    # OTLP/JSON writes ids as hex, not base64 as the generic protobuf mapping.
                    fields["traceId"] = span.trace_id.hex()
                    fields["spanId"] = span.span_id.hex()
                    fields["parentSpanId"] = span.parent_span_id.hex()
                    fields["service"] = service
                    lines.append(json.dumps(fields))
        with self.lock:
            for line in lines:
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    args = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    port = int(args[0]) if args else 0
    receiver = Receiver("--count" in sys.argv)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"listening {bound}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait()
    server.stop(1).wait()
    if receiver.count_only:
        print(f"spans {receiver.count}", flush=True)


if __name__ == "__main__":
    main()
