"""``erab ac ven`` and ``erab ac event`` on the AC's store, market award files, and the store's
event lifecycle and delivery figures."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.cli import main as erab
from erab.clock import RealClock
from erab.openadr import AcStore, AcStoreError
from erab.openadr.award import AwardError, parse_award, read_award
from erab.security import AuditLog, SecurityHome
from tests.openadr.conftest import Pki

SOON = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0).isoformat()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = erab(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_ven_is_added_by_certificate_listed_and_removed(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(pki.home)
    cert, _ = pki.ven("ra-1")
    code, out, _ = run(capsys, "ac", "ven", "add", "ra-1", "--cert", str(cert), "--home", home)
    assert code == 0 and pki.fingerprint("ra-1") in out
    code, out, _ = run(capsys, "ac", "ven", "list", "--json", "--home", home)
    [ven] = json.loads(out)
    assert (ven["ven_id"], ven["fingerprint"]) == ("ra-1", pki.fingerprint("ra-1"))
    code, _, err = run(capsys, "ac", "ven", "add", "ra-2", "--cert", str(cert), "--home", home)
    assert code == 2 and "already has that id or certificate" in err
    assert run(capsys, "ac", "ven", "remove", "ra-1", "--home", home)[0] == 0
    code, _, err = run(capsys, "ac", "ven", "remove", "ra-1", "--home", home)
    assert code == 2 and "no VEN 'ra-1'" in err
    audited = [r.details["event"] for r in AuditLog.for_home(
        SecurityHome(pki.home), RealClock()).store.records() if r.actor == "openadr"]
    assert audited == ["openadr_ven_added", "openadr_ven_removed"]


def test_issuing_a_ven_certificate_writes_what_the_ra_needs(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "for-ra"
    code, _, _ = run(capsys, "ac", "ven", "add", "ra-9", "--issue", "--out-dir", str(out_dir),
                     "--home", str(pki.home))  # fmt: skip
    assert code == 0
    assert {p.name for p in out_dir.iterdir()} == {"ra-9.pem", "ra-9.key.pem", "ca-bundle.pem"}
    assert (out_dir / "ra-9.key.pem").stat().st_mode & 0o077 == 0
    from erab.openadr import fingerprint_of_file

    store = AcStore(pki.home / "ac" / "ac.sqlite")
    assert store.ven("ra-9").fingerprint == fingerprint_of_file(out_dir / "ra-9.pem")
    store.close()


@pytest.mark.parametrize(("argv", "message"), [
    (["--fingerprint", "12:34"], "64 hex digits"),
    (["--cert", "/nonexistent.pem"], "cannot read certificate"),
])  # fmt: skip
def test_a_bad_ven_certificate_is_refused_naming_it(
    pki: Pki, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, "ac", "ven", "add", "x", *argv, "--home", str(pki.home))
    assert code == 2 and message in err and "Traceback" not in err


def test_events_are_created_listed_shown_and_cancelled(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(pki.home)
    run(capsys, "ac", "ven", "add", "ra-1", "--fingerprint", "ab" * 32, "--home", home)
    code, out, _ = run(capsys, "ac", "event", "create", "--ven", "ra-1", "--kw", "-50",
                       "--start", SOON, "--duration", "90m", "--ramp-up", "5m",
                       "--randomise", "2m", "--json", "--home", home)  # fmt: skip
    [created] = json.loads(out)
    assert (created["target_kw"], created["state"], created["ramp_up_s"],
            created["randomise_s"]) == (-50, "new", 300, 120)  # fmt: skip
    code, out, _ = run(capsys, "ac", "event", "list", "--home", home)
    assert created["event_id"] in out and "not yet polled" in out
    code, out, _ = run(capsys, "ac", "event", "cancel", created["event_id"], "--home", home)
    assert code == 0 and "cancelled" in out  # never sent: cancelled at once
    code, _, err = run(capsys, "ac", "event", "cancel", created["event_id"], "--home", home)
    assert code == 2 and "is cancelled: it cannot cancel" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--ven", "nobody", "--kw", "-5"], "no VEN 'nobody'"),
    (["--ven", "ra-1", "--kw", "0"], "non-zero"),
    (["--ven", "ra-1", "--kw", "-5", "--start", "yesterday"], "give HH:MM"),
    (["--ven", "ra-1", "--kw", "-5", "--duration", "forever"], "give e.g."),
    (["--ven", "ra-1", "--kw", "-5", "--start", "2020-01-01T00:00+09:00"], "already over"),
    (["--ven", "ra-1"], "give --ven and --kw"),
])  # fmt: skip
def test_a_bad_event_is_refused_naming_what_was_wrong(
    pki: Pki, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    home = str(pki.home)
    run(capsys, "ac", "ven", "add", "ra-1", "--fingerprint", "ab" * 32, "--home", home)
    code, _, err = run(capsys, "ac", "event", "create", *argv, "--home", home)
    assert code == 2 and message in err and "Traceback" not in err
    store = AcStore(pki.home / "ac" / "ac.sqlite")
    assert store.events() == []
    store.close()


CSV = f"""ven,kw,start,duration,level,ramp_up,randomise
ra-1,-120,{SOON},1h,,5m,2m
ra-2,,{SOON},90m,2,,
"""
TOML = f"""award_id = "jepx-0803-14"
[[award]]
ven = "ra-1"
kw = -120
start = {SOON}
duration = "1h"
[[award]]
ven = "ra-2"
level = 2
start = "{SOON}"
duration = 90
"""


@pytest.mark.parametrize(("kind", "text"), [("csv", CSV), ("toml", TOML)])
def test_an_award_file_becomes_one_event_per_line(kind: str, text: str) -> None:
    award_id, lines = parse_award(text, kind)
    assert award_id == (None if kind == "csv" else "jepx-0803-14")
    assert [(x.ven, x.kw, x.level, x.duration) for x in lines] == [
        ("ra-1", -120, None, timedelta(hours=1)), ("ra-2", 0.0, 2, timedelta(minutes=90))]


def test_an_award_file_through_the_cli_creates_all_or_nothing(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(pki.home)
    run(capsys, "ac", "ven", "add", "ra-1", "--fingerprint", "ab" * 32, "--home", home)
    award = tmp_path / "award.csv"
    award.write_text(CSV)
    code, _, err = run(capsys, "ac", "event", "create", "--award", str(award), "--home", home)
    assert code == 2 and "ra-2 not in the registry" in err
    run(capsys, "ac", "ven", "add", "ra-2", "--fingerprint", "cd" * 32, "--home", home)
    code, out, _ = run(capsys, "ac", "event", "create", "--award", str(award), "--json",
                       "--home", home)  # fmt: skip
    events = json.loads(out)
    assert [(e["ven"], e["signal"], e["level"]) for e in events] == [
        ("ra-1", "LOAD_DISPATCH", None), ("ra-2", "SIMPLE", 2)]
    assert all(e["source"] == "award:award.csv" for e in events)


@pytest.mark.parametrize(("text", "message"), [
    ("ven,kw\nra-1,-5\n", "lacks duration, start"),
    (f"ven,kw,start,duration\nra-1,abc,{SOON},1h\n", "line 2: could not convert"),
    ("ven,kw,start,duration\nra-1,-5,2026-08-03T14:00,1h\n", "line 2: start"),
    (f"ven,kw,start,duration\nra-1,-5,{SOON},soon\n", "line 2: duration 'soon'"),
    (f"ven,kw,start,duration,level\nra-1,,{SOON},1h,7\n", "level 7 is not 0-3"),
    ("ven,kw,start,duration\n", "no award lines"),
])  # fmt: skip
def test_a_bad_award_line_is_named(text: str, message: str) -> None:
    with pytest.raises(AwardError, match=message):
        parse_award(text, "csv")


def test_an_award_file_that_is_not_csv_or_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "award.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(AwardError, match=r"award.xlsx: .*\.csv or \.toml"):
        read_award(path)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400), st.sampled_from(["csv", "toml"]))
def test_any_award_text_is_read_or_refused_with_a_reason(text: str, kind: str) -> None:
    try:
        _, lines = parse_award(text, kind)
    except AwardError as exc:
        assert str(exc)
    else:
        assert all(x.start.tzinfo is not None and x.duration > timedelta(0) for x in lines)


def test_the_event_lifecycle_is_a_table(store: AcStore) -> None:
    store.add_ven("ra-1", "ab" * 32)
    event = store.create_event("ra-1", -5, datetime.now(UTC), timedelta(hours=1))
    assert store.advance(event.event_id, "queue").state == "queued"
    cancelling = store.advance(event.event_id, "cancel")
    assert (cancelling.state, cancelling.modification) == ("cancelling", 1)
    assert store.advance(event.event_id, "confirm").state == "cancelled"
    with pytest.raises(AcStoreError, match="is cancelled: it cannot queue"):
        store.advance(event.event_id, "queue")
    other = store.create_event("ra-1", -5, datetime.now(UTC), timedelta(hours=1))
    store.advance(other.event_id, "queue")
    assert store.advance(other.event_id, "end").state == "completed"
    assert store.events(live=True) == []


def test_delivery_is_the_mean_during_the_event_minus_the_last_report_before(
    store: AcStore,
) -> None:
    store.add_ven("ra-1", "ab" * 32)
    start = datetime.now(UTC) + timedelta(minutes=1)
    event = store.create_event("ra-1", -40, start, timedelta(minutes=30))
    store.add_reports("ra-1", "fleet_kw", [(start - timedelta(minutes=5), 100.0),
                                           (start + timedelta(minutes=1), 70.0),
                                           (start + timedelta(minutes=2), 60.0)])  # fmt: skip
    store.add_reports("ra-1", "down_kw", [(start + timedelta(minutes=1), 5.0)])
    assert store.delivery(event) == {"reports_during": 2, "baseline_kw": 100.0,
                                     "delivered_kw": -35.0, "ratio": 0.875}  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), [
    (["--vtn", "http://127.0.0.1:8443/OpenADR2/Simple/2.0b"], "https:// URL"),
    (["--vtn", "https://127.0.0.1:1/x", "--ven-cert", "c.pem"], "both --ven-cert and --ven-key"),
    (["--vtn", "https://127.0.0.1:1/x", "--simple-levels", "5=-1"], "--simple-levels"),
    (["--vtn", "https://127.0.0.1:1/x", "--vtn-fingerprint", "zz"], "--vtn-fingerprint"),
])  # fmt: skip
async def test_ra_serve_vtn_options_are_checked_before_anything_starts(
    pki: Pki, argv: list[str], message: str
) -> None:
    import argparse

    from erab.cli import CliError
    from erab.cli.ac import add_ven_flags, start_ven

    parser = argparse.ArgumentParser()
    add_ven_flags(parser)
    args = parser.parse_args(argv)
    with pytest.raises(CliError, match=message):
        start_ven(object(), args, pki.home, None)


async def test_ra_serve_vtn_without_a_certificate_issues_one_from_the_home(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse
    import asyncio

    from erab.cli.ac import add_ven_flags, start_ven

    parser = argparse.ArgumentParser()
    add_ven_flags(parser)
    args = parser.parse_args(["--vtn", "https://127.0.0.1:9/OpenADR2/Simple/2.0b"])
    stop = asyncio.Event()
    task = start_ven(object(), args, pki.home, stop)
    stop.set()
    await task
    cert = pki.home / "openadr" / "ven.pem"
    assert cert.is_file() and f"erab ac ven add NAME --cert {cert}" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--vtn-id", "erab"], "all-lower-case vtnID"),
    (["--port", "70000"], "not a TCP port"),
    (["--poll-interval", "0"], "must be more than 0 seconds"),
    (["--duration", "-1"], "--duration must be more than 0"),
])  # fmt: skip
def test_ac_serve_refuses_bad_options_naming_them(
    pki: Pki, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, "ac", "serve", "--home", str(pki.home), *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_ac_serve_without_a_ca_says_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "ac", "serve", "--home", str(tmp_path / "empty"))
    assert code == 2 and "erab pki init" in err


def test_old_report_values_are_pruned(store: AcStore) -> None:
    store.add_ven("ra-1", "ab" * 32)
    now = datetime.now(UTC)
    store.add_reports("ra-1", "fleet_kw", [(now - timedelta(days=40), 1.0), (now, 2.0)])
    assert store.prune_reports(now - timedelta(days=35)) == 1
    assert [v for _, _, v in store.reports("ra-1")] == [2.0]


def test_ac_serve_on_a_taken_port_says_so(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run(capsys, "ac", "serve", "--home", str(pki.home), "--port", str(port),
                           "--duration", "5", "--openadr3-port", "0")  # fmt: skip
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err
