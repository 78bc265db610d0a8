"""A Wi-SUN route B dongle with a smart meter behind it, emulated on a pseudo-terminal.

:class:`DongleCore` is the dongle's firmware as a sans-IO state machine: client bytes in,
timed output chunks out.  It speaks SKSTACK-IP as the real modules do (echo of each command,
``OK``/``FAIL ERnn``, EVENT lines, EPANDESC blocks, ERXUDP in hex or binary per ``WOPT``,
CR LF or CR line endings, the with-side or no-side dialect) and carries the ECHONET Lite
frames of SKSENDTO to the meter's :class:`~erab.echonet.node.LocalNode`, returning its answers
as ERXUDP.  The meter pairs only with the route B ID it was given (the beacon's PairID is the
ID's last 8 characters) and authenticates only the right password.

:class:`DongleFaults` injects what goes wrong in the field: lost and delayed replies, session
expiry, the transmit-time limit (EVENT 32/33), rejected credentials, a meter that stops
answering.  :class:`PtyDongle` runs a core on a real pty (``os.openpty``); point any route B
client (erab's :class:`~erab.meter.routeb.RouteBReader`, momonga, ...) at :attr:`PtyDongle.path`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from erab.clock import Clock
from erab.echonet.frame import EOJ, ESV, Frame, Property
from erab.echonet.node import DeviceObject, LocalNode
from erab.meter import skstack as sk
from erab.meter.skstack import Dialect, PanDescriptor, RxUdp
from erab.meter.smartmeter import SmartMeter

METER_EOJ = EOJ(0x02, 0x88, 0x01)
CONTROLLER_EOJ = EOJ(0x05, 0xFF, 0x01)

_SCAN_TIME_SCALE = 0.001  # an emulated scan lasts a thousandth of a real one (18 ms for 6)
_JOIN_STEP_S = 0.01  # emulated time between PANA exchange steps
_REAUTH_S = 0.2  # emulated time a re-authentication takes
_EVER = "1.2.10"
_EAPPVER = "rev26e"


# CLI fault words and the DongleFaults field each sets
_NUMERIC_FAULTS: dict[str, tuple[str, type[int] | type[float]]] = {
    "lost-replies": ("lost_replies", int),
    "lost-requests": ("lost_requests", int),
    "delay": ("reply_delay_s", float),
    "session-expiry": ("session_expiry_s", float),
    "session-lifetime": ("session_lifetime_s", float),
    "session-end": ("session_end_s", float),
}
_FLAG_FAULTS = {"wrong-credentials": "wrong_credentials", "silent-meter": "meter_silent"}


@dataclass(frozen=True)
class DongleFaults:
    """Faults a dongle emulator injects (all off by default).

    ``lost_replies``: the meter's next N answers are lost on the radio.
    ``lost_requests``: the next N frames sent to the meter are lost on the radio before
    reaching it (the dongle still reports the transmission, EVENT 21 00).
    ``reply_delay_s``: every answer of the meter arrives this much later.
    ``session_expiry_s``: this long after joining, the session lifetime ends (EVENT 29) and
    re-authentication fails (EVENT 24): the client must SKJOIN again.
    ``session_lifetime_s``: every this long the session lifetime ends and re-authentication
    succeeds (EVENT 29, then EVENT 25 a moment later): the normal renewal, no rejoin needed.
    ``session_end_s``: this long after joining, the meter ends the session (EVENT 26, 27).
    ``transmit_limit_after``: after N transmissions the dongle hits its transmit-time limit
    (EVENT 32) and refuses to send for ``transmit_limit_s`` (then EVENT 33).
    ``wrong_credentials``: the meter rejects every PANA authentication (EVENT 24).
    ``meter_silent``: the meter receives requests but never answers (nor PANA's session
    termination: SKTERM ends with EVENT 28).
    """

    lost_replies: int = 0
    lost_requests: int = 0
    reply_delay_s: float = 0.0
    session_expiry_s: float | None = None
    session_lifetime_s: float | None = None
    session_end_s: float | None = None
    transmit_limit_after: int | None = None
    transmit_limit_s: float = 1.0
    wrong_credentials: bool = False
    meter_silent: bool = False

    NAMES = (
        "lost-replies=N",
        "lost-requests=N",
        "delay=SECONDS",
        "session-expiry=SECONDS",
        "session-lifetime=SECONDS",
        "session-end=SECONDS",
        "transmit-limit=N[:SECONDS]",
        "wrong-credentials",
        "silent-meter",
    )

    @classmethod
    def parse(cls, specs: Iterable[str]) -> DongleFaults:
        """Build from CLI words such as ``lost-replies=2`` or ``silent-meter``."""
        values: dict[str, object] = {}
        for spec in specs:
            name, _, arg = spec.strip().partition("=")
            try:
                if name in _NUMERIC_FAULTS:
                    fault, kind = _NUMERIC_FAULTS[name]
                    values[fault] = kind(arg)
                elif name == "transmit-limit":
                    count, _, seconds = arg.partition(":")
                    values["transmit_limit_after"] = int(count)
                    if seconds:
                        values["transmit_limit_s"] = float(seconds)
                elif name in _FLAG_FAULTS and not arg:
                    values[_FLAG_FAULTS[name]] = True
                else:
                    raise KeyError(name)
                if any(isinstance(v, int | float) and v < 0 for v in values.values()):
                    raise ValueError(name)
            except (KeyError, ValueError):
                raise ValueError(
                    f"unknown or malformed fault {spec!r}; faults are: {', '.join(cls.NAMES)}"
                ) from None
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Output:
    """Bytes the dongle writes at (emulated) time ``at`` in seconds."""

    at: float
    data: bytes


@dataclass
class _State:
    rbid: str | None = None
    password: str | None = None
    channel: int | None = None
    pan_id: int | None = None
    joined: bool = False
    joined_at: float = 0.0
    sends: int = 0
    tx_limited_until: float | None = None
    reauth_until: float = 0.0
    lost_left: int = 0
    lost_requests_left: int = 0
    timers: dict[str, float] = field(default_factory=dict)


class DongleCore:
    """SKSTACK-IP dongle firmware plus the meter's radio side, sans-IO.

    ``receive(data, now)`` takes client bytes and returns :class:`Output` chunks with the
    time each is due; ``tick(now)`` fires timers (session expiry, transmit limit lifted)
    whose next due time is :meth:`next_deadline`.
    """

    def __init__(
        self,
        node: LocalNode,
        *,
        route_b_id: str,
        password: str,
        dialect: Dialect = Dialect.WITH_SIDE,
        line_ending: bytes = b"\r\n",
        echo: bool = True,
        hex_payload: bool = True,
        faults: DongleFaults | None = None,
        meter_mac: str = "C0F945004D3C2A11",
        dongle_mac: str = "001D129012345678",
        channel: int = 0x21,
        pan_id: int = 0x8888,
    ) -> None:
        if line_ending not in (b"\r\n", b"\r"):
            raise ValueError(f"line ending must be CR LF or CR, got {line_ending!r}")
        self.node = node
        self.route_b_id = sk.check_route_b_id(route_b_id)
        self.password = sk.check_route_b_password(password)
        self.dialect = dialect
        self.line_ending = line_ending
        self.echo = echo
        self.hex_payload = hex_payload
        self.faults = faults or DongleFaults()
        self.meter_mac = meter_mac
        self.meter_ip = sk.mac_to_link_local(meter_mac)
        self.dongle_mac = dongle_mac
        self.own_ip = sk.mac_to_link_local(dongle_mac)
        self.meter_channel = channel
        self.meter_pan_id = pan_id
        self.parser = sk.CommandParser(dialect)
        self.state = _State(
            lost_left=self.faults.lost_replies, lost_requests_left=self.faults.lost_requests
        )
        self.log: list[sk.Command | sk.CommandError] = []
        """Every command received, in order (tests and the CLI read it)."""
        self.frames_received: list[bytes] = []
        """ECHONET Lite frames the meter received (after any transmit-limit refusal)."""

    # ---------------------------------------------------------------- output helpers
    def _lines(self, at: float, *lines: str) -> Output:
        return Output(at, sk.iter_lines(lines, self.line_ending))

    def _event(
        self, at: float, code: int, *, sender: str | None = None, param: int | None = None
    ) -> Output:
        text = sk.format_event(code, sender or self.meter_ip, self.dialect, param=param)
        return self._lines(at, text)

    def _rx(self, at: float, data: bytes, *, port: int = sk.ECHONET_LITE_PORT) -> Output:
        rx = RxUdp(self.meter_ip, self.own_ip, port, port, self.meter_mac, 1, data, 0xB4, 0)
        line = sk.format_erxudp(rx, self.dialect, hex_payload=self.hex_payload)
        return Output(at, line + self.line_ending)

    # ---------------------------------------------------------------- input
    def receive(self, data: bytes, now: float) -> list[Output]:
        out: list[Output] = []
        for item in self.parser.feed(data):
            self.log.append(item)
            if isinstance(item, sk.CommandError):
                if self.echo:
                    out.append(self._lines(now, item.line))
                out.append(self._lines(now, f"FAIL ER{item.code:02d}"))
                continue
            if self.echo:
                out.append(self._lines(now, item.line))
            out.extend(self._command(item, now))
        return out

    def _command(self, cmd: sk.Command, now: float) -> list[Output]:
        handler = getattr(self, "_cmd_" + cmd.name.lower(), None)
        if handler is None:
            return [self._lines(now, "FAIL ER04")]
        try:
            result: list[Output] = handler(cmd, now)
        except _ArgCount:
            return [self._lines(now, "FAIL ER05")]
        except (ValueError, IndexError, sk.SkstackError):
            return [self._lines(now, "FAIL ER06")]
        return result

    def _nargs(self, cmd: sk.Command, *allowed: int) -> None:
        if len(cmd.args) not in allowed:
            raise _ArgCount

    def _ok(self, now: float, detail: str = "") -> Output:
        return self._lines(now, ("OK " + detail) if detail else "OK")

    # ---------------------------------------------------------------- commands
    def _cmd_skreset(self, cmd: sk.Command, now: float) -> list[Output]:
        self.state = _State(
            lost_left=self.state.lost_left, lost_requests_left=self.state.lost_requests_left
        )
        return [self._ok(now)]

    def _cmd_skver(self, cmd: sk.Command, now: float) -> list[Output]:
        return [self._lines(now, f"EVER {_EVER}", "OK")]

    def _cmd_skappver(self, cmd: sk.Command, now: float) -> list[Output]:
        return [self._lines(now, f"EAPPVER {_EAPPVER}", "OK")]

    def _cmd_skinfo(self, cmd: sk.Command, now: float) -> list[Output]:
        # BP35A1 reports its 16-bit short address (FFFE: none) last; BP35C2 its side
        last = "0" if self.dialect is Dialect.WITH_SIDE else "FFFE"
        ch = self.state.channel or self.meter_channel
        pan = self.state.pan_id if self.state.pan_id is not None else 0xFFFF
        line = f"EINFO {self.own_ip} {self.dongle_mac} {ch:02X} {pan:04X} {last}"
        return [self._lines(now, line, "OK")]

    def _cmd_sksreg(self, cmd: sk.Command, now: float) -> list[Output]:
        if not cmd.args or len(cmd.args) > 2:
            return [self._lines(now, "FAIL ER05")]
        reg = cmd.args[0].upper()
        if len(cmd.args) == 1:
            value = {
                "S2": f"{self.state.channel or 0:02X}",
                "S3": f"{self.state.pan_id or 0:04X}",
                "SFE": "0" if self.echo else "1",
            }.get(reg, "0")
            return [self._lines(now, f"ESREG {value}", "OK")]
        value_int = int(cmd.args[1], 16)
        if reg == "S2":
            if not 0x21 <= value_int <= 0x3C:
                return [self._lines(now, "FAIL ER06")]
            self.state.channel = value_int
        elif reg == "S3":
            self.state.pan_id = value_int
        elif reg == "SFE":
            self.echo = value_int == 0
        return [self._ok(now)]

    def _cmd_sksetrbid(self, cmd: sk.Command, now: float) -> list[Output]:
        self._nargs(cmd, 1)
        self.state.rbid = sk.check_route_b_id(cmd.args[0])
        return [self._ok(now)]

    def _cmd_sksetpwd(self, cmd: sk.Command, now: float) -> list[Output]:
        self._nargs(cmd, 2)
        length, password = int(cmd.args[0], 16), cmd.args[1]
        if length != len(password) or not 1 <= length <= 32:
            return [self._lines(now, "FAIL ER06")]
        self.state.password = password
        return [self._ok(now)]

    def _cmd_skscan(self, cmd: sk.Command, now: float) -> list[Output]:
        self._nargs(cmd, 4 if self.dialect is Dialect.WITH_SIDE else 3)
        mode, duration = int(cmd.args[0], 16), int(cmd.args[2], 16)
        if mode not in (0, 2, 3) or not 0 <= duration <= 14:
            return [self._lines(now, "FAIL ER06")]
        out = [self._ok(now)]
        scan_s = sk.scan_time_s(duration) * _SCAN_TIME_SCALE
        at = now + scan_s / 2
        # The meter answers a beacon request only from the HEMS its route B ID names:
        # the beacon's pairing ID is the ID's last 8 characters.
        if mode == 2 and self.state.rbid is not None and self.state.rbid == self.route_b_id:
            desc = PanDescriptor(
                channel=self.meter_channel,
                channel_page=9,
                pan_id=self.meter_pan_id,
                mac=self.meter_mac,
                lqi=0xB4,
                pair_id=self.route_b_id[-8:],
                side=0,
            )
            out.append(self._event(at, sk.EVENT_BEACON))
            out.append(self._lines(at, *sk.format_pandesc(desc, self.dialect)))
        out.append(self._event(now + scan_s, sk.EVENT_SCAN_DONE, sender=self.own_ip))
        return out

    def _cmd_skll64(self, cmd: sk.Command, now: float) -> list[Output]:
        self._nargs(cmd, 1)
        mac = cmd.args[0]
        if len(mac) != 16:
            raise ValueError(mac)
        return [self._lines(now, sk.mac_to_link_local(mac))]

    def _cmd_skjoin(self, cmd: sk.Command, now: float) -> list[Output]:
        self._nargs(cmd, 1)
        target = cmd.args[0].upper()
        if self.state.joined:
            return [self._lines(now, "FAIL ER10")]
        out = [self._ok(now)]
        at = now + _JOIN_STEP_S
        out.append(self._event(at, sk.EVENT_UDP_SENT, param=sk.TX_OK))
        reachable = (
            target == self.meter_ip
            and self.state.channel == self.meter_channel
            and self.state.pan_id == self.meter_pan_id
        )
        if not reachable:
            # no PANA answer at all: the dongle gives up
            out.append(self._event(at + _JOIN_STEP_S, sk.EVENT_PANA_FAILED, sender=target))
            return out
        out.append(self._event(at, sk.EVENT_NA_RECEIVED))
        out.append(self._rx(at, _pana_message(1), port=sk.PANA_PORT))
        accepted = (
            not self.faults.wrong_credentials
            and self.state.rbid == self.route_b_id
            and self.state.password == self.password
        )
        at += _JOIN_STEP_S
        out.append(self._event(at, sk.EVENT_UDP_SENT, param=sk.TX_OK))
        out.append(self._rx(at, _pana_message(2), port=sk.PANA_PORT))
        if not accepted:
            out.append(self._event(at + _JOIN_STEP_S, sk.EVENT_PANA_FAILED))
            return out
        out.append(self._event(at + _JOIN_STEP_S, sk.EVENT_PANA_OK))
        self.state.joined = True
        self.state.joined_at = now
        if self.faults.session_expiry_s is not None:
            self.state.timers["expiry"] = now + self.faults.session_expiry_s
        if self.faults.session_end_s is not None:
            self.state.timers["end"] = now + self.faults.session_end_s
        if self.faults.session_lifetime_s is not None:
            self.state.timers["lifetime"] = now + self.faults.session_lifetime_s
        return out

    def _cmd_skterm(self, cmd: sk.Command, now: float) -> list[Output]:
        if not self.state.joined:
            return [self._lines(now, "FAIL ER10")]
        self._drop_session()
        # a meter that does not answer PANA's termination: the dongle gives up (EVENT 28)
        ended = sk.EVENT_SESSION_END_TIMEOUT if self.faults.meter_silent else sk.EVENT_SESSION_ENDED
        return [self._ok(now), self._event(now + _JOIN_STEP_S, ended)]

    def _cmd_ropt(self, cmd: sk.Command, now: float) -> list[Output]:
        # The answer to ROPT ends with a lone CR on the real modules.
        return [Output(now, f"OK {1 if self.hex_payload else 0:02d}\r".encode())]

    def _cmd_wopt(self, cmd: sk.Command, now: float) -> list[Output]:
        self._nargs(cmd, 1)
        mode = int(cmd.args[0], 16)
        if mode not in (0, 1):
            return [self._lines(now, "FAIL ER06")]
        self.hex_payload = mode == 1
        return [Output(now, b"OK\r")]  # like ROPT's, WOPT's answer ends with a lone CR

    def _cmd_sksendto(self, cmd: sk.Command, now: float) -> list[Output]:
        # SKSENDTO handle ipaddr port sec [side] datalen data
        self._nargs(cmd, 6 if self.dialect is Dialect.WITH_SIDE else 5)
        handle, ip, port_hex, sec = cmd.args[:4]
        if not 1 <= int(handle) <= 6 or int(sec, 16) not in (0, 1, 2):
            return [self._lines(now, "FAIL ER06")]
        port = int(port_hex, 16)
        st = self.state
        if st.tx_limited_until is not None or not st.joined or now < st.reauth_until:
            # refused over the transmit-time limit, without a session, or re-authenticating
            return [self._lines(now, "FAIL ER10")]
        st.sends += 1
        out = [
            self._event(now, sk.EVENT_UDP_SENT, sender=ip.upper(), param=sk.TX_OK),
            self._ok(now),
        ]
        limit = self.faults.transmit_limit_after
        if limit is not None and st.sends >= limit and "tx-limit" not in st.timers:
            st.tx_limited_until = now + self.faults.transmit_limit_s
            st.timers["tx-limit"] = st.tx_limited_until
            out.append(self._event(now, sk.EVENT_TX_LIMIT_ON, sender=self.own_ip))
        if ip.upper() != self.meter_ip or port != sk.ECHONET_LITE_PORT:
            return out
        if st.lost_requests_left > 0:
            st.lost_requests_left -= 1
            return out
        self.frames_received.append(cmd.data)
        replies = self.node.handle(cmd.data, (self.own_ip, sk.ECHONET_LITE_PORT))
        replies_data = [data for data, _ in replies] + [
            data for data, _ in self.node.take_announcements()
        ]
        for data in replies_data:
            if self.faults.meter_silent:
                continue
            if st.lost_left > 0:
                st.lost_left -= 1
                continue
            out.append(self._rx(now + _JOIN_STEP_S + self.faults.reply_delay_s, data))
        return out

    # ---------------------------------------------------------------- meter-initiated
    def announce(self, now: float) -> list[Output]:
        """Forward what the meter announced (INF, e.g. the 30-minute reading 0xEA/0xEB)."""
        out: list[Output] = []
        for data, _ in self.node.take_announcements():
            if self.state.joined and not self.faults.meter_silent:
                out.append(self._rx(now, data))
        return out

    def push_fixed_time_readings(self, meter: DeviceObject, now: float) -> list[Output]:
        """The meter's INF of 0xEA and 0xEB at a 30-minute boundary (AIF: periodic push)."""
        epcs = [e for e in (0xEA, 0xEB) if meter.read(e) is not None]
        props = tuple(Property(e, meter.read(e) or b"") for e in epcs)
        frame = Frame(0, meter.eoj, CONTROLLER_EOJ, ESV.INF, props)
        if not self.state.joined or self.faults.meter_silent:
            return []
        return [self._rx(now, frame.encode())]

    def next_deadline(self) -> float | None:
        return min(self.state.timers.values(), default=None)

    def tick(self, now: float) -> list[Output]:
        out: list[Output] = []
        st = self.state
        for name, due in sorted(st.timers.items(), key=lambda kv: kv[1]):
            if due > now:
                continue
            del st.timers[name]
            if name == "expiry" and st.joined:
                # §session lifetime: re-authentication is attempted and (here) fails
                self._drop_session()
                out.append(self._event(due, sk.EVENT_SESSION_LIFETIME))
                out.append(self._event(due + _JOIN_STEP_S, sk.EVENT_PANA_FAILED))
            elif name == "lifetime" and st.joined:
                # lifetime over: the dongle re-authenticates on its own and succeeds
                out.append(self._event(due, sk.EVENT_SESSION_LIFETIME))
                out.append(self._event(due + _REAUTH_S, sk.EVENT_PANA_OK))
                st.reauth_until = due + _REAUTH_S  # no secured sends until then
                assert self.faults.session_lifetime_s is not None
                st.timers["lifetime"] = due + self.faults.session_lifetime_s
            elif name == "end" and st.joined:
                self._drop_session()
                out.append(self._event(due, sk.EVENT_SESSION_END_REQUEST))
                out.append(self._event(due + _JOIN_STEP_S, sk.EVENT_SESSION_ENDED))
            elif name == "tx-limit":
                st.tx_limited_until = None
                out.append(self._event(due, sk.EVENT_TX_LIMIT_OFF, sender=self.own_ip))
        return out

    def _drop_session(self) -> None:
        self.state.joined = False
        self.state.timers.pop("expiry", None)
        self.state.timers.pop("end", None)
        self.state.timers.pop("lifetime", None)


