"""A market award file: what the AC was awarded, split per RA (VEN), as events to send.

CSV (a header row, then one row per VEN and window)::

    ven,kw,start,duration,level,ramp_up,randomise
    ra-tokyo-1,-120,2026-08-03T14:00+09:00,1h,,5m,2m
    ra-osaka-2,-80,2026-08-03T14:00+09:00,90m,,,

TOML (``award_id`` optional; one ``[[award]]`` table per VEN and window)::

    award_id = "jepx-2026-08-03-14"
    [[award]]
    ven = "ra-tokyo-1"
    kw = -120
    start = 2026-08-03T14:00:00+09:00
    duration = "1h"

``kw`` is signed as the grid sees it (negative reduces demand); ``level`` (0-3) instead sends a
SIMPLE signal; ``duration``, ``ramp_up`` and ``randomise`` take ``90m``, ``1h``, ``1h30m`` or
minutes.  A bad line is refused naming its line (CSV) or entry (TOML) and what was wrong; a
file with any bad line creates no event.
"""

from __future__ import annotations

import csv
import io
import math
import re
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

MAX_LINES = 10_000
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?$")


class AwardError(ValueError):
    """An award file that cannot be used; the message names the line and the problem."""


@dataclass(frozen=True)
class AwardLine:
    ven: str
    kw: float
    start: datetime
    duration: timedelta
    level: int | None = None
    ramp_up: timedelta = timedelta(0)
    randomise: timedelta = timedelta(0)


def parse_duration(text: str) -> timedelta:
    """``90m``, ``1h``, ``1h30m`` or a number of minutes."""
    t = str(text).strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", t):
        return timedelta(minutes=float(t))
    m = _DURATION.match(t)
    if not t or m is None or not any(m.groups()):
        raise ValueError(f"duration {text!r}: give e.g. 90m, 1h or 1h30m")
    return timedelta(hours=float(m.group(1) or 0), minutes=float(m.group(2) or 0))


def _line(raw: dict[str, Any], where: str) -> AwardLine:
    def need(name: str) -> Any:
        value = raw.get(name)
        if value is None or value == "":
            raise AwardError(f"{where}: '{name}' is missing")
        return value

    try:
        ven = str(need("ven")).strip()
        level_text = raw.get("level")
        level = None if level_text in (None, "") else int(str(level_text))
        if level is not None and level not in (0, 1, 2, 3):
            raise ValueError(f"level {level} is not 0-3")
        kw_text = raw.get("kw")
        kw = 0.0 if kw_text in (None, "") and level is not None else float(need("kw"))
        if not math.isfinite(kw) or (level is None and kw == 0):
            raise ValueError(f"kw {kw_text!r} must be a non-zero number")
        start = need("start")
        if not isinstance(start, datetime):
            start = datetime.fromisoformat(str(start).strip())
        if start.tzinfo is None:
            raise ValueError(f"start {start.isoformat()} needs a zone, e.g. +09:00")
        duration = parse_duration(str(need("duration")))
        if duration <= timedelta(0):
            raise ValueError("duration must be positive")
        ramp = parse_duration(str(raw.get("ramp_up") or 0))
        randomise = parse_duration(str(raw.get("randomise") or 0))
    except AwardError:
        raise
    except (ValueError, TypeError) as exc:
        raise AwardError(f"{where}: {exc}") from None
    return AwardLine(ven, kw, start, duration, level, ramp, randomise)


def parse_award(text: str, kind: str) -> tuple[str | None, list[AwardLine]]:
    """The award id (TOML only) and lines of an award file's ``text``; ``kind`` is csv or toml."""
    if kind == "toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise AwardError(f"not valid TOML: {exc}") from None
        entries = data.get("award")
        if not isinstance(entries, list) or not entries:
            raise AwardError("no [[award]] entries")
        if len(entries) > MAX_LINES:
            raise AwardError(f"more than {MAX_LINES} entries")
        award_id = data.get("award_id")
        lines = [_line(e if isinstance(e, dict) else {}, f"entry {i + 1}")
                 for i, e in enumerate(entries)]  # fmt: skip
        return (None if award_id is None else str(award_id)[:64]), lines
    if kind != "csv":
        raise AwardError(f"award files are .csv or .toml, not {kind!r}")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    lines = []
    try:
        missing = {"ven", "start", "duration"} - set(reader.fieldnames or [])
        if missing:
            raise AwardError(f"the CSV header lacks {', '.join(sorted(missing))} (columns: ven, "
                             "kw, start, duration, and optionally level, ramp_up, randomise)")
        for row in reader:
            if reader.line_num > MAX_LINES + 1:
                raise AwardError(f"more than {MAX_LINES} lines")
            lines.append(_line(row, f"line {reader.line_num}"))
    except csv.Error as exc:
        raise AwardError(f"line {reader.line_num}: not CSV ({exc})") from None
    if not lines:
        raise AwardError("no award lines after the header")
    return None, lines


def read_award(path: Path) -> tuple[str | None, list[AwardLine]]:
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AwardError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise AwardError(f"{path} is not UTF-8 text") from None
    try:
        return parse_award(text, kind)
    except AwardError as exc:
        raise AwardError(f"{path.name}: {exc}") from None
