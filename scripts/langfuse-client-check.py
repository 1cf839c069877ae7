"""Sends one trace with the official Langfuse Python SDK (v3, which exports
over OpenTelemetry to `<host>/api/public/otel/v1/traces` with HTTP Basic
auth `public_key:secret_key`) to the trace-collector's Langfuse-compatible
endpoint, and prints the ids it created as JSON.

The SDK is configured the way a Langfuse user configures it, from the
environment: LANGFUSE_HOST, LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY.

The trace: a root span `support-request` (user and session set on the
trace) with a generation `llm-call` (model gpt-4o, usage input 21 /
output 8) and a span `lookup-order` under it, in that order.
`tests/integration/tests/mesh/traces_langfuse_sdk.rs` runs this and reads
the trace back through the query API. Needs `langfuse` (scripts/test
installs it into .venv).

Usage: langfuse-client-check.py
"""

from __future__ import annotations

import json
import sys

from langfuse import Langfuse


def main() -> int:
    langfuse = Langfuse()
    with langfuse.start_as_current_observation(as_type="span", name="support-request") as root:
        root.update_trace(user_id="user-7", session_id="langfuse-session")
        with langfuse.start_as_current_observation(
            as_type="generation",
            name="llm-call",
            model="gpt-4o",
            model_parameters={"temperature": 0.2},
            input=[{"role": "user", "content": "Where is order 8812?"}],
            usage_details={"input": 21, "output": 8},
        ) as generation:
            generation.update(output="It ships tomorrow.")
        with langfuse.start_as_current_observation(as_type="span", name="lookup-order") as span:
            span.update(output={"status": "shipped"})
        ids = {
            "trace_id": root.trace_id,
            "root_id": root.id,
            "generation_id": generation.id,
            "span_id": span.id,
        }
    # The SDK batches spans in a background processor; flush sends them now.
    langfuse.flush()
    langfuse.shutdown()
    json.dump(ids, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
