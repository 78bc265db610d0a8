"""``erab ra site|gateway|resource|import`` as clients of the RA's REST API (a real uvicorn
server over a real RaService): with a token they go through the RA, which checks the role and
audits each change under the operator's name; with ``--offline`` (or no token) they work on
the store; a refused role, an unknown site and a stopped RA each give one clear line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from erab.aggregator.api import create_app
from erab.aggregator.service import RaService
from erab.cli import main
from erab.security import AuditKind, OperatorDirectory, Role, SecurityHome
from erab.security.operators import Argon2Parameters
from erab.store import SqliteStore
from tests.aggregator.test_operations import deployment, ra  # noqa: F401
from tests.bus.conftest import Deployment

PASSWORD = "correct horse battery"


@contextlib.asynccontextmanager
async def serve(ra: RaService, deployment: Deployment  # noqa: F811
                ) -> AsyncIterator[tuple[str, dict[Role, Path]]]:  # fmt: skip
    """The RA's API on uvicorn, on this loop (the thread that owns the RA's store), with the
    RA's audit log as ``erab ra serve`` gives it; yields the URL and a token file per role."""
    operators = OperatorDirectory(SecurityHome(deployment.home).operators_db, ra.clock,
                                  argon2_parameters=Argon2Parameters(1, 1024, 1))  # fmt: skip
    tokens: dict[Role, Path] = {}
    for role, name in ((Role.VIEWER, "vera"), (Role.OPERATOR, "otto"),
                       (Role.SECURITY_OFFICER, "sofia")):  # fmt: skip
        operators.add(name, role, PASSWORD)
        tokens[role] = deployment.home / f"{name}.token"
        tokens[role].write_text(operators.issue_token(name, "test") + "\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = uvicorn.Server(uvicorn.Config(create_app(ra, operators, audit=ra.audit),
                                               log_level="warning", lifespan="off"))  # fmt: skip
        task = asyncio.create_task(server.serve(sockets=[sock]))
        for _ in range(1000):
            if server.started:
                break
            await asyncio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}", tokens
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)


