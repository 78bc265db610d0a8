"""The route B reader: a HEMS reading its smart meter through a Wi-SUN dongle.

:class:`RouteBReader` drives a dongle over a :class:`~erab.meter.serialport.ByteStream`
with the SKSTACK-IP codec of :mod:`erab.meter.skstack`:

1. ``SKRESET``, ``SKINFO`` (learns the dialect: with or without the side field), ``ROPT``
   (hex or binary ERXUDP payloads), ``SKSETRBID`` / ``SKSETPWD``;
2. active scan (``SKSCAN`` → EVENT 20 / EPANDESC / EVENT 22, widening the scan on retry),
   ``SKLL64``, ``SKSREG S2`` / ``S3``, ``SKJOIN`` → EVENT 25 (EVENT 24: refused);
3. reads the meter's coefficient (0xD3), unit (0xE1) and digits (0xD7) once, then answers
   :meth:`~RouteBReader.read_instant` (0xE7 power, 0xE8 currents), takes the 30-minute
   readings the meter pushes (INF 0xEA / 0xEB) and fetches history (0xE5 + 0xE2 / 0xE4).

Rules it keeps (ECHONET "Interface specification for application layer communication between
smart electric energy meters and HEMS controllers", the AIF spec for route B):

* it waits at least 20 s per requested property for an answer (``property_timeout_s``);
* a Get that got no answer is sent again (``retries``), a Set never blindly: after a lost
  answer the value is read back first and the Set is repeated only if it did not take effect;
* when the session drops (EVENT 26/27/28, or 29 followed by 24) it joins again before the
  next request; during the transmit-time limit (EVENT 32 … 33) it holds its requests;
* the dongle's FAIL ER04-ER10 are raised as :class:`DongleCommandFailed` naming the command;
* a refused authentication (EVENT 24 on the first join) stops with :class:`RouteBAuthError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from erab.clock import JST, Clock, RealClock
from erab.echonet import meterdata
from erab.echonet.codecs import ValueCodecError
from erab.echonet.frame import (
    EOJ,
    ESV,
    Frame,
    FrameError,
    Property,
    decode_frame,
    infc_response,
)
from erab.meter import skstack as sk
from erab.meter.serialport import ByteStream
from erab.meter.skstack import Dialect

METER_EOJ = EOJ(0x02, 0x88, 0x01)
CONTROLLER_EOJ = EOJ(0x05, 0xFF, 0x01)

NO_DATA_U32 = 0xFFFFFFFE
MALFORMED_KEPT = 100  # the latest unreadable lines kept for diagnosis (all are counted)
PUSHED_KEPT = 96  # pushed 30-minute readings kept until taken: two days of 0xEA and 0xEB


class RouteBError(Exception):
    """Route B failed in a way the user can act on; the message says how."""


class RouteBAuthError(RouteBError):
    """The meter refused the route B ID or password."""


class MeterNotFound(RouteBError):
    """No meter answered the active scan."""


class MeterTimeout(RouteBError):
    """The meter did not answer a request, even after resending it."""


class SetUnconfirmed(RouteBError):
    """A Set got no answer and reading back did not show it took effect."""


class DongleCommandFailed(RouteBError):
    """The dongle answered a command with ``FAIL ERnn``."""

    def __init__(self, command: str, fail: sk.Fail) -> None:
        super().__init__(f"Wi-SUN dongle refused {command}: {fail}")
        self.command = command
        self.code = fail.code


@dataclass(frozen=True)
class RouteBCredentials:
    """The route B ID (32 characters) and password (12), from the utility.

    The password never appears in ``repr``; load with :meth:`from_env` (``ERAB_ROUTEB_ID``,
    ``ERAB_ROUTEB_PASSWORD``) or :meth:`from_file` (JSON ``{"id": ..., "password": ...}`` or
    two lines ``id`` then ``password``).
    """

    route_b_id: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        try:
            sk.check_route_b_id(self.route_b_id)
            sk.check_route_b_password(self.password)
        except sk.SkstackError as exc:
            raise ValueError(str(exc)) from None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> RouteBCredentials | None:
        env = os.environ if environ is None else environ
        rbid, password = env.get("ERAB_ROUTEB_ID"), env.get("ERAB_ROUTEB_PASSWORD")
        if rbid is None and password is None:
            return None
        if not rbid or not password:
            raise ValueError("set both ERAB_ROUTEB_ID and ERAB_ROUTEB_PASSWORD, or neither")
        return cls(rbid.strip(), password.strip())

    @classmethod
    def from_file(cls, path: str | Path) -> RouteBCredentials:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ValueError(f"credentials file {path} does not exist") from None
        except UnicodeDecodeError:
            raise ValueError(f"credentials file {path} is not UTF-8 text") from None
        except OSError as exc:
            raise ValueError(f"cannot read credentials file {path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if len(lines) != 2:
                raise ValueError(
                    f"credentials file {path}: expected JSON {{'id': ..., 'password': ...}} "
                    "or two lines (route B ID, then password)"
                ) from None
            return cls(lines[0], lines[1])
        if not isinstance(data, dict) or "id" not in data or "password" not in data:
            raise ValueError(f"credentials file {path}: JSON needs keys 'id' and 'password'")
        return cls(str(data["id"]), str(data["password"]))


@dataclass(frozen=True)
class MeterScaling:
    """How the meter's energy counts become kWh: count × coefficient (0xD3) × unit (0xE1)."""

    coefficient: int = 1
    unit_code: int = 0x01
    digits: int = 6

    @property
    def unit_kwh(self) -> float:
        return meterdata.energy_unit_kwh(self.unit_code)

    def kwh(self, count: int) -> float | None:
        if count == NO_DATA_U32:
            return None
        return meterdata.scale(count, self.coefficient, self.unit_kwh)


