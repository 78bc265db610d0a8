"""The bus tests' deployment (erab's PKI) and real nats-server, reused for the uplink tests."""

from tests.bus.conftest import broker, deployment, ra  # noqa: F401
