"""The bus tests' deployment (erab's PKI) and real nats-server, for the RA's tests."""

from tests.bus.conftest import broker, deployment  # noqa: F401