@dataclass(frozen=True)
class InstantReading:
    """0xE7 instantaneous power (W, import positive) and 0xE8 currents (A, R and T phase)."""

    power_w: int | None
    current_r_a: float | None
    current_t_a: float | None
    read_at: datetime


@dataclass(frozen=True)
class CumulativeReading:
    """Cumulative energy at a 30-minute boundary ``at`` (JST); ``direction`` is "import"
    (normal, 0xE0/0xE2/0xEA) or "export" (reverse, 0xE3/0xE4/0xEB)."""

    at: datetime
    energy_kwh: float | None
    direction: str = "import"


def decode_fixed_time(edt: bytes, scaling: MeterScaling, direction: str) -> CumulativeReading:
    """0xEA / 0xEB: date-time of the latest 30-minute point and the count there."""
    try:
        reading = meterdata.decode_fixed_time_reading(
            edt, coefficient=scaling.coefficient, unit_code=scaling.unit_code
        )
    except ValueCodecError as exc:
        raise RouteBError(f"the meter sent an unreadable 30-minute reading: {exc}") from None
    return CumulativeReading(reading.slot_end, reading.energy_kwh, direction)


def decode_day_history(
    edt: bytes, scaling: MeterScaling, today: datetime, direction: str
) -> list[CumulativeReading]:
    """0xE2 / 0xE4: day number (0 = today) + 48 counts at 00:00, 00:30 … 23:30 JST."""
    try:
        history = meterdata.decode_daily_history(
            edt,
            today=today.astimezone(JST).date(),
            coefficient=scaling.coefficient,
            unit_code=scaling.unit_code,
        )
    except ValueCodecError as exc:
        raise RouteBError(f"the meter sent an unreadable day history: {exc}") from None
    return [CumulativeReading(r.slot_end, r.energy_kwh, direction) for r in history.readings]


def decode_instant(e7: bytes | None, e8: bytes | None, read_at: datetime) -> InstantReading:
    power: int | None = None
    if e7 is not None and len(e7) == 4:
        value = int.from_bytes(e7, "big", signed=True)
        power = None if value in (0x7FFFFFFE, 0x7FFFFFFF, -0x80000000) else value
    r = t = None
    if e8 is not None and len(e8) == 4:
        raw_r = int.from_bytes(e8[0:2], "big", signed=True)
        raw_t = int.from_bytes(e8[2:4], "big", signed=True)
        r = None if raw_r in (0x7FFE, 0x7FFF, -0x8000) else raw_r / 10
        t = None if raw_t in (0x7FFE, 0x7FFF, -0x8000) else raw_t / 10
    return InstantReading(power, r, t, read_at)


