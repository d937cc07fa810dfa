"""Reads an event loop makes itself (tenure.store.asyncreads): the same answers as the store's own reads."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tenure.errors import StoreUnavailable
from tenure.store.postgres_reads import PostgresReads
from tenure.store.protocol import EngineStore


def test_a_read_on_the_loop_sees_what_the_store_wrote_at_every_version(store: EngineStore) -> None:
    r = store.create("image", {"name": "ubuntu"})
    reads = store.async_reads()

    async def read_along() -> list[object]:
        seen = [await reads.find(r.id)]
        moved = store.fire(r.id, "upload")
        seen.append(await reads.find(r.id))
        seen.append(moved)
        await reads.close()
        return seen

    first, second, moved = asyncio.run(read_along())

    assert first == r
    assert second == moved


def test_an_unknown_id_or_one_no_resource_can_have_reads_as_none(store: EngineStore) -> None:
    reads = store.async_reads()

    async def both() -> tuple[object, object]:
        try:
            return await reads.find("0" * 32), await reads.find("a\x00b")
        finally:
            await reads.close()

    assert asyncio.run(both()) == (None, None)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_a_postgres_server_that_cannot_be_reached_is_store_unavailable() -> None:
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres"
    reads = PostgresReads(url, target="nowhere", pool_size=1, timeout=1.0)

    async def read() -> object:
        try:
            return await reads.find("0" * 32)
        finally:
            await reads.close()

    with pytest.raises(StoreUnavailable) as caught:
        asyncio.run(read())
    assert caught.value.target == "nowhere"
