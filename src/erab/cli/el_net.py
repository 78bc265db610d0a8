"""``erab el serve | discover | get | set | watch``: ECHONET Lite on the network.

Every command takes ``--bind ADDRESS`` (the local address to use, port 3610) and ``--json``.
Multicast stays on loopback unless ``--iface`` names a real interface.  Without ``--bind``
the controller commands use 127.0.0.1, or another free loopback address when a program
(say ``erab el watch`` in another shell) holds 127.0.0.1:3610.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

from erab.cli import CliError
from erab.cli.flags import deprecated_alias

DEFAULT_BIND = "127.0.0.1"


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run an emulated ECHONET Lite node hosting the given classes (until stopped)",
        description="Run a node on BIND:3610 hosting one object per --class, with plausible "
        "default values; it answers Get/Set/INF_REQ/SetGet like a device and announces its "
        "instance list at start.  Stop with Ctrl-C or --duration.",
    )
    serve.add_argument(
        "--class",
        dest="classes",
        action="append",
        required=True,
        metavar="CLASS",
        help="class code (0x0130), EOJ with instance (0x013001) or short name "
        "(homeAirConditioner); repeat for more objects",
    )
    serve.add_argument("--maker", default="0xFFFFFF", help="manufacturer code (3 bytes, hex)")
    serve.add_argument(
        "--duration", type=float, metavar="SECONDS", help="stop after this many seconds"
    )
    deprecated_alias(serve, "--seconds", new="--duration", type=float)
    _common(serve, default_bind="127.0.0.51")
    serve.set_defaults(handler=_serve)

    discover = subparsers.add_parser(
        "discover",
        help="find ECHONET Lite nodes: their objects, class names and maker codes",
        description="Multicast Get of the instance list (0xD6) plus unicast probes of --host "
        "addresses or subnets; then reads each node's identification and the property maps "
        "of all its objects at once.  An object that does not answer is listed as 'no "
        "answer'; describing ends within 2 x --timeout x 3 seconds whatever devices do.  "
        "Exit 1 when no node answered.",
    )
    discover.add_argument(
        "--host",
        dest="hosts",
        action="append",
        default=[],
        help="also probe this address or subnet (127.0.0.0/28); repeatable",
    )
    discover.add_argument(
        "--no-multicast", action="store_true", help="only probe the --host addresses"
    )
    discover.add_argument(
        "--wait", type=float, default=1.0, help="seconds to wait for answers (default 1)"
    )
    _common(discover, controller=True)
    discover.set_defaults(handler=_discover)

    get = subparsers.add_parser(
        "get",
        help="read properties of a device object",
        description="Example: erab el get 127.0.0.51 0x013001 operationMode 0xB3.  Counts "
        "with coefficient properties (a smart meter's 0xE0/0xE3 x 0xD3 x 0xE1) are also "
        "shown scaled.  Exit 0 when every property asked has a value, 1 otherwise.",
    )
    _target(get)
    get.add_argument("props", nargs="+", metavar="PROP", help="EPC (0xB0) or short name")
    _common(get, controller=True)
    get.set_defaults(handler=_get)

    set_ = subparsers.add_parser(
        "set",
        help="write properties of a device object (SetC)",
        description="Example: erab el set 127.0.0.51 0x013001 0xB0=cooling targetTemperature=26",
    )
    _target(set_)
    set_.add_argument(
        "assignments",
        nargs="+",
        metavar="PROP=VALUE",
        help="property (EPC or short name) and value (state name, number, or 0x.. bytes)",
    )
    set_.add_argument(
        "--no-verify", action="store_true", help="skip reading the values back after the Set"
    )
    _common(set_, controller=True)
    set_.set_defaults(handler=_set)

    watch = subparsers.add_parser(
        "watch",
        help="print INF / INFC notifications as they arrive",
        description="Listens on BIND:3610 and the multicast group; stop with Ctrl-C, --count "
        "or --duration.  Notifications that arrive faster than they are printed wait in a "
        "queue of --queue entries; beyond that the oldest are dropped and the drops reported "
        "on stderr.",
    )
    watch.add_argument("--count", type=int, help="stop after this many notifications")
    watch.add_argument(
        "--duration", type=float, metavar="SECONDS", help="stop after this many seconds"
    )
    deprecated_alias(watch, "--seconds", new="--duration", type=float)
    watch.add_argument(
        "--queue",
        type=int,
        default=1024,
        metavar="N",
        help="notifications kept waiting before the oldest are dropped (default 1024)",
    )
    _common(watch, controller=True)
    watch.set_defaults(handler=_watch)


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", help="device address (IPv4 or IPv6; names are not looked up)")
    parser.add_argument("eoj", help="object, e.g. 0x013001")


def _common(
    parser: argparse.ArgumentParser, default_bind: str | None = None, controller: bool = False
) -> None:
    default = default_bind or DEFAULT_BIND
    if controller:
        default += ", or a free 127.x.y.z when that is taken"
    parser.add_argument(
        "--bind",
        default=default_bind,
        metavar="ADDRESS",
        help=f"local address to use, port 3610 (default {default}; "
        "0.0.0.0 when --iface is given)",
    )
    parser.add_argument(
        "--iface",
        metavar="NAME",
        help="network interface for multicast (default lo: nothing leaves this machine)",
    )
    parser.add_argument(
        "--port", type=int, default=3610, help="UDP port (default 3610, the ECHONET Lite port)"
    )
    parser.add_argument(
        "--timeout", type=float, default=2.0, help="seconds to wait for each answer (default 2)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    if controller:
        parser.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="say on stderr which address the controller uses and, at the end, how many "
            "answers it dropped as late, duplicate or unmatched",
        )


def _bind(args: argparse.Namespace) -> str:
    if args.bind:
        return str(args.bind)
    return "0.0.0.0" if args.iface else DEFAULT_BIND


def _host(text: str) -> str:
    """A device address as given; a name is refused rather than looked up in the DNS (a
    request must go only where the user said)."""
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        raise CliError(
            f"host {text!r} is not an IPv4 or IPv6 address; give the device's address, "
            "e.g. 127.0.0.51 (host names are not looked up)"
        ) from None
    return text


def _say(args: argparse.Namespace, text: str) -> None:
    if getattr(args, "verbose", False):
        print(f"erab el {args.el_command}: {text}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def _controller(args: argparse.Namespace, **options: Any) -> AsyncIterator[Any]:
    """An open Controller on --bind; without --bind on 127.0.0.1, or on a free loopback
    address when 127.0.0.1:PORT is taken (devices answer to wherever a request came from,
    and the multicast group is received beside any other listener)."""
    from erab.echonet.controller import Controller
    from erab.echonet.transport import TransportError, random_loopback_address

    def make(bind: str) -> Controller:
        return Controller(
            bind, port=args.port, interface=args.iface, timeout_s=args.timeout, **options
        )

    bind = _bind(args)
    ctl = make(bind)
    try:
        await ctl.open()
    except TransportError as exc:
        if args.bind or args.iface or not exc.address_in_use:
            raise
        bind = random_loopback_address(args.port)
        _say(args, f"{DEFAULT_BIND} port {args.port} is in use; using {bind} instead")
        ctl = make(bind)
        await ctl.open()
    _say(args, f"controller on {bind} port {args.port}")
    try:
        yield ctl
    finally:
        await ctl.close()
        _say(args, ctl.stats.summary())


def _run(coro: Any) -> int:
    from erab.echonet.transport import TransportError

    try:
        result: int = asyncio.run(coro)
    except TransportError as exc:
        if exc.address_in_use:  # the transport says what; the advice is this command's
            raise CliError(f"{exc}; pick another --bind address") from exc
        raise
    return result


def _emit(args: argparse.Namespace, data: object, text: str) -> None:
    if args.json:
        print(json.dumps(data, ensure_ascii=False, sort_keys=True))
    else:
        print(text)
    sys.stdout.flush()


def _eoj(text: str) -> Any:
    from erab.echonet.frame import EOJ

    try:
        return EOJ.of(text)
    except ValueError as exc:
        raise CliError(f"EOJ {text!r}: {exc}") from None


def _object_for(text: str, taken: set[Any]) -> Any:
    """An EOJ from a class code, an EOJ or a class short name; instance numbers count up."""
    from erab.echonet import classdb
    from erab.echonet.frame import EOJ

    raw = text.strip()
    digits = raw.lower().removeprefix("0x")
    instance = None
    if len(digits) == 6 and all(c in "0123456789abcdef" for c in digits):
        eoj = EOJ.of(raw)
        code, instance = eoj.class_code, eoj.instance
    else:
        try:
            code = classdb.get_class(raw).class_code
        except KeyError:
            raise CliError(
                f"--class {text!r}: no such class; give a code (0x0130), an EOJ (0x013001) "
                "or a short name (see `erab el classes`)"
            ) from None
    if instance is None:
        instance = 1
        while EOJ(code >> 8, code & 0xFF, instance) in taken:
            instance += 1
    eoj = EOJ(code >> 8, code & 0xFF, instance)
    if eoj in taken or instance == 0 or eoj.is_node_profile:
        raise CliError(f"--class {text!r}: object {eoj} is given twice or is not a device")
    taken.add(eoj)
    return eoj


# -- serve ------------------------------------------------------------------------------


async def _serve_async(args: argparse.Namespace) -> int:
    from erab.echonet.controller import class_name
    from erab.echonet.node import DeviceObject, LocalNode

    taken: set[Any] = set()
    eojs = [_object_for(c, taken) for c in args.classes]
    try:
        maker = int(str(args.maker), 16)
    except ValueError:
        raise CliError(f"--maker {args.maker!r} is not hexadecimal (e.g. 0x000077)") from None
    node = LocalNode([DeviceObject(e) for e in eojs], manufacturer_code=maker)
    bind = _bind(args)
    await node.start(bind, port=args.port, interface=args.iface)
    description = {
        "address": bind,
        "port": args.port,
        "identification": node.identification.hex(),
        "manufacturer_code": f"0x{maker:06X}",
        "objects": [{"eoj": str(e), "class": class_name(e.class_code)} for e in eojs],
    }
    objects = ", ".join(f"{e} {class_name(e.class_code)}" for e in eojs)
    _emit(args, description, f"serving on {bind}:{args.port}: {objects} (Ctrl-C stops)")
    try:
        if args.duration is not None:
            await asyncio.sleep(args.duration)
        else:
            await asyncio.Event().wait()
    finally:
        await node.close()
    return 0


def _serve(args: argparse.Namespace) -> int:
    return _run(_serve_async(args))


# -- discover ---------------------------------------------------------------------------


async def _discover_async(args: argparse.Namespace) -> int:
    from erab.echonet.controller import OK

    async with _controller(args) as ctl:
        nodes = await ctl.discover(
            hosts=args.hosts, multicast=not args.no_multicast, wait_s=args.wait
        )
    nodes.sort(key=lambda n: _host_sort_key(n.host))
    data = [
        {
            "host": n.host,
            "identification": n.identification.hex() if n.identification else None,
            "manufacturer_code": (
                None if n.manufacturer_code is None else f"0x{n.manufacturer_code:06X}"
            ),
            "profile_answered": n.profile_answered,
            "objects": [
                {
                    "eoj": str(o.eoj),
                    "class": o.class_name,
                    "status": o.status,
                    "get": [f"0x{e:02X}" for e in sorted(o.get_map)],
                    "set": [f"0x{e:02X}" for e in sorted(o.set_map)],
                    "inf": [f"0x{e:02X}" for e in sorted(o.announce_map)],
                }
                for o in n.objects.values()
            ],
        }
        for n in nodes
    ]
    if args.json:
        _emit(args, data, "")
        return 0 if nodes else 1
    if not nodes:
        print("no ECHONET Lite nodes answered (try --host ADDRESS, or --iface on a LAN)")
        return 1
    rows = [("HOST", "MAKER", "EOJ", "CLASS", "IDENTIFICATION")]
    silent = 0
    for node, entry in zip(nodes, data, strict=True):
        for obj in node.objects.values():
            note = "" if obj.status == OK else f" ({obj.status})"
            silent += obj.status != OK
            rows.append(
                (
                    node.host,
                    str(entry["manufacturer_code"] or "?"),
                    str(obj.eoj),
                    obj.class_name + note,
                    str(entry["identification"] or "?"),
                )
            )
        if not node.objects:
            rows.append((node.host, str(entry["manufacturer_code"] or "?"), "-", "-", "?"))
    print(_table(rows))
    summary = f"{len(nodes)} node(s)"
    if silent:
        summary += f"; {silent} object(s) did not answer fully"
    print(summary)
    return 0


def _host_sort_key(host: str) -> tuple[int, ...]:
    import ipaddress

    try:
        return tuple(ipaddress.ip_address(host).packed)
    except ValueError:
        return (999,)


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _discover(args: argparse.Namespace) -> int:
    return _run(_discover_async(args))


# -- get / set --------------------------------------------------------------------------


def _describe_value(eoj: Any, epc: int, value: object) -> tuple[str, str, object]:
    """(property name, text for people, JSON value)."""
    from erab.echonet import classdb
    from erab.echonet.codecs import to_jsonable

    try:
        spec = classdb.get_class(eoj.class_code).property(epc)
    except KeyError:
        spec = None
    if isinstance(value, bytes):
        return (spec.short_name if spec else "?", "0x" + value.hex().upper(), value.hex())
    if spec is None:
        return ("?", str(value), to_jsonable(value))
    return (spec.short_name, spec.format(value), to_jsonable(value))


async def _get_async(args: argparse.Namespace) -> int:
    from erab.echonet.controller import resolve_epc

    host = _host(args.host)
    eoj = _eoj(args.eoj)
    epcs = list(dict.fromkeys(resolve_epc(eoj, p) for p in args.props))
    async with _controller(args) as ctl:
        values = await ctl.get(host, eoj, epcs)
        scaled = await ctl.scaled(host, eoj, {e: v for e, v in values.items() if e in epcs})
    data: dict[str, object] = {}
    rows = [("EPC", "PROPERTY", "VALUE")]
    for epc in epcs:
        if epc in values:
            entry = _value_entry(eoj, epc, values[epc], scaled.get(epc))
            data[f"0x{epc:02X}"] = entry
            rows.append((f"0x{epc:02X}", str(entry["name"]), str(entry["text"])))
        else:
            data[f"0x{epc:02X}"] = None
            rows.append((f"0x{epc:02X}", "", "(not available)"))
    _emit(args, {"host": host, "eoj": str(eoj), "properties": data}, _table(rows))
    # every property asked must have a value; extra ones a device adds do not count
    return 0 if all(epc in values for epc in epcs) else 1


def _value_entry(eoj: Any, epc: int, value: object, scaled: Any) -> dict[str, object]:
    """A property's JSON entry: name, value, text, and where it is a count with
    coefficients, scaledValue and scaledUnit (the text then ends in "= 14073.3 kWh")."""
    from erab.echonet.describe import format_scaled

    name, text, jsonable = _describe_value(eoj, epc, value)
    entry: dict[str, object] = {"name": name, "value": jsonable, "text": text}
    if scaled is not None:
        entry["text"] = f"{text} = {format_scaled(scaled.value, scaled.unit)}"
        entry["scaledValue"] = scaled.value
        entry["scaledUnit"] = scaled.unit
    return entry


def _parse_assignment(eoj: Any, text: str) -> tuple[int, object]:
    from erab.echonet.controller import resolve_epc

    if "=" not in text:
        raise CliError(f"{text!r}: write PROP=VALUE, e.g. 0xB0=cooling or targetTemperature=26")
    key, value = text.split("=", 1)
    epc = resolve_epc(eoj, key)
    if value.lower().startswith("0x") and len(value) > 2:
        # 0x.. is an EDT in hex unless the property's parser reads it (states, numbers)
        try:
            from erab.echonet.controller import encode_property

            encode_property(eoj, epc, value)
            return epc, value
        except ValueError:
            try:
                return epc, bytes.fromhex(value[2:])
            except ValueError:
                raise CliError(f"{text!r}: {value!r} is not hexadecimal bytes") from None
    return epc, value


async def _set_async(args: argparse.Namespace) -> int:
    from erab.echonet.controller import encode_property

    host = _host(args.host)
    eoj = _eoj(args.eoj)
    values: dict[int, object] = dict(_parse_assignment(eoj, a) for a in args.assignments)
    for epc, value in values.items():  # check every value before anything is sent
        encode_property(eoj, epc, value)
    request: dict[int | str, object] = dict(values.items())
    async with _controller(args) as ctl:
        if args.no_verify:
            result = await ctl.set(host, eoj, request)
        else:
            result = await ctl.set_and_verify(host, eoj, request)
    data = {
        "host": host,
        "eoj": str(eoj),
        "accepted": [f"0x{e:02X}" for e in result.accepted],
        "rejected": [f"0x{e:02X}" for e in result.rejected],
        "verified": (
            None
            if result.verified is None
            else {f"0x{e:02X}": ok for e, ok in result.verified.items()}
        ),
        "ok": result.ok,
    }
    lines = []
    for epc in values:
        if epc in result.rejected:
            lines.append(f"0x{epc:02X}: refused by the device")
        elif result.verified is not None and not result.verified.get(epc, True):
            lines.append(f"0x{epc:02X}: accepted, but reading it back gave another value")
        else:
            lines.append(f"0x{epc:02X}: set" + (" and verified" if result.verified else ""))
    _emit(args, data, "\n".join(lines))
    return 0 if result.ok else 1


def _get(args: argparse.Namespace) -> int:
    return _run(_get_async(args))


def _set(args: argparse.Namespace) -> int:
    return _run(_set_async(args))


# -- watch ------------------------------------------------------------------------------


async def _watch_async(args: argparse.Namespace) -> int:
    from erab.echonet.controller import decode_property

    if args.queue < 1:
        raise CliError(f"--queue must be at least 1, got {args.queue}")
    if args.count is not None and args.count < 1:
        raise CliError(f"--count must be at least 1, got {args.count}")
    seen = 0
    reported = 0
    async with _controller(args, notification_queue=args.queue) as ctl:
        queue = ctl.subscribe()
        if not args.json:
            bind = ctl.address[0] if ctl.address else _bind(args)
            print(f"watching on {bind}:{args.port} (Ctrl-C stops)", flush=True)
        loop = asyncio.get_running_loop()
        deadline = None if args.duration is None else loop.time() + args.duration
        try:
            while args.count is None or seen < args.count:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    note = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
                seen += 1
                if queue.dropped > reported:
                    _dropped(queue.dropped - reported)
                    reported = queue.dropped
                values = {p.epc: decode_property(note.seoj, p.epc, p.edt) for p in note.props}
                scaled = await ctl.scaled(note.host, note.seoj, values)
                props = {}
                texts = []
                for prop in note.props:
                    entry = _value_entry(
                        note.seoj, prop.epc, values[prop.epc], scaled.get(prop.epc)
                    )
                    props[f"0x{prop.epc:02X}"] = entry
                    texts.append(f"0x{prop.epc:02X} {entry['name']}={entry['text']}")
                data = {
                    "host": note.host,
                    "eoj": str(note.seoj),
                    "esv": note.esv.name,
                    "node": note.node,
                    "properties": props,
                }
                line = f"{note.host} {note.seoj} {note.esv.name} " + ", ".join(texts)
                _emit(args, data, line)
        finally:
            if queue.dropped > reported:
                _dropped(queue.dropped - reported)
    return 0


def _dropped(count: int) -> None:
    print(
        f"erab: warning: {count} notification(s) dropped: they arrived faster than they "
        "were printed (a larger --queue keeps more waiting)",
        file=sys.stderr,
        flush=True,
    )


def _watch(args: argparse.Namespace) -> int:
    return _run(_watch_async(args))
