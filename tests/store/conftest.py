"""Both store backends for every store test: SQLite in a temporary file, and PostgreSQL in a
throw-away cluster this session runs (tests/pg.py), a fresh database per test."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from erab.store import Store, open_store
from tests.bus.conftest import broker, deployment  # noqa: F401  # the RA's ingest tests
from tests.pg import PgCluster, server_bin
from tests.requires import missing

BACKENDS = ("sqlite", "postgresql")
MIGRATED = "erab_migrated"  # a template database with erab's schema applied


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    if importlib.util.find_spec("psycopg") is None:
        missing("psycopg is not installed: pip install -e '.[postgres,test]'")
    if server_bin() is None:
        missing("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    cluster = PgCluster.start()
    try:
        cluster.admin(f"CREATE DATABASE {MIGRATED} OWNER erab TEMPLATE template0")
        open_store(cluster.url(MIGRATED)).close()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A new empty database (no erab tables yet)."""
    return pg_cluster.fresh_database()


def store_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'erab.sqlite'}"
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.fresh_database(template=MIGRATED)


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new store on each backend in turn (PostgreSQL: already migrated)."""
    return store_url(str(request.param), request, tmp_path)


@pytest.fixture
def store(backend_url: str) -> Iterator[Store]:
    s = open_store(backend_url)
    yield s
    s.close()
