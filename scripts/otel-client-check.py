"""Sends one agent trace with the official OpenTelemetry Python SDK to the
trace-collector, over OTLP/HTTP (protobuf, gzip) or OTLP/gRPC, with the
tenant in the `agentmesh-tenant` header, and prints the trace id as JSON.

The trace: `invoke_agent support` (GenAI agent attributes) with a
`chat smollm2` generation (usage tokens, finish reason) and an
`execute_tool search` that fails (error status, recorded exception).
`tests/integration/tests/traces.rs` runs this and reads the trace back
through the query API. Needs opentelemetry-sdk and the two OTLP exporters
(scripts/test installs them into .venv).

Usage: otel-client-check.py --protocol http|grpc --endpoint URL --tenant T [--service-token JWT]

The collector honours the tenant header only with a service token
(`agentmesh-service-token`), which --service-token sends.
"""

from __future__ import annotations

import argparse
import json
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode


def exporter(protocol: str, endpoint: str, tenant: str, service_token: str):
    headers = {"agentmesh-tenant": tenant}
    if service_token:
        headers["agentmesh-service-token"] = service_token
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=f"{endpoint.rstrip('/')}/v1/traces",
            headers=headers,
            compression=Compression.Gzip,
            timeout=10,
        )
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(
        endpoint=endpoint,
        insecure=True,
        headers=tuple(headers.items()),
        timeout=10,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocol", choices=["http", "grpc"], required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--service-token", default="")
    args = parser.parse_args()

    provider = TracerProvider(resource=Resource.create({"service.name": f"otel-python-{args.protocol}"}))
    # Simple (synchronous) processor: each span is exported as it ends, and
    # an export failure is reported before this script exits.
    provider.add_span_processor(SimpleSpanProcessor(exporter(args.protocol, args.endpoint, args.tenant, args.service_token)))
    tracer = provider.get_tracer("agentmesh.otel-client-check")

    with tracer.start_as_current_span(
        "invoke_agent support",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "support",
            "session.id": f"python-{args.protocol}",
        },
    ) as root:
        with tracer.start_as_current_span(
            "chat smollm2",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "smollm2",
                "gen_ai.response.model": "smollm2",
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.usage.output_tokens": 7,
                "gen_ai.response.finish_reasons": ["stop"],
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool search",
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
            record_exception=False,
            set_status_on_exception=False,
        ) as tool:
            error = TimeoutError("search timed out")
            tool.record_exception(error)
            tool.set_attribute("error.type", "TimeoutError")
            tool.set_status(Status(StatusCode.ERROR, "search timed out"))
        trace_id = format(root.get_span_context().trace_id, "032x")

    ok = provider.force_flush(10_000)
    provider.shutdown()
    print(json.dumps({"protocol": args.protocol, "trace_id": trace_id, "flushed": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