async def ra_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``erab ra ARGS`` in a thread, while this loop serves the API."""
    code = await asyncio.to_thread(main, ["ra", *args])
    out, err = capsys.readouterr()
    return code, out, err


def registry_audit(ra: RaService) -> list[tuple[str, str, dict[str, object]]]:  # noqa: F811
    return [(r.actor, r.subject, r.details) for r in ra.audit.store.tail(50)
            if r.kind is AuditKind.ENROLMENT and r.details.get("action") == "registry"]


async def test_a_security_officer_adds_a_site_gateway_and_resource_through_the_ra(
    ra: RaService, deployment: Deployment, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:  # fmt: skip
    async with serve(ra, deployment) as (url, tokens):
        via = ["--api", url, "--token-file", str(tokens[Role.SECURITY_OFFICER])]
        code, out, err = await ra_cli(capsys, "site", "add", "site-z", "--kind", "store", *via)
        assert code == 0, err
        assert out.strip() == "site site-z added (store)"
        code, _, err = await ra_cli(capsys, "gateway", "add", "gw-z", "--site", "site-z", *via)
        assert code == 0, err
        code, out, err = await ra_cli(
            capsys, "resource", "add", "site-z.bat", "--site", "site-z", "--gateway", "gw-z",
            "--node-id", "fe00007b" + "11" * 13, "--eoj", "027d01", "--rated-kw", "3",
            "--soc-reserve-pct", "20", *via, "--json")  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["device_class"] == "battery"
        code, out, err = await ra_cli(capsys, "site", "show", "site-z", *via, "--json")
        assert code == 0, err
        shown = json.loads(out)
        assert [g["gateway_id"] for g in shown["gateways"]] == ["gw-z"]
        assert [r["resource_id"] for r in shown["resources"]] == ["site-z.bat"]
        code, out, err = await ra_cli(capsys, "gateway", "show", "gw-z", *via)
        assert code == 0, err
        assert "allow-list (1):" in out and "site-z.bat" in out
    # the RA stored it (its own registry), and audited each change under sofia's name
    assert ra.registry.resource("site-z.bat").rated_kw == 3.0
    audited = registry_audit(ra)
    assert [(actor, subject) for actor, subject, _ in audited] == [
        ("sofia", "site:site-z"), ("sofia", "gateway:gw-z"), ("sofia", "resource:site-z.bat")]


async def test_a_viewer_reads_the_registry_through_the_ra_but_may_not_change_it(
    ra: RaService, deployment: Deployment, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:  # fmt: skip
    async with serve(ra, deployment) as (url, tokens):
        for role in (Role.VIEWER, Role.OPERATOR):
            via = ["--api", url, "--token-file", str(tokens[role])]
            code, out, err = await ra_cli(capsys, "site", "list", *via, "--json")
            assert code == 0, err
            assert {s["site_id"] for s in json.loads(out)} == {"site-a", "site-b"}
            code, out, err = await ra_cli(capsys, "site", "add", "site-y", *via)
            assert code == 2 and out == ""
            assert "the RA refused (403)" in err and "enrol_gateways" in err, err
            assert "Traceback" not in err
    assert "site-y" not in {s.site_id for s in ra.registry.sites()}
    assert registry_audit(ra) == []


async def test_an_unknown_site_is_named_through_the_ra_and_offline(
    ra: RaService, deployment: Deployment, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:  # fmt: skip
    async with serve(ra, deployment) as (url, tokens):
        via = ["--api", url, "--token-file", str(tokens[Role.SECURITY_OFFICER])]
        code, _, err = await ra_cli(capsys, "site", "show", "site-nowhere", *via)
        assert code == 2
        assert "the RA refused (404)" in err and "unknown site 'site-nowhere'" in err, err
        code, _, err = await ra_cli(capsys, "gateway", "add", "gw-q", "--site", "site-nowhere",
                                    *via)  # fmt: skip
        assert code == 2 and "unknown site 'site-nowhere'" in err, err
        code, _, err = await ra_cli(capsys, "site", "add", "site-a", *via)  # already there
        assert code == 2 and "(409)" in err and "already exists" in err, err
    code, _, err = await ra_cli(capsys, "site", "show", "site-nowhere", "--offline",
                                "--home", str(deployment.home))  # fmt: skip
    assert code == 2 and "unknown site 'site-nowhere'" in err and "Traceback" not in err


async def test_offline_or_without_a_token_the_commands_work_on_the_store(
    ra: RaService, deployment: Deployment, capsys: pytest.CaptureFixture[str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    home = ["--home", str(deployment.home)]
    dead = "http://127.0.0.1:9"  # nothing answers there
    async with serve(ra, deployment) as (_, tokens):
        token = str(tokens[Role.SECURITY_OFFICER])
    # --offline: the store, even with a token and no RA
    code, out, err = await ra_cli(capsys, "site", "add", "site-off", "--offline",
                                  "--api", dead, "--token-file", token, *home)  # fmt: skip
    assert code == 0, err
    # no token at all: the store too (setting up before 'erab ra serve' first runs)
    monkeypatch.delenv("ERAB_TOKEN_FILE", raising=False)
    code, out, err = await ra_cli(capsys, "site", "list", *home, "--json")
    assert code == 0, err
    assert "site-off" in {s["site_id"] for s in json.loads(out)}
    store = SqliteStore(deployment.home / "ra" / "ra.sqlite")
    try:
        assert "site-off" in {s.site_id for s in store.sites()}
    finally:
        store.close()
    # a token and no RA: an error that says so, never a silent write to the store
    monkeypatch.setenv("ERAB_TOKEN_FILE", token)
    code, out, err = await ra_cli(capsys, "site", "add", "site-lost", "--api", dead, *home)
    assert code == 2 and out == ""
    assert "cannot reach the RA at http://127.0.0.1:9" in err and "Traceback" not in err, err
    assert "site-lost" not in {s.site_id for s in ra.registry.sites()}


async def test_erab_ra_import_sends_a_file_through_the_ra(
    ra: RaService, deployment: Deployment, capsys: pytest.CaptureFixture[str],  # noqa: F811
    tmp_path: Path,
) -> None:  # fmt: skip
    records = tmp_path / "more.toml"
    records.write_text('[[site]]\nsite_id = "site-t"\nkind = "home"\n\n'
                       '[[gateway]]\ngateway_id = "gw-t"\nsite_id = "site-t"\n')  # fmt: skip
    async with serve(ra, deployment) as (url, tokens):
        via = ["--api", url, "--token-file", str(tokens[Role.SECURITY_OFFICER])]
        code, out, err = await ra_cli(capsys, "import", str(records), *via)
        assert code == 0, err
        assert out.strip() == "added 1 sites, 1 gateways"
        code, out, err = await ra_cli(capsys, "import", str(records), *via, "--json")
        assert code == 0, err
        assert json.loads(out)["unchanged"]["sites"] == 1  # the second time: nothing new
    assert ra.registry.gateway("gw-t").site_id == "site-t"
    assert [subject for _, subject, _ in registry_audit(ra)] == ["import:records"] * 2


async def test_the_api_refuses_a_bad_record_with_the_imports_own_reason(
    ra: RaService, deployment: Deployment,  # noqa: F811
) -> None:  # fmt: skip
    import httpx

    async with serve(ra, deployment) as (url, tokens):
        token = tokens[Role.SECURITY_OFFICER].read_text().strip()
        async with httpx.AsyncClient(base_url=url,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            bad_eoj = await client.post("/api/v1/resources", json={
                "resource_id": "site-a.x", "site_id": "site-a", "gateway_id": "gw-a",
                "node_id": "0a0a", "eoj": "027d00"})  # fmt: skip
            assert bad_eoj.status_code == 422, bad_eoj.text
            assert "instance 00" in bad_eoj.json()["detail"]
            unknown_key = await client.post("/api/v1/sites", json={"site_id": "s", "colour": 1})
            assert unknown_key.status_code == 422
            assert "unknown key(s) colour for a site" in unknown_key.json()["detail"]
            wrong_table = await client.post("/api/v1/import", json={"sites": []})
            assert wrong_table.status_code == 422
            assert "unknown table(s) sites" in wrong_table.json()["detail"]
            no_token = await client.post("/api/v1/sites", json={"site_id": "s"},
                                         headers={"Authorization": ""})  # fmt: skip
            assert no_token.status_code == 401
    assert {s.site_id for s in ra.registry.sites()} == {"site-a", "site-b"}
    assert registry_audit(ra) == []
