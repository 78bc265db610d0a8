"""The SQLite store (migrations, conflicts that change nothing) and the shipped definition."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from erab.openadr.v3 import schema
from erab.openadr.v3.models import Kind
from erab.openadr.v3.store import MIGRATIONS, ObjectStore, StoreConflict

DATA = Path(schema.__file__).with_name("data")


def test_a_new_file_is_migrated_to_the_latest_version(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "a.sqlite")
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    again = ObjectStore(tmp_path / "a.sqlite")  # opening twice applies nothing twice
    rows = again._db.execute("SELECT version FROM oadr3_schema").fetchall()
    assert rows == [(v,) for v in range(1, len(MIGRATIONS) + 1)]
    again.close()


def test_a_file_shared_with_other_tables_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "ac.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE ac_events (id TEXT)")
        db.execute("INSERT INTO ac_events VALUES ('e1')")
    ObjectStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT id FROM ac_events").fetchall() == [("e1",)]


def test_a_file_from_a_newer_erab_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    ObjectStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO oadr3_schema VALUES (99, 'later')")
    with pytest.raises(RuntimeError, match="version 99"):
        ObjectStore(path)


def test_a_name_conflict_changes_nothing(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "s.sqlite")
    a = store.create(Kind.PROGRAM, {"programName": "a"}, owner="bl", name="a")
    b = store.create(Kind.PROGRAM, {"programName": "b"}, owner="bl", name="b")
    with pytest.raises(StoreConflict, match="'a' already exists"):
        store.create(Kind.PROGRAM, {"programName": "a"}, owner="bl", name="a")
    with pytest.raises(StoreConflict):
        store.replace(Kind.PROGRAM, b["id"], {"programName": "a"}, name="a")
    assert [s.body for s in store.find(Kind.PROGRAM)] == [a, b]
    store.close()


def test_resource_names_are_unique_per_ven_only(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "s.sqlite")
    store.create(Kind.RESOURCE, {"resourceName": "bat"}, owner="bl", parent="ven-1", name="bat")
    store.create(Kind.RESOURCE, {"resourceName": "bat"}, owner="bl", parent="ven-2", name="bat")
    assert (
        store.count(Kind.RESOURCE, parent="ven-1")
        == store.count(Kind.RESOURCE, parent="ven-2")
        == 1
    )
    store.close()


# --- the shipped definition --------------------------------------------------------------------


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


@pytest.mark.parametrize("version", schema.SPEC_VERSIONS)
def test_every_reference_in_the_definition_resolves(version: str) -> None:
    all_refs = set(refs(schema.spec(version)))
    assert len(all_refs) > 20
    for ref in all_refs:
        assert schema._resolve(ref, schema.spec(version))


def test_the_definition_is_3_0_1_with_its_notice_beside_it() -> None:
    assert "OpenADR Alliance" in (DATA / "NOTICE").read_text()
    assert "Apache License" in (DATA / "LICENSE").read_text()
    yaml_text = (DATA / schema.SPEC_YAML).read_text()
    assert "tokenUrl: auth/token" in yaml_text
    assert set(schema.spec()["paths"]) >= {
        "/programs",
        "/events",
        "/auth/token",
        "/vens/{venID}/resources",
    }


def test_every_example_object_of_the_definition_validates() -> None:
    # the definition's own examples, assembled from its per-property examples, conform
    program = {
        "programName": "ResTOU",
        "id": "object-999",
        "objectType": "PROGRAM",
        "createdDateTime": "2023-06-15T09:30:00Z",
        "modificationDateTime": "2023-06-15T09:30:00Z",
    }
    assert schema.validate(program, schema.component("program")) == []


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"type": "PRICE", "values": [None]}, "matches none"),
        ({"type": "", "values": [1]}, "at least 1 characters"),
        ({"type": "PRICE", "values": "1"}, "expected array"),
        ({"type": "PRICE", "values": [{"x": 1}]}, "matches none"),
    ],
)
def test_the_validator_names_the_fault(value: Any, fragment: str) -> None:
    errors = schema.validate(value, schema.component("valuesMap"))
    assert errors and fragment in " ".join(errors)


def test_nullable_int32_booleans_and_date_times() -> None:
    descriptor = schema.component("reportPayloadDescriptor")
    assert schema.validate({"payloadType": "USAGE", "units": None}, descriptor) == []
    assert (
        "above the maximum 100"
        in schema.validate({"payloadType": "U", "confidence": 101}, descriptor)[0]
    )
    interval = schema.component("interval")
    assert "32-bit" in schema.validate({"id": 2**31, "payloads": []}, interval)[0]
    assert (
        "expected integer, got boolean"
        in schema.validate({"id": True, "payloads": []}, interval)[0]
    )
    period = schema.component("intervalPeriod")
    assert schema.validate({"start": "2026-08-03T05:00:00+09:00"}, period) == []
    assert "RFC 3339" in schema.validate({"start": "2026-08-03T05:00:00"}, period)[0]


@pytest.mark.parametrize("version", schema.SPEC_VERSIONS)
def test_the_shipped_json_is_the_shipped_yaml(
    peer_python: Path, tmp_path: Path, version: str
) -> None:
    """Regenerate the JSON from the YAML with PyYAML (in the peer's environment) and compare."""
    import subprocess

    out = tmp_path / "regenerated.json"
    code = (
        "import sys; sys.path.insert(0, sys.argv[3]);"
        "from pathlib import Path; import schema;"
        "schema.convert(Path(sys.argv[1]), Path(sys.argv[2]))"
    )
    subprocess.run(
        [
            str(peer_python),
            "-c",
            code,
            str(DATA / schema.yaml_name(version)),
            str(out),
            str(DATA.parent),
        ],
        check=True,
        timeout=120,
    )
    assert json.loads(out.read_text()) == schema.published(version)
    assert out.read_text() == (DATA / schema.json_name(version)).read_text()
