"""Any sequence of creates, replaces, deletes and refused requests leaves the VTN holding what
a plain model of the rules says: refused requests change nothing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from fastapi.testclient import TestClient
from hypothesis import settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from erab.openadr.v3.app import build_app
from erab.openadr.v3.auth import Client, Role, TokenIssuer
from erab.openadr.v3.store import ClientRow, ObjectStore
from tests.openadr.v3.conftest import assert_conforms, event_body

NAMES = st.sampled_from(["a", "b", "c"])


class VtnModel(RuleBasedStateMachine):
    programs = Bundle("programs")
    events = Bundle("events")

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.store = ObjectStore(Path(self.folder.name) / "vtn.sqlite")
        # a registered client without the slow secret: tokens are issued directly
        self.store.put_client(ClientRow("bl", "bl", None, b"\0" * 16, b"\0" * 32))
        issuer = TokenIssuer(os.urandom(32))
        token, _ = issuer.issue(Client("bl", Role.BL))
        self.client = TestClient(build_app(self.store, issuer))
        self.auth = {"Authorization": f"Bearer {token}"}
        self.model_programs: dict[str, str] = {}  # id -> name
        self.model_events: dict[str, str] = {}  # id -> program id

    def teardown(self) -> None:
        self.client.close()
        self.store.close()
        self.folder.cleanup()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.client.request(method, path, headers=self.auth, **kwargs)
        assert_conforms(r)
        return r

    @rule(target=programs, name=NAMES)
    def create_program(self, name: str) -> str:
        r = self.call("POST", "/programs", json={"programName": name})
        if name in self.model_programs.values():
            assert r.status_code == 409
            return "prg-none"
        assert r.status_code == 201
        self.model_programs[r.json()["id"]] = name
        return str(r.json()["id"])

    @rule(program=programs, name=NAMES)
    def rename_program(self, program: str, name: str) -> None:
        r = self.call("PUT", f"/programs/{program}", json={"programName": name})
        if program not in self.model_programs:
            assert r.status_code == 404
        elif name in self.model_programs.values() and self.model_programs[program] != name:
            assert r.status_code == 409
        else:
            assert r.status_code == 200
            self.model_programs[program] = name

    @rule(program=programs)
    def delete_program(self, program: str) -> None:
        r = self.call("DELETE", f"/programs/{program}")
        if program not in self.model_programs:
            assert r.status_code == 404
        elif program in self.model_events.values():
            assert r.status_code == 409
        else:
            assert r.status_code == 200
            del self.model_programs[program]

    @rule(target=events, program=programs)
    def create_event(self, program: str) -> str:
        r = self.call("POST", "/events", json=event_body(program))
        if program not in self.model_programs:
            assert r.status_code == 409
            return "evt-none"
        assert r.status_code == 201
        self.model_events[r.json()["id"]] = program
        return str(r.json()["id"])

    @rule(event=events)
    def delete_event(self, event: str) -> None:
        r = self.call("DELETE", f"/events/{event}")
        assert r.status_code == (200 if self.model_events.pop(event, None) else 404)

    @rule(raw=st.binary(max_size=40))
    def garbage(self, raw: bytes) -> None:
        r = self.client.post(
            "/events", content=raw, headers={**self.auth, "Content-Type": "application/json"}
        )
        assert r.status_code == 400

    @invariant()
    def the_server_holds_the_model(self) -> None:
        programs = {p["id"]: p["programName"] for p in self.call("GET", "/programs").json()}
        events = {e["id"]: e["programID"] for e in self.call("GET", "/events").json()}
        assert programs == self.model_programs
        assert events == self.model_events


VtnModel.TestCase.settings = settings(max_examples=12, stateful_step_count=12, deadline=None)
test_the_vtn_follows_its_rules = VtnModel.TestCase
