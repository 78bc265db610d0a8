"""One store behind both APIs: any sequence of program and event changes through 3.0.1 (at the
root) and 3.1.0 (under /openadr3/3.1.0), refused ones included, leaves each API holding what a
model of its own changes says, and nothing of the other's."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from fastapi.testclient import TestClient
from hypothesis import settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from erab.openadr.v3 import PREFIX_3_1, build_server
from erab.openadr.v3.auth import Client, Role, TokenIssuer
from erab.openadr.v3.store import ClientRow, ObjectStore

NAMES = st.sampled_from(["a", "b"])
APIS = st.sampled_from(["3.0.1", "3.1.0"])
BASE = {"3.0.1": "", "3.1.0": PREFIX_3_1}


class TwoApis(RuleBasedStateMachine):
    programs = Bundle("programs")

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.store = ObjectStore(Path(self.folder.name) / "vtn.sqlite")
        self.store.put_client(ClientRow("bl", "bl", None, b"\0" * 16, b"\0" * 32))
        issuer = TokenIssuer(os.urandom(32))
        self.client = TestClient(build_server(self.store, issuer))
        self.auth = {
            api: {"Authorization": f"Bearer {issuer.for_api(api).issue(Client('bl', Role.BL))[0]}"}
            for api in BASE
        }
        self.programs_of: dict[str, dict[str, str]] = {api: {} for api in BASE}  # id -> name
        self.events_of: dict[str, dict[str, str]] = {api: {} for api in BASE}  # id -> program

    def teardown(self) -> None:
        self.client.close()
        self.store.close()
        self.folder.cleanup()

    def call(self, api: str, method: str, path: str, **kwargs: Any) -> Any:
        return self.client.request(method, BASE[api] + path, headers=self.auth[api], **kwargs)

    @rule(target=programs, api=APIS, name=NAMES)
    def create_program(self, api: str, name: str) -> tuple[str, str]:
        r = self.call(api, "POST", "/programs", json={"programName": name})
        if name in self.programs_of[api].values():
            assert r.status_code == 409
            return api, "prg-none"
        assert r.status_code == 201
        self.programs_of[api][r.json()["id"]] = name
        return api, str(r.json()["id"])

    @rule(program=programs, api=APIS)
    def create_event(self, program: tuple[str, str], api: str) -> None:
        """An event naming a program of either API: only its own API's programs exist."""
        _, program_id = program
        r = self.call(api, "POST", "/events", json={"programID": program_id, "intervals": []})
        if program_id not in self.programs_of[api]:
            assert r.status_code == 409
            return
        assert r.status_code == 201
        self.events_of[api][r.json()["id"]] = program_id

    @rule(program=programs, api=APIS)
    def delete_program(self, program: tuple[str, str], api: str) -> None:
        _, program_id = program
        r = self.call(api, "DELETE", f"/programs/{program_id}")
        if program_id not in self.programs_of[api]:
            assert r.status_code == 404
        elif program_id in self.events_of[api].values():
            assert r.status_code == 409
        else:
            assert r.status_code == 200
            del self.programs_of[api][program_id]

    @invariant()
    def each_api_holds_its_own_model(self) -> None:
        for api in BASE:
            programs = {
                p["id"]: p["programName"] for p in self.call(api, "GET", "/programs").json()
            }
            events = {e["id"]: e["programID"] for e in self.call(api, "GET", "/events").json()}
            assert programs == self.programs_of[api]
            assert events == self.events_of[api]


TwoApis.TestCase.settings = settings(max_examples=10, stateful_step_count=12, deadline=None)
test_each_api_keeps_its_own_objects = TwoApis.TestCase
