"""Fixtures for the OpenADR 3 VTN: a store in a temporary SQLite file, clients of both roles,
the app behind FastAPI's test client, and a check that every answer meets the definition."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from erab.clock import SimulatedClock
from erab.openadr.v3 import schema
from erab.openadr.v3.app import build_app
from erab.openadr.v3.auth import ClientRegistry, Role, TokenIssuer
from erab.openadr.v3.store import ObjectStore

TEMPLATES = [
    "/auth/token",
    "/programs",
    "/programs/{programID}",
    "/events",
    "/events/{eventID}",
    "/reports",
    "/reports/{reportID}",
    "/subscriptions",
    "/subscriptions/{subscriptionID}",
    "/vens",
    "/vens/{venID}",
    "/vens/{venID}/resources",
    "/vens/{venID}/resources/{resourceID}",
]


def template_of(path: str) -> str | None:
    """The definition's path template that ``path`` is an instance of."""
    for template in TEMPLATES:
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path):
            return template
    return None


def assert_conforms(response: httpx.Response) -> None:
    """The answer is JSON that the definition allows for its path, method and status (a
    status the definition does not list must be a ``problem``)."""
    template = template_of(response.request.url.path)
    body = response.json()
    wanted = None
    if template is not None:
        wanted = schema.response_schema(template, response.request.method, response.status_code)
    if wanted is None:
        name = (
            "authError" if template == "/auth/token" and response.status_code < 500 else "problem"
        )
        wanted = {"$ref": f"#/components/schemas/{name}"}
    errors = schema.validate(body, wanted, "response")
    assert errors == [], f"{response.request.method} {response.request.url.path}: {errors}"
    if response.status_code >= 400 and template != "/auth/token":
        assert body["status"] == response.status_code and body["detail"]


@dataclass
class Vtn:
    """The app with its store and registry, and a token per named client."""

    client: TestClient
    store: ObjectStore
    registry: ClientRegistry
    issuer: TokenIssuer
    clock: SimulatedClock
    secrets: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, client_id: str, scope: str | None = None) -> str:
        data = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": self.secrets[client_id],
        }
        if scope is not None:
            data["scope"] = scope
        r = self.client.post("/auth/token", data=data)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def as_(self, client_id: str) -> dict[str, str]:
        # one token per client per test: secrets are scrypt-hashed, slow on purpose
        if client_id not in self.tokens:
            self.tokens[client_id] = self.token(client_id)
        return {"Authorization": f"Bearer {self.tokens[client_id]}"}

    def call(self, method: str, path: str, who: str | None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers.update(self.as_(who))
        r = self.client.request(method, path, headers=headers, **kwargs)
        assert_conforms(r)
        return r


@pytest.fixture
def vtn_store(tmp_path: Path) -> Iterator[ObjectStore]:
    store = ObjectStore(tmp_path / "vtn.sqlite")
    yield store
    store.close()


@pytest.fixture
def vtn(vtn_store: ObjectStore) -> Iterator[Vtn]:
    from datetime import UTC, datetime

    clock = SimulatedClock(datetime(2026, 8, 3, 4, 0, tzinfo=UTC), speed=0.0)
    vtn_store.clock = clock
    registry = ClientRegistry(vtn_store)
    secrets = {
        "bl": registry.register("bl", Role.BL),
        "ven1": registry.register("ven1", Role.VEN, ven_name="ven-one"),
        "ven2": registry.register("ven2", Role.VEN, ven_name="ven-two"),
    }
    issuer = TokenIssuer(os.urandom(32), clock=clock)
    with TestClient(build_app(vtn_store, issuer)) as client:
        yield Vtn(client, vtn_store, registry, issuer, clock, secrets)


def event_body(program_id: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "programID": program_id,
        "intervalPeriod": {"start": "2026-08-03T05:00:00Z", "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]}],
    }
    body.update(extra)
    return body


# --- the independent peer: openadr3-client in its own Python 3.12 environment ------------------

PEER_PACKAGES = ("openadr3-client==2.4.2", "pyyaml")  # pyyaml: regenerating the shipped JSON
PEER_PYTHON = "3.12"


def _python_312() -> Path | None:
    """pyenv's CPython 3.12 (notes/openadr.md: the machines have it beside the project's 3.11)."""
    import shutil
    import subprocess

    pyenv = shutil.which("pyenv")
    if pyenv:
        done = subprocess.run([pyenv, "prefix", PEER_PYTHON], capture_output=True, text=True)
        prefix = done.stdout.strip().splitlines()[-1:] if done.returncode == 0 else []
        if prefix and (Path(prefix[0]) / "bin" / "python3").exists():
            return Path(prefix[0]) / "bin" / "python3"
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(root.glob(f"{PEER_PYTHON}.*/bin/python3"))
    if found:
        return found[-1]
    on_path = shutil.which(f"python{PEER_PYTHON}")
    return Path(on_path) if on_path else None


@pytest.fixture(scope="session")
def peer_python() -> Path:
    """The Python of a virtual environment with openadr3-client 2.4.2, made on first use in a
    cache folder keyed by the versions (a lock keeps parallel test runs from racing)."""
    import fcntl
    import subprocess

    from tests.requires import missing

    base = _python_312()
    if base is None:
        missing(
            f"no CPython {PEER_PYTHON} (pyenv install {PEER_PYTHON}) for the openadr3-client peer"
        )
        raise AssertionError  # not reached
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "erab"
    key = "-".join(p.replace("==", "-") for p in PEER_PACKAGES) + f"-py{PEER_PYTHON}"
    venv = cache / f"peer-{key}"
    python = venv / "bin" / "python"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"peer-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            steps = [
                [str(base), "-m", "venv", "--clear", str(venv)],
                [str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES],
            ]
            for step in steps:
                done = subprocess.run(step, capture_output=True, text=True, timeout=600)
                if done.returncode != 0:
                    missing(
                        f"could not make the openadr3-client environment: {' '.join(step)}: "
                        f"{done.stderr.strip()[-500:]}"
                    )
            (venv / ".complete").write_text("\n".join(PEER_PACKAGES) + "\n")
    return python