class RouteBReader:
    """A route B session with one smart meter.

    ``async with RouteBReader(port, credentials) as meter: await meter.read_instant()``
    connects on entry (scan, join, read scaling) and ends the session (SKTERM) on exit.
    """

    def __init__(
        self,
        port: ByteStream,
        credentials: RouteBCredentials,
        *,
        clock: Clock | None = None,
        property_timeout_s: float = 20.0,
        command_timeout_s: float = 10.0,
        join_timeout_s: float = 60.0,
        retries: int = 3,
        scan_duration: int = 6,
        scan_attempts: int = 3,
        rejoin_attempts: int = 3,
        dialect: Dialect | None = None,
        progress: Callable[[str], None] | None = None,
        progress_every_s: float = 10.0,
    ) -> None:
        self.port = port
        self.progress = progress or (lambda _step: None)
        """Told each step of :meth:`connect` in a few words (for a status line), and, while
        a wait lasts longer than ``progress_every_s``, what it is waiting for (at most once
        per ``progress_every_s``), and each resend."""
        self.progress_every_s = progress_every_s
        self.credentials = credentials
        self.clock: Clock = clock or RealClock()
        self.property_timeout_s = property_timeout_s
        self.command_timeout_s = command_timeout_s
        self.join_timeout_s = join_timeout_s
        self.retries = retries
        self.scan_duration = scan_duration
        self.scan_attempts = scan_attempts
        self.rejoin_attempts = rejoin_attempts
        self.parser = sk.SkstackParser(dialect)
        self.scaling = MeterScaling()
        self.meter_ip: str | None = None
        self.pan: sk.PanDescriptor | None = None
        self.malformed: deque[sk.MalformedLine] = deque(maxlen=MALFORMED_KEPT)
        """The latest lines or frames the dongle sent that could not be read (reading
        carried on); :attr:`malformed_total` counts them all."""
        self.malformed_total = 0
        self.rejoins = 0
        self.resends = 0
        self._cmd_lock = asyncio.Lock()
        self._cmd_queue: asyncio.Queue[sk.DongleEvent] | None = None
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._pushed: asyncio.Queue[CumulativeReading] = asyncio.Queue(PUSHED_KEPT)
        self.pushed_dropped = 0
        """Pushed readings dropped, oldest first, because nobody took them."""
        self._session_lost = False
        self._dropped = asyncio.Event()  # set while _session_lost
        self._session_ok = asyncio.Event()
        self._tx_allowed = asyncio.Event()
        self._tx_allowed.set()
        self._joining = False
        self._closing = False
        self._tid = 0
        self._pump: asyncio.Task[None] | None = None
        self._port_error: RouteBError | None = None

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> RouteBReader:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def dialect(self) -> Dialect | None:
        return self.parser.dialect

    async def connect(self) -> None:
        """Find the meter, join its PAN and read its scaling (coefficient, unit, digits)."""
        if self._pump is None:
            self._pump = asyncio.create_task(self._read_port())
        # a session left over from an earlier program (killed before SKTERM) would make
        # SKJOIN fail with ER10: start from a reset stack, as the module vendors advise
        await self._exec(b"SKRESET\r\n", "SKRESET", _is_ok)
        info = await self._exec(b"SKINFO\r\n", "SKINFO", _is_ok)
        if self.parser.dialect is None:
            lasts = [e.last for e in info if isinstance(e, sk.Info)]
            self.parser.dialect = (
                Dialect.WITH_SIDE if lasts and len(lasts[0]) == 1 else Dialect.NO_SIDE
            )
        try:
            ropt = await self._exec(b"ROPT\r", "ROPT", _is_ok)
            modes = [e.detail for e in ropt if isinstance(e, sk.Ok)]
            self.parser.hex_payload = modes[-1].strip() != "00"
        except DongleCommandFailed:
            self.parser.hex_payload = None  # older firmware: tell by shape
        await self._exec(sk.set_rbid(self.credentials.route_b_id), "SKSETRBID", _is_ok)
        await self._exec(sk.set_password(self.credentials.password), "SKSETPWD", _is_ok)
        self.pan = await self._scan()
        self.progress(
            f"found the meter on channel {self.pan.channel:02X}, PAN {self.pan.pan_id:04X}; joining"
        )
        ll = await self._exec(sk.ll64(self.pan.mac), "SKLL64", _is_address)
        self.meter_ip = next(e.ipv6 for e in ll if isinstance(e, sk.Address))
        await self._exec(sk.command("SKSREG", "S2", f"{self.pan.channel:02X}"), "SKSREG", _is_ok)
        await self._exec(sk.command("SKSREG", "S3", f"{self.pan.pan_id:04X}"), "SKSREG", _is_ok)
        if not await self._join():
            raise RouteBAuthError(
                "the smart meter refused authentication (EVENT 24 after SKJOIN): the route B "
                "password or ID is wrong. Check both against the utility's notice; erab does "
                "not retry a refused join."
            )
        self.progress("joined; reading the meter's coefficient, unit and digits")
        values = await self.get([0xD3, 0xE1, 0xD7])
        coefficient = int.from_bytes(values[0xD3], "big") if 0xD3 in values else 1
        unit_code = values[0xE1][0] if 0xE1 in values else 0x01
        digits = values[0xD7][0] if 0xD7 in values else 6
        try:
            meterdata.energy_unit_kwh(unit_code)
        except ValueCodecError as exc:
            raise RouteBError(f"the meter reports an unknown energy unit: {exc}") from None
        self.scaling = MeterScaling(coefficient or 1, unit_code, digits)

    async def close(self) -> None:
        """End the PANA session (SKTERM) if one is up, and stop reading the port."""
        self._closing = True
        if self._session_ok.is_set() and self._port_error is None:
            with contextlib.suppress(RouteBError, TimeoutError):
                # EVENT 27: ended; EVENT 28: the meter did not answer, ended all the same
                await self._exec(
                    b"SKTERM\r\n",
                    "SKTERM",
                    lambda e: (
                        isinstance(e, sk.Event)
                        and e.code in (sk.EVENT_SESSION_ENDED, sk.EVENT_SESSION_END_TIMEOUT)
                    ),
                )
        self._session_ok.clear()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        for fut in self._pending.values():
            fut.cancel()

    # ------------------------------------------------------------------ reading
    async def read_instant(self) -> InstantReading:
        """Instantaneous power (0xE7) and currents (0xE8)."""
        values = await self.get([0xE7, 0xE8])
        read_at = self.clock.now().astimezone(JST)
        return decode_instant(values.get(0xE7), values.get(0xE8), read_at)

    async def poll(
        self, interval_s: float = 60.0, count: int | None = None
    ) -> AsyncIterator[InstantReading]:
        """Read 0xE7/0xE8 every ``interval_s`` (on this reader's clock), ``count`` times or
        for ever.  Keep the interval generous: route B is a shared, duty-cycled radio."""
        if interval_s <= 0:
            raise ValueError(f"poll interval must be > 0 s, got {interval_s}")
        done = 0
        while count is None or done < count:
            yield await self.read_instant()
            done += 1
            if count is None or done < count:
                await self.clock.sleep(interval_s)

    async def read_history(self, day: int = 0, *, export: bool = False) -> list[CumulativeReading]:
        """The 48 cumulative readings of ``day`` days ago (0 = today): Set 0xE5, Get 0xE2/E4."""
        if not 0 <= day <= 99:
            raise ValueError(f"history day must be 0-99 (the meter keeps 45 days), got {day}")
        await self.set(0xE5, bytes((day,)))
        epc = 0xE4 if export else 0xE2
        values = await self.get([epc])
        if epc not in values:
            raise RouteBError(f"the meter has no history property {epc:#04x}")
        return decode_day_history(
            values[epc], self.scaling, self.clock.now(), "export" if export else "import"
        )

    async def read_segments(
        self, slot_end: datetime, segments: int = 6
    ) -> list[tuple[CumulativeReading, CumulativeReading]]:
        """(import, export) readings at ``slot_end`` and the ``segments`` − 1 slot ends before
        it, newest first: Set 0xED (time and segment count), Get 0xEC."""
        try:
            request = meterdata.encode_history_request(meterdata.HistoryRequest(slot_end, segments))
        except ValueCodecError as exc:
            raise ValueError(str(exc)) from None
        await self.set(0xED, request)
        values = await self.get([0xEC])
        if 0xEC not in values:
            raise RouteBError("the meter has no segment history property 0xec")
        try:
            rows = meterdata.decode_segment_history(
                values[0xEC], coefficient=self.scaling.coefficient, unit_code=self.scaling.unit_code
            )
        except ValueCodecError as exc:
            raise RouteBError(f"the meter sent an unreadable segment history: {exc}") from None
        return [
            (
                CumulativeReading(r.slot_end, r.normal_kwh, "import"),
                CumulativeReading(r.slot_end, r.reverse_kwh, "export"),
            )
            for r in rows
        ]

    async def next_pushed_reading(self, timeout_s: float | None = None) -> CumulativeReading:
        """The next 30-minute reading the meter announced (INF 0xEA or 0xEB)."""
        if timeout_s is None:
            return await self._pushed.get()
        return await asyncio.wait_for(self._pushed.get(), timeout_s)

    # ------------------------------------------------------------------ ECHONET Lite
    async def get(self, epcs: Sequence[int]) -> dict[int, bytes]:
        """Get ``epcs`` from the meter; properties it cannot give are left out."""
        frame = Frame(
            self._next_tid(), CONTROLLER_EOJ, METER_EOJ, ESV.Get, tuple(Property(e) for e in epcs)
        )
        tries = self.retries + 1
        for attempt in range(1, tries + 1):
            what = f"the meter's answer to a Get of {_epcs(epcs)} (attempt {attempt} of {tries})"
            reply = await self._request(frame, what)
            if reply is not None:
                return {p.epc: p.edt for p in reply.props if p.edt}
            if attempt < tries:
                self.progress(
                    f"no answer from the meter to a Get of {_epcs(epcs)} within "
                    f"{self._timeout(len(epcs)):.0f} s; asking again (attempt {attempt + 1} "
                    f"of {tries})"
                )
            self.resends += 1
        raise MeterTimeout(
            f"the meter did not answer a Get of {_epcs(epcs)} after {self.retries + 1} tries "
            f"of {self._timeout(len(epcs)):.0f} s each: is it in range and powered?"
        )

    async def set(self, epc: int, edt: bytes) -> None:
        """SetC one property; after a lost answer, read back before deciding to send again."""
        for attempt in range(self.retries + 1):
            frame = Frame(
                self._next_tid(), CONTROLLER_EOJ, METER_EOJ, ESV.SetC, (Property(epc, edt),)
            )
            reply = await self._request(
                frame, f"the meter's answer to a Set of {epc:#04x} (attempt {attempt + 1})"
            )
            if reply is not None:
                if reply.esv is ESV.SetC_SNA:
                    raise RouteBError(f"the meter refused to set {epc:#04x} to {edt.hex()}")
                return
            # No answer: the Set may or may not have been applied.  Never resend blindly.
            current = await self.get([epc])
            if current.get(epc) == edt:
                return
            if attempt < self.retries:
                self.resends += 1
        raise SetUnconfirmed(
            f"setting {epc:#04x} to {edt.hex()} got no answer and reading it back shows it "
            "did not take effect"
        )

    def _next_tid(self) -> int:
        self._tid = (self._tid + 1) & 0xFFFF
        return self._tid

    def _timeout(self, nprops: int) -> float:
        # AIF spec: the meter may take up to 20 s per requested property to answer
        return self.property_timeout_s * max(1, nprops)

    async def _request(self, frame: Frame, what: str = "the meter's answer") -> Frame | None:
        """Send once (rejoining or waiting out the transmit limit first); the reply or None.
        A long wait is reported through :attr:`progress` as waiting for ``what``."""
        await self._ready_to_send()
        assert self.meter_ip is not None and self.parser.dialect is not None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Frame] = loop.create_future()
        self._pending[frame.tid] = fut
        try:
            data = sk.sendto(1, self.meter_ip, frame.encode(), self.parser.dialect)
            try:
                events = await self._exec(data, "SKSENDTO", _is_ok)
            except DongleCommandFailed as exc:
                if exc.code == 10:
                    # Not sent (no session, or over the transmit limit), so safe to send again;
                    # give the EVENT that explains it (24, 27, 32 …) a moment to arrive.
                    await asyncio.sleep(min(1.0, self.property_timeout_s / 10))
                    return None
                raise
            if any(
                isinstance(e, sk.Event) and e.code == sk.EVENT_UDP_SENT and e.param == sk.TX_FAILED
                for e in events
            ):
                return None
            npros = len(frame.props) + len(frame.get_props)
            # an answer can no longer come once the session has dropped: stop waiting then
            dropped = asyncio.ensure_future(self._dropped.wait())
            waiting: set[asyncio.Future[Any]] = {fut, dropped}
            limit = self._timeout(npros)
            start = loop.time()
            ticker = _Ticker(self, start, f"waiting for {what}", limit)
            try:
                while not (fut.done() or dropped.done()):
                    left = start + limit - loop.time()
                    if left <= 0:
                        break
                    await asyncio.wait(
                        waiting,
                        timeout=min(left, ticker.next_in()),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    ticker.tick()
            finally:
                dropped.cancel()
            return fut.result() if fut.done() and not fut.cancelled() else None
        finally:
            self._pending.pop(frame.tid, None)

    async def _ready_to_send(self) -> None:
        """Wait out a transmit limit, join again after a dropped session, and wait for a
        re-authentication in progress (EVENT 29 until 25 or 24)."""
        if not self._tx_allowed.is_set():
            # EVENT 32: the dongle may not transmit until EVENT 33 (about an hour on air)
            await self._wait_event(self._tx_allowed, None)
        if self._session_lost:
            for _ in range(self.rejoin_attempts):
                if await self._join():
                    self.rejoins += 1
                    return
            raise RouteBError(
                f"the session with the meter dropped and {self.rejoin_attempts} attempts to "
                "join again failed"
            )
        if not self._session_ok.is_set():
            await self._wait_event(self._session_ok, self.join_timeout_s)
            if self._session_lost:
                await self._ready_to_send()

    async def _wait_event(self, event: asyncio.Event, timeout: float | None) -> None:
        waiter = asyncio.create_task(event.wait())
        lost = asyncio.create_task(self._until(lambda: self._session_lost))
        try:
            await asyncio.wait({waiter, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            lost.cancel()
        self._raise_port_error()

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ SKSTACK steps
    async def _scan(self) -> sk.PanDescriptor:
        assert self.parser.dialect is not None
        duration = self.scan_duration
        for attempt in range(1, self.scan_attempts + 1):
            # the dongle reports EVENT 22 only when every channel has been listened to
            wait_s = max(self.join_timeout_s, sk.scan_time_s(duration) + self.command_timeout_s)
            self.progress(
                f"scanning for the meter (duration {duration}, "
                f"up to {sk.scan_time_s(duration):.0f} s)"
            )
            events = await self._exec(
                sk.scan(duration, self.parser.dialect),
                "SKSCAN",
                _event_is(sk.EVENT_SCAN_DONE),
                timeout=wait_s,
                waiting=f"scanning for the meter (scan {attempt} of {self.scan_attempts})",
            )
            found = [e for e in events if isinstance(e, sk.PanDescriptor)]
            if found:
                return max(found, key=lambda d: d.lqi)
            duration = min(duration + 1, 8)  # each step doubles the scan time
        raise MeterNotFound(
            f"no smart meter answered {self.scan_attempts} active scans: a meter answers only "
            "the route B ID it was paired with, so check the ID, and that the dongle is within "
            "radio range of the meter"
        )

    async def _join(self) -> bool:
        assert self.meter_ip is not None
        self._joining = True
        try:
            events = await self._exec(
                sk.command("SKJOIN", self.meter_ip),
                "SKJOIN",
                lambda e: (
                    isinstance(e, sk.Event) and e.code in (sk.EVENT_PANA_OK, sk.EVENT_PANA_FAILED)
                ),
                timeout=self.join_timeout_s,
                waiting="waiting for the meter to accept the join (PANA authentication)",
            )
        finally:
            self._joining = False
        ok = any(isinstance(e, sk.Event) and e.code == sk.EVENT_PANA_OK for e in events)
        if ok:
            self._session_lost = False
            self._dropped.clear()
            self._session_ok.set()
        return ok

    async def _exec(
        self,
        data: bytes,
        name: str,
        done: Callable[[sk.DongleEvent], bool],
        *,
        timeout: float | None = None,
        waiting: str | None = None,
    ) -> list[sk.DongleEvent]:
        """Write one command and collect what the dongle says until ``done``; a long wait
        is reported as ``waiting`` through :attr:`progress`."""
        self._raise_port_error()
        async with self._cmd_lock:
            queue: asyncio.Queue[sk.DongleEvent] = asyncio.Queue()
            self._cmd_queue = queue
            try:
                try:
                    self.port.write(data)
                except OSError as exc:
                    self._port_error = RouteBError(
                        f"the serial port closed or failed ({exc}): is the dongle still plugged in?"
                    )
                    raise self._port_error from None
                events: list[sk.DongleEvent] = []
                limit = timeout if timeout is not None else self.command_timeout_s
                loop = asyncio.get_running_loop()
                start = loop.time()
                end = start + limit
                ticker = _Ticker(self, start, waiting, limit)
                while True:
                    left = end - loop.time()
                    if left <= 0:
                        raise RouteBError(
                            f"the Wi-SUN dongle did not finish {name} within {limit:.0f} s"
                        )
                    try:
                        event = await asyncio.wait_for(queue.get(), min(left, ticker.next_in()))
                    except TimeoutError:
                        ticker.tick()
                        continue
                    if isinstance(event, _PortGone):
                        self._raise_port_error()
                    if isinstance(event, sk.Fail):
                        raise DongleCommandFailed(name, event)
                    events.append(event)
                    if done(event):
                        return events
            finally:
                self._cmd_queue = None

    def _raise_port_error(self) -> None:
        if self._port_error is not None:
            raise self._port_error

    # ------------------------------------------------------------------ port pump
    async def _read_port(self) -> None:
        while True:
            data = await self.port.read()
            if not data:
                self._port_error = RouteBError(
                    "the serial port closed or failed: is the dongle still plugged in?"
                )
                if self._cmd_queue is not None:
                    self._cmd_queue.put_nowait(_PortGone())  # type: ignore[arg-type]
                return
            for event in self.parser.feed(data):
                try:
                    self._dispatch(event)
                except Exception as exc:
                    # Whatever a dongle or meter sends, the pump keeps reading: were it to
                    # stop, every later request would time out and a poll() stop for good.
                    self._malformed(sk.MalformedLine(repr(event)[:120], f"unreadable: {exc}"))

    def _malformed(self, line: sk.MalformedLine) -> None:
        self.malformed.append(line)
        self.malformed_total += 1

    def _dispatch(self, event: sk.DongleEvent) -> None:
        if isinstance(event, sk.MalformedLine):
            self._malformed(event)
            return
        if isinstance(event, sk.RxUdp):
            if event.lport == sk.ECHONET_LITE_PORT and event.sender == self.meter_ip:
                self._frame(event.data)
            return
        if isinstance(event, sk.Echo):
            return
        if isinstance(event, sk.Event):
            self._session_event(event)
        if self._cmd_queue is not None:
            self._cmd_queue.put_nowait(event)

    def _session_event(self, event: sk.Event) -> None:
        code = event.code
        if code == sk.EVENT_TX_LIMIT_ON:
            self._tx_allowed.clear()
        elif code == sk.EVENT_TX_LIMIT_OFF:
            self._tx_allowed.set()
        elif self._joining or self._closing:
            return
        elif code == sk.EVENT_SESSION_LIFETIME:
            self._session_ok.clear()  # re-authentication under way: EVENT 25 or 24 follows
        elif code == sk.EVENT_PANA_OK:
            self._session_ok.set()
        elif code in (
            sk.EVENT_PANA_FAILED,
            sk.EVENT_SESSION_END_REQUEST,
            sk.EVENT_SESSION_ENDED,
            sk.EVENT_SESSION_END_TIMEOUT,
        ):
            self._session_ok.clear()
            self._session_lost = True
            self._dropped.set()

    def _frame(self, data: bytes) -> None:
        try:
            frame = decode_frame(data)
        except FrameError as exc:
            self._malformed(sk.MalformedLine(data.hex(), f"bad ECHONET Lite frame: {exc}"))
            return
        if not isinstance(frame, Frame) or frame.seoj.class_code != 0x0288:
            return
        if frame.esv in (ESV.INF, ESV.INFC):
            for prop in frame.props:
                if prop.epc in (0xEA, 0xEB) and len(prop.edt) == 11:
                    direction = "import" if prop.epc == 0xEA else "export"
                    try:
                        reading = decode_fixed_time(prop.edt, self.scaling, direction)
                    except RouteBError as exc:  # e.g. month 13: keep the rest of the frame
                        self._malformed(sk.MalformedLine(data.hex(), str(exc)))
                        continue
                    self._push(reading)
            if frame.esv is ESV.INFC:
                self._answer_infc(frame)
            return
        fut = self._pending.get(frame.tid)
        if fut is not None and not fut.done():
            fut.set_result(frame)

    def _push(self, reading: CumulativeReading) -> None:
        if self._pushed.full():  # nobody is taking them: keep the newest
            self._pushed.get_nowait()
            self.pushed_dropped += 1
        self._pushed.put_nowait(reading)

    def _answer_infc(self, frame: Frame) -> None:
        # Part 2 §4.2.3.6: INFC is answered with INFC_Res carrying the EPCs, PDC 0
        if self.meter_ip is None or self.parser.dialect is None:
            return
        reply = infc_response(frame, CONTROLLER_EOJ)
        data = sk.sendto(1, self.meter_ip, reply.encode(), self.parser.dialect)
        task = asyncio.ensure_future(self._exec(data, "SKSENDTO", _is_ok))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())


class _PortGone:
    pass


class _Ticker:
    """Reports a long wait through the reader's progress, at most once per interval."""

    def __init__(self, reader: RouteBReader, start: float, what: str | None, limit: float):
        self._reader = reader
        self._start = start
        self._what = what
        self._limit = limit
        self._due = start + reader.progress_every_s

    def next_in(self) -> float:
        """Seconds until the next report may be due (a long time when nothing is told)."""
        if self._what is None:
            return self._limit
        return max(0.0, self._due - asyncio.get_running_loop().time())

    def tick(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._what is None or now < self._due:
            return
        self._due = now + self._reader.progress_every_s
        self._reader.progress(
            f"still {self._what}: {now - self._start:.0f} s of up to {self._limit:.0f} s"
        )


def _is_ok(event: sk.DongleEvent) -> bool:
    return isinstance(event, sk.Ok)


def _is_address(event: sk.DongleEvent) -> bool:
    return isinstance(event, sk.Address)


def _event_is(code: int) -> Callable[[sk.DongleEvent], bool]:
    return lambda e: isinstance(e, sk.Event) and e.code == code


def _epcs(epcs: Sequence[int]) -> str:
    return ", ".join(f"{e:#04x}" for e in epcs)
