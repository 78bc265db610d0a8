"""The outbox's cheaper bookkeeping (in-memory counter and count, deletes a batch at a time,
fsync per message only when durable) keeps its promises: order, nothing lost, status right."""

from __future__ import annotations

from pathlib import Path

import pytest

from erab.gateway.config import SiteConfigError, load_site_config
from erab.gateway.outbox import Outbox
from tests.gateway.test_outbox import GW, LinkDropsAfter, telemetry


async def test_a_failure_inside_a_batch_keeps_exactly_the_unsent(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", GW) as box:
        for i in range(150):  # more than one drain batch (64)
            box.put(telemetry(box, float(i)))
        link = LinkDropsAfter(ok=100)
        with pytest.raises(ConnectionError):
            await box.drain(link)
        assert [m.seq for m in link.got] == list(range(1, 101))
        status = box.status()
        assert (status.backlog, status.oldest_seq, status.last_seq) == (50, 101, 150)
        assert (box.backlog, box.dropped_total) == (50, 0)  # the in-memory figures agree

    with Outbox(tmp_path / "o.sqlite", GW) as again:  # what is on disk agrees
        assert again.status().backlog == 50
        assert again.next_seq() == 151
        rest = LinkDropsAfter()
        assert await again.drain(rest) == 50
        assert [m.seq for m in rest.got] == list(range(101, 151))
        assert again.status().backlog == 0



def test_durable_is_the_default_and_fleet_outboxes_skip_the_fsync(tmp_path: Path) -> None:
    with Outbox(tmp_path / "a.sqlite", GW) as box:
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with Outbox(tmp_path / "b.sqlite", GW, durable=False) as box:
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        box.put(telemetry(box, 1.0))
    with Outbox(tmp_path / "b.sqlite", GW) as box:
        assert box.status().backlog == 1


def test_the_site_config_says_whether_the_outbox_is_durable(tmp_path: Path) -> None:
    base = '''gateway_id = "gw-1"\nsite_id = "s-1"\n[broker]\nhost = "127.0.0.1"\n
[identity]\ndir = "id"\n'''
    path = tmp_path / "site.toml"
    path.write_text(base)
    assert load_site_config(path).outbox_durable is True
    path.write_text(base + "[outbox]\ndurable = false\n")
    assert load_site_config(path).outbox_durable is False
    path.write_text(base + '[outbox]\ndurable = "no"\n')
    with pytest.raises(SiteConfigError, match="durable"):
        load_site_config(path)


def test_the_in_memory_drop_count_agrees_with_the_file(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", GW, max_messages=10) as box:
        for i in range(25):
            box.put(telemetry(box, float(i)))
        assert (box.backlog, box.dropped_total) == (10, 15)
        assert (box.status().backlog, box.status().dropped_total) == (10, 15)
    with Outbox(tmp_path / "o.sqlite", GW, max_messages=10) as again:
        assert (again.backlog, again.dropped_total) == (10, 15)


def test_a_verifier_state_that_is_not_durable_is_saved_without_an_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from erab.security import FileVerifierStateStore, VerifierState

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    state = VerifierState(last_sequence=7, current_key="A" * 43)
    FileVerifierStateStore(tmp_path / "a.json").save(state)
    assert len(synced) == 1
    quick = FileVerifierStateStore(tmp_path / "b.json", durable=False)
    quick.save(state)
    assert len(synced) == 1  # no fsync
    assert quick.load() == state  # and the state reads back whole
