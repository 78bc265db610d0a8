"""The aggregation coordinator of ``erab demo``, over OpenADR 2.0b as in the field.

:class:`OpenAdrCoordinator` runs erab's 2.0b VTN (the AC's side, ``erab ac serve``'s server)
on a loopback port and the RA's VEN (``erab ra serve --vtn``'s client) in this process, on TLS
1.2 with client certificates issued from the deployment's CA, the VEN admitted by its
certificate's fingerprint.  ``send_event`` creates the event at the AC, as ``erab ac event
create`` does; it reaches the RA only by the VEN's poll, the VEN opts in or out from the
fleet's flexibility, and the RA plans what the VEN asks.
"""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from erab.aggregator.events import DrEvent
from erab.clock import RealClock
from erab.openadr import (
    AcStore,
    ErabVen,
    RaBackend,
    VenConfig,
    VtnConfig,
    build_vtn,
    fingerprint_of_pem,
    hold_to_tls12,
    run_vtn,
)
from erab.security import CertificateAuthority, SecurityHome, TlsProfile
from erab.security._common import atomic_write
from erab.security.pki import certificate_pem, private_key_pem
from erab.security.tls import client_context, server_context

VEN_ID = "ra-demo"


class CoordinatorError(RuntimeError):
    """The coordinator could not deliver its event; the message says where it stopped."""


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class OpenAdrCoordinator:
    """The AC's VTN and the RA's VEN, started by :meth:`start`, stopped by :meth:`close`."""

    def __init__(self, home: Path, ra: Any, *, host: str = "127.0.0.1", port: int = 0,
                 poll_interval_s: float = 0.5, timeout_s: float = 30.0,
                 product: str = "tertiary-1") -> None:  # fmt: skip
        self.home, self.ra, self.host, self.product = home, ra, host, product
        self.port = port or _free_port(host)
        self.poll_interval_s, self.timeout_s = poll_interval_s, timeout_s
        self.store: AcStore | None = None
        self._stop_vtn, self._stop_ven = asyncio.Event(), asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []  # the VTN's, then the VEN's

    @property
    def url(self) -> str:
        return VtnConfig(host=self.host, port=self.port).url

    def _issue(self) -> tuple[Path, Path, Path, Path]:
        """The VTN's server certificate and the VEN's client certificate, from the home's CA
        (files under ``HOME/ac/demo``, keys owner-only)."""
        security = SecurityHome(self.home)
        ca = CertificateAuthority.open(security, RealClock())
        folder = self.home / "ac" / "demo"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = []
        for name, issued in (("vtn", ca.issue_server([], [self.host])),
                             ("ven", ca.issue_service_client(VEN_ID))):  # fmt: skip
            cert, key = folder / f"{name}.pem", folder / f"{name}.key.pem"
            atomic_write(cert, certificate_pem(issued.certificate))
            atomic_write(key, private_key_pem(issued.private_key), private=True)
            files += [cert, key]
        return files[0], files[1], files[2], files[3]

    async def start(self) -> None:
        """Serve the VTN, register the VEN with it, and return once it is registered."""
        vtn_cert, vtn_key, ven_cert, ven_key = await asyncio.to_thread(self._issue)
        bundle = SecurityHome(self.home).ca_bundle
        store = self.store = AcStore(self.home / "ac" / "ac.sqlite")
        store.add_ven(VEN_ID, fingerprint_of_pem(ven_cert.read_bytes()))
        # the market context names the product the VTN's events are for (the VEN reads it)
        config = VtnConfig(host=self.host, port=self.port, poll_interval_s=self.poll_interval_s,
                           report_interval_s=max(1.0, self.poll_interval_s),
                           market_context=f"oadr://erab/ac/{self.product}")  # fmt: skip
        vtn = build_vtn(store, config, hold_to_tls12(server_context(
            vtn_cert, vtn_key, bundle, profile=TlsProfile.OPENADR_TLS12)))  # fmt: skip
        ven = ErabVen(VenConfig(
            vtn_url=config.url, ven_name="erab-demo-ra", cert=str(ven_cert), key=str(ven_key),
            ca_file=str(bundle), min_share=0.5, retry_s=1.0,
            ssl_context=hold_to_tls12(client_context(bundle, cert_file=ven_cert,
                                                     key_file=ven_key,
                                                     profile=TlsProfile.OPENADR_TLS12)),
        ), RaBackend(self.ra))  # fmt: skip
        vtn_ready = asyncio.Event()
        self._tasks.append(asyncio.create_task(run_vtn(vtn, self._stop_vtn, ready=vtn_ready)))
        await self._until(vtn_ready.is_set, "the VTN to listen")
        self._tasks.append(asyncio.create_task(ven.run(self._stop_ven)))
        await self._until(lambda: store.ven(VEN_ID).registration_id is not None,
                          "the RA's VEN to register")  # fmt: skip

    async def _until(self, done: Any, what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not done():
            for task in self._tasks:
                if task.done():
                    error = None if task.cancelled() else task.exception()
                    raise CoordinatorError(f"waiting for {what}: the OpenADR side stopped"
                                           f"{f': {error}' if error else ''}")  # fmt: skip
            if time.monotonic() > deadline:
                raise CoordinatorError(f"waited {self.timeout_s:g} s for {what}")
            await asyncio.sleep(0.05)

    async def send_event(self, target_kw: float, start: datetime, duration: timedelta,
                         product: str) -> DrEvent:  # fmt: skip
        """Create the event at the AC and return the RA's event once the VEN has carried it
        there; an opt-out is raised with the VEN's reason."""
        store = self.store
        if store is None:
            raise CoordinatorError("start() the coordinator first")
        if product != self.product:
            raise CoordinatorError(f"this VTN's market context is {self.product}, not {product}")
        sent = store.create_event(VEN_ID, target_kw, start, duration, source=f"demo:{product}")

        def arrived() -> bool:
            answered = store.event(sent.event_id)
            if answered.opt == "optOut":
                raise CoordinatorError(f"the RA opted out of {sent.event_id}: "
                                       f"{answered.opt_detail or 'no reason given'}")  # fmt: skip
            return self._ra_event(sent.event_id) is not None

        await self._until(arrived, f"event {sent.event_id} to reach the RA over OpenADR")
        found = self._ra_event(sent.event_id)
        assert found is not None
        return found

    def _ra_event(self, external_id: str) -> DrEvent | None:
        for event in list(self.ra.events.events.values()):
            if event.request.external_id == external_id:
                return event  # type: ignore[no-any-return]
        return None

    async def close(self) -> None:
        """The VEN first (it stops polling), then the VTN: no poll meets a closed server."""
        self._stop_ven.set()
        await asyncio.gather(*self._tasks[1:], return_exceptions=True)
        self._stop_vtn.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.store is not None:
            self.store.close()
            self.store = None