class _ArgCount(ValueError):
    pass


def _pana_message(step: int) -> bytes:
    """A PANA header (RFC 5191 §6.2) as the meter would send during authentication."""
    flags = 0x8000 if step == 1 else 0x0000
    return (
        b"\x00\x00"
        + (16).to_bytes(2, "big")
        + flags.to_bytes(2, "big")
        + (2).to_bytes(2, "big")
        + b"\x00\x00\x00\x01"
        + step.to_bytes(4, "big")
    )


class PtyDongle:
    """A :class:`DongleCore` on a real pseudo-terminal, driven by the running event loop.

    ``async with PtyDongle(core) as dongle:`` opens the pty; :attr:`path` is the device a
    client opens (e.g. ``/dev/pts/7``).  Output is written when due (delays are real time).
    """

    def __init__(self, core: DongleCore) -> None:
        self.core = core
        self._master = -1
        self._slave = -1
        self.path = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handles: list[asyncio.TimerHandle] = []
        self._timer: asyncio.TimerHandle | None = None
        self._t0 = 0.0

    async def __aenter__(self) -> PtyDongle:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no line discipline: bytes pass as on a USB serial port
        attrs = termios.tcgetattr(self._slave)
        attrs[4] = attrs[5] = termios.B115200
        termios.tcsetattr(self._slave, termios.TCSANOW, attrs)
        self.path = os.ttyname(self._slave)
        os.set_blocking(self._master, False)
        self._loop.add_reader(self._master, self._on_readable)

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except OSError:
            return
        if data:
            self._emit(self.core.receive(data, self.now()))

    def _emit(self, outputs: Sequence[Output]) -> None:
        assert self._loop is not None
        now = self.now()
        for out in outputs:
            if out.at <= now:
                self._write(out.data)
            else:
                self._handles.append(self._loop.call_at(out.at, self._write, out.data))
        self._arm()

    def _arm(self) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self.core.next_deadline()
        if due is not None:
            self._timer = self._loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._emit(self.core.tick(self.now()))

    def _write(self, data: bytes) -> None:
        if self._master < 0:
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                os.set_blocking(self._master, True)
                n = os.write(self._master, view)
                os.set_blocking(self._master, False)
            view = view[n:]

    def send(self, outputs: Sequence[Output]) -> None:
        """Write meter-initiated output (e.g. :meth:`DongleCore.push_fixed_time_readings`)."""
        self._emit(outputs)

    async def run_meter(
        self,
        meter: SmartMeter,
        clock: Clock,
        *,
        tick_s: float = 1.0,
        duration_s: float | None = None,
        advance: Callable[[float], object] | None = None,
    ) -> int:
        """Keep the meter's time moving with ``clock`` and push INF 0xEA/0xEB at every
        30-minute boundary, as a real meter does.  ``advance(now_s)`` moves the home whose
        meter this is (e.g. :meth:`erab.devices.Town.advance_to`, whose observer the meter's
        fleet is); without it the household holds its last net power.
        Runs ``duration_s`` of clock time, or until cancelled; returns how many pushes."""
        fleet = meter.fleet
        start = last = clock.timestamp()
        pushes = 0
        while duration_s is None or last - start < duration_s:
            await clock.sleep(tick_s)
            now = clock.timestamp()
            before = fleet.newest_point_s()
            if advance is not None:
                advance(now)
            else:
                fleet.observe(last, now, fleet.site_net_w)
            last = now
            if fleet.newest_point_s() > before:
                self.send(self.core.push_fixed_time_readings(meter, self.now()))
                pushes += 1
        return pushes

    def close(self) -> None:
        for handle in self._handles:
            handle.cancel()
        if self._timer is not None:
            self._timer.cancel()
        if self._master >= 0:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
        self._master = self._slave = -1
