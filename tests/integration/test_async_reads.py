"""Reads an event loop makes itself (tenure.store.asyncreads): the same answers as the store's own reads."""

from __future__ import annotations

import asyncio

import psycopg
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


def test_a_postgres_server_that_cannot_be_reached_is_store_unavailable(free_tcp_port: int) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_tcp_port}/postgres"
    reads = PostgresReads(url, target="nowhere", pool_size=1, timeout=1.0)

    async def read() -> object:
        try:
            return await reads.find("0" * 32)
        finally:
            await reads.close()

    with pytest.raises(StoreUnavailable) as caught:
        asyncio.run(read())
    assert caught.value.target == "nowhere"


@pytest.mark.postgres
def test_reads_arriving_together_share_statements_and_each_gets_its_own_answer(pg_store: EngineStore) -> None:
    made = [pg_store.create("image", {"name": f"img-{i}"}) for i in range(40)]
    moved = pg_store.fire(made[0].id, "upload")
    asked = [r.id for r in made] + [made[1].id, "0" * 32, made[2].id]
    reads = pg_store.async_reads()
    assert isinstance(reads, PostgresReads)

    async def all_at_once() -> list[object]:
        try:
            return list(await asyncio.gather(*(reads.find(i) for i in asked)))
        finally:
            await reads.close()

    got = asyncio.run(all_at_once())

    assert got == [moved, *made[1:], made[1], None, made[2]]
    assert reads.answered == len(asked)
    assert reads.sent < len(asked) / 4, f"{reads.sent} statements for {len(asked)} reads"


@pytest.mark.postgres
def test_a_read_whose_caller_gave_up_leaves_the_others_of_its_statement_answered(pg_store: EngineStore) -> None:
    made = [pg_store.create("image", {"name": f"img-{i}"}) for i in range(3)]
    reads = pg_store.async_reads()

    async def one_gives_up() -> list[object]:
        try:
            tasks = [asyncio.ensure_future(reads.find(r.id)) for r in made]
            await asyncio.sleep(0)
            tasks[1].cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            return [*done, await reads.find(made[1].id)]
        finally:
            await reads.close()

    first, gave_up, third, again = asyncio.run(one_gives_up())

    assert (first, third, again) == (made[0], made[2], made[1])
    assert isinstance(gave_up, asyncio.CancelledError)


def test_every_read_of_an_unreachable_server_is_store_unavailable(free_tcp_port: int) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_tcp_port}/postgres"
    reads = PostgresReads(url, target="nowhere", pool_size=1, timeout=1.0)

    async def read() -> list[object]:
        try:
            return list(await asyncio.gather(*(reads.find(f"{i:032d}") for i in range(5)), return_exceptions=True))
        finally:
            await reads.close()

    answers = asyncio.run(read())
    assert all(isinstance(a, StoreUnavailable) and a.target == "nowhere" for a in answers), answers
    assert len({id(a) for a in answers}) == len(answers), "each read gets its own error"


@pytest.mark.postgres
def test_a_row_that_cannot_be_read_fails_its_statement_and_nothing_hangs(pg_store: EngineStore, pg_url: str) -> None:
    good, bad = pg_store.create("image", {"name": "good"}), pg_store.create("image", {"name": "bad"})
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("""UPDATE resources SET in_use_by = '{"party": {}}' WHERE id = %s""", (bad.id,))
    reads = pg_store.async_reads()

    async def read() -> tuple[list[object], object]:
        try:
            together = await asyncio.wait_for(
                asyncio.gather(reads.find(good.id), reads.find(bad.id), return_exceptions=True), timeout=10
            )
            return list(together), await asyncio.wait_for(reads.find(good.id), timeout=10)
        finally:
            await reads.close()

    together, alone = asyncio.run(read())
    assert all(isinstance(a, KeyError) for a in together), together
    assert alone == good, "the next statement is read as ever"


@pytest.mark.postgres
def test_closing_while_statements_are_out_answers_every_read_and_reads_go_on_after(pg_store: EngineStore) -> None:
    made = [pg_store.create("image", {"name": f"img-{i}"}) for i in range(5)]
    reads = pg_store.async_reads()

    async def close_midway() -> tuple[list[object], object]:
        pending = [asyncio.ensure_future(reads.find(r.id)) for r in made]
        await asyncio.sleep(0)  # the first statements are started, not yet run
        await reads.close()
        answers = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), timeout=10)
        try:
            return list(answers), await asyncio.wait_for(reads.find(made[0].id), timeout=10)
        finally:
            await reads.close()

    answers, after = asyncio.run(close_midway())
    assert all(isinstance(a, StoreUnavailable) or a in made for a in answers), answers
    assert after == made[0]
