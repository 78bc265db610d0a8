"""A serial port as an asyncio byte stream (pyserial underneath, 115200 8N1 by default).

The Wi-SUN dongles of route B are USB serial devices (``/dev/ttyUSB0``); the dongle
emulator is a pty (``/dev/pts/N``).  Both open the same way.  Reads are event-driven
(``loop.add_reader`` on the port's file descriptor), so no thread is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

BAUDRATE = 115200


class ByteStream(Protocol):
    """What the route B reader needs of a serial link."""

    def write(self, data: bytes) -> None: ...

    async def read(self) -> bytes: ...

    def close(self) -> None: ...


class SerialPort:
    """``async with SerialPort("/dev/ttyUSB0") as port: port.write(b"SKVER\\r\\n")``."""

    def __init__(self, path: str, *, baudrate: int = BAUDRATE) -> None:
        self.path = path
        self.baudrate = baudrate
        self._serial: Any = None
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> SerialPort:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        import serial  # pyserial

        try:
            self._serial = serial.Serial(
                self.path,
                self.baudrate,
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
                timeout=0,
                write_timeout=5,
            )
        except (serial.SerialException, OSError) as exc:
            raise OSError(
                f"cannot open serial port {self.path}: {exc} (is the dongle plugged in, "
                "and may this user open it?)"
            ) from exc
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._serial.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        try:
            data: bytes = self._serial.read(4096)
        except Exception:  # the device went away: wake the reader with an empty chunk
            data = b""
            self._detach()
        self._chunks.put_nowait(data)

    def _detach(self) -> None:
        if self._loop is not None and self._serial is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._serial.fileno())

    def write(self, data: bytes) -> None:
        import serial

        if self._serial is None:
            raise OSError(f"serial port {self.path} is not open")
        try:
            self._serial.write(data)
            self._serial.flush()
        except (serial.SerialException, OSError) as exc:
            raise OSError(f"cannot write to serial port {self.path}: {exc}") from exc

    async def read(self) -> bytes:
        """The next bytes received; ``b""`` means the port has gone."""
        return await self._chunks.get()

    def close(self) -> None:
        if self._serial is not None:
            self._detach()
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None
