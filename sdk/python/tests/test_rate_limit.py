"""Against a mesh whose gateway limits submits per tenant
(AGENTMESH_SDK_SUBMITS_PER_MINUTE of them): the next submit raises
RateLimited with the gateway's retry-after, sync and async."""

import asyncio
import os

import pytest

from agentmesh import AsyncClient, RateLimited


@pytest.fixture
def limit() -> int:
    value = os.environ.get("AGENTMESH_SDK_SUBMITS_PER_MINUTE")
    if not value:
        pytest.fail("AGENTMESH_SDK_SUBMITS_PER_MINUTE is not set: run it through python_sdk.rs")
    return int(value)


def test_submits_over_the_limit_raise_rate_limited_with_retry_after(client, mesh, name, limit):
    client.agents.apply({"model": mesh.model, "maxTokens": 4}, name=name)
    for i in range(limit):
        client.tasks.submit(name, f"within the limit {i}")
    with pytest.raises(RateLimited) as limited:
        client.tasks.submit(name, "one too many")
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 60
    assert limited.value.code == "rate_limited"

    async def again():
        async with AsyncClient(mesh.grpc_url, mesh.token) as mesh_client:
            with pytest.raises(RateLimited) as async_limited:
                await mesh_client.tasks.run(name, "still too many")
            return async_limited.value

    assert asyncio.run(again()).retry_after is not None
