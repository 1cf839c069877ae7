"""The live-mesh fixtures: tests/integration/tests/mesh/python_sdk.rs starts
a mesh in-process and runs this suite with its addresses in the environment:

- AGENTMESH_SDK_GRPC_URL: the gateway's public gRPC (http://host:port)
- AGENTMESH_SDK_TOKEN: an operator token of a tenant of its own
- AGENTMESH_SDK_VIEWER_TOKEN: a viewer token of the same tenant
- AGENTMESH_SDK_OTHER_TOKEN: a viewer token of another tenant
- AGENTMESH_SDK_OTLP_URL: the trace-collector's OTLP/HTTP base URL
- AGENTMESH_SDK_SERVICE_TOKEN: a service token for that receiver (optional:
  only where the mesh checks service tokens)
- AGENTMESH_SDK_TENANT: that tenant
- AGENTMESH_SDK_MODEL: a model the mesh's simulator serves

The live tests fail (not skip) when the required ones are missing.
"""

import os
import uuid

import pytest


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: run the suite through "
            "`cargo test -p mesh-integration --test mesh -- python_sdk::`"
        )
    return value


class Mesh:
    def __init__(self) -> None:
        self.grpc_url = _env("AGENTMESH_SDK_GRPC_URL")
        self.token = _env("AGENTMESH_SDK_TOKEN")
        self.viewer_token = _env("AGENTMESH_SDK_VIEWER_TOKEN")
        self.other_tenant_token = _env("AGENTMESH_SDK_OTHER_TOKEN")
        self.otlp_url = _env("AGENTMESH_SDK_OTLP_URL")
        self.service_token = os.environ.get("AGENTMESH_SDK_SERVICE_TOKEN", "")
        self.tenant = _env("AGENTMESH_SDK_TENANT")
        self.model = _env("AGENTMESH_SDK_MODEL")


@pytest.fixture(scope="session")
def mesh() -> Mesh:
    return Mesh()


@pytest.fixture
def client(mesh):
    from agentmesh import Client

    with Client(mesh.grpc_url, mesh.token, timeout=20) as c:
        yield c


@pytest.fixture
def name() -> str:
    """A fresh resource name per test."""
    return f"sdk-{uuid.uuid4().hex[:8]}"
