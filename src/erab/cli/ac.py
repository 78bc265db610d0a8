"""``erab ac``: the aggregation coordinator's OpenADR 2.0b VTN and its registry of RAs (VENs).

``erab ac serve`` runs the VTN; ``erab ac ven`` and ``erab ac event`` work on the AC's store
(``HOME/ac/ac.sqlite``), which the running VTN reads every half second: the store is the
channel between the commands and the server (docs/openadr.md, "Why the store").
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erab.cli import CliError

if TYPE_CHECKING:
    from erab.openadr import AcEvent, AcStore


def _home(args: argparse.Namespace) -> Path:
    from erab.settings import Settings

    home: Path = args.home if args.home is not None else Settings.from_env().home
    return home


def store_path(home: Path) -> Path:
    return home / "ac" / "ac.sqlite"


def _store(args: argparse.Namespace) -> AcStore:
    from erab.openadr import AcStore

    home = _home(args)
    if not home.is_dir():  # a mistyped --home must not become a new, empty AC
        raise CliError(f"no deployment home at {home} (make one with 'erab pki init --home "
                       f"{home}', or give --home)")  # fmt: skip
    return AcStore(store_path(home))


def register(sub: Any) -> None:
    ac = sub.add_parser("ac", help="the aggregation coordinator: OpenADR 2.0b and 3 VTN, VENs, "
                        "events",
                        description="The aggregation coordinator (AC): an OpenADR 2.0b VTN that "
                        "RAs register with (by certificate fingerprint), events to them, their "
                        "opt answers and reports (docs/openadr.md); the OpenADR 3 REST API "
                        "(3.0.1 and 3.1.0) beside it (docs/openadr3.md).")  # fmt: skip
    acsub = ac.add_subparsers(dest="ac_command", metavar="SUBCOMMAND")
    ac.set_defaults(group_parser=ac)

    def home(p: argparse.ArgumentParser) -> None:
        p.add_argument("--home", type=Path, default=None,
                       help="deployment home (default: $ERAB_HOME or ./erab-data)")

    p = acsub.add_parser("serve", help="run the OpenADR 2.0b VTN (TLS 1.2, client certificates) "
                         "and the OpenADR 3.0.1 and 3.1.0 REST APIs (HTTPS, OAuth2)",
                         description="Serve OpenADR 2.0b (simple HTTP, pull) over TLS 1.2 with "
                         "the home's PKI; VENs in the registry only. Events created with 'erab "
                         "ac event create' are sent within a second. Beside it, the OpenADR "
                         "3 REST API on --openadr3-port for the clients of 'erab ac client "
                         "add': 3.0.1 at /, 3.1.0 at /openadr3/3.1.0.")  # fmt: skip
    home(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="TLS port (default 8443)")
    p.add_argument("--vtn-id", default="ERAB-AC",
                   help="this VTN's vtnID (default ERAB-AC; not all lower case)")
    p.add_argument("--poll-interval", type=float, default=10.0, metavar="SECONDS",
                   help="how often VENs are asked to poll (default 10)")
    p.add_argument("--report-interval", type=float, default=10.0, metavar="SECONDS",
                   help="granularity asked of VEN reports (default 10)")
    p.add_argument("--require-signatures", action="store_true",
                   help="refuse messages without an XML signature")
    p.add_argument("--sign", action="store_true",
                   help="sign outgoing messages with the VTN's certificate")
    p.add_argument("--trust", type=Path, action="append", default=[], metavar="CA_FILE",
                   help="also accept VEN certificates issued by this CA (repeatable)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--openadr3-port", type=int, default=8093, metavar="PORT",
                   help="also serve the OpenADR 3 REST API over HTTPS on this port, same host "
                   "(3.0.1 at /, 3.1.0 at /openadr3/3.1.0; default 8093; 0: not served). "
                   "Clients: 'erab ac client add'")
    p.add_argument("--json", action="store_true", help="print status lines as JSON")
    p.set_defaults(handler=cmd_serve)

    cl = acsub.add_parser("client", help="OpenADR 3 OAuth2 clients: business logic and VENs",
                          description="Clients of the OpenADR 3 REST API (client credentials "
                          "grant at /auth/token). docs/openadr3.md.")  # fmt: skip
    csub = cl.add_subparsers(dest="ac_client_command", metavar="SUBCOMMAND")
    cl.set_defaults(group_parser=cl)
    p = csub.add_parser("add", help="register a client and print its secret (shown once)")
    p.add_argument("client_id", help="the client's id (1-128 characters)")
    p.add_argument("--role", choices=("bl", "ven"), required=True,
                   help="bl: business logic (programs, events); ven: a VEN client")
    p.add_argument("--ven-name", default=None,
                   help="with --role ven: the venName the client acts for")
    home(p)
    p.set_defaults(handler=cmd_client)
    p = csub.add_parser("list", help="the registered clients and their roles")
    home(p)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(handler=cmd_client)
    p = csub.add_parser("remove", help="remove a client: its tokens stop working at once")
    p.add_argument("client_id", help="the client's id")
    home(p)
    p.set_defaults(handler=cmd_client)

    ven = acsub.add_parser("ven", help="the registry of VENs (RAs), by certificate fingerprint")
    vsub = ven.add_subparsers(dest="ac_ven_command", metavar="SUBCOMMAND")
    ven.set_defaults(group_parser=ven)
    p = vsub.add_parser("add", help="allow a VEN: its id and its certificate's fingerprint")
    p.add_argument("ven_id", help="the venID the VEN will be given (e.g. ra-tokyo-1)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--cert", type=Path, help="the VEN's certificate (PEM)")
    how.add_argument("--fingerprint", help="its SHA-256 fingerprint (64 hex digits)")
    how.add_argument("--issue", action="store_true",
                     help="issue the VEN a certificate from this home's CA (into --out-dir)")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="with --issue: where to write VEN_ID.pem, VEN_ID.key.pem, ca-bundle.pem")
    home(p)
    p.set_defaults(handler=cmd_ven)
    p = vsub.add_parser("list", help="the VENs, their registration and last contact")
    home(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_ven)
    p = vsub.add_parser("remove", help="remove a VEN: its certificate is refused from now on")
    p.add_argument("ven_id", help="the VEN's id")
    home(p)
    p.set_defaults(handler=cmd_ven)

    ev = acsub.add_parser("event", help="events to VENs: create, list, show, modify, cancel")
    esub = ev.add_subparsers(dest="ac_event_command", metavar="SUBCOMMAND")
    ev.set_defaults(group_parser=ev)
    p = esub.add_parser("create", help="an event for one VEN, or every line of an award file")
    p.add_argument("--ven", help="the VEN's id")
    p.add_argument("--kw", type=float, help="target kW (LOAD_DISPATCH delta): negative reduces "
                   "the RA's demand, positive raises it")  # fmt: skip
    p.add_argument("--level", type=int, choices=(0, 1, 2, 3),
                   help="send a SIMPLE level instead of kW")
    p.add_argument("--start", default="now", help="HH:MM (JST, today), now, or ISO 8601")
    p.add_argument("--duration", default="1h", help="e.g. 3h, 90m, 1h30m (default 1h)")
    p.add_argument("--ramp-up", default="0", help="ramp-up period before the start (e.g. 5m)")
    p.add_argument("--randomise", default="0",
                   help="start-after tolerance: each VEN starts at random within it (e.g. 2m)")
    p.add_argument("--award", type=Path, help="a market award file (.csv or .toml) instead")
    p.add_argument("--json", action="store_true", help="print JSON")
    home(p)
    p.set_defaults(handler=cmd_event)
    p = esub.add_parser("list", help="events with each VEN's answer and delivery")
    home(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_event)
    p = esub.add_parser("show", help="one event: the VEN's answer, reports and delivery")
    p.add_argument("event_id", help="the event's id")
    home(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_event)
    p = esub.add_parser("modify", help="change an event's kW, level, start or duration (a new "
                        "version: the VEN gets it at its next poll and answers again)",
                        description="Modify an OpenADR 2.0b event: its modificationNumber goes "
                        "up by one, the VEN's earlier answer is cleared, and the VTN sends the "
                        "new version at the VEN's next poll. (OpenADR 3 events are modified by "
                        "their business logic client with PUT /events/{eventID}, which notifies "
                        "subscribers.)")  # fmt: skip
    p.add_argument("event_id", help="the event's id")
    p.add_argument("--kw", type=float, help="new target kW (a LOAD_DISPATCH event)")
    p.add_argument("--level", type=int, choices=(0, 1, 2, 3),
                   help="new SIMPLE level (a SIMPLE event)")
    p.add_argument("--start", help="new start: HH:MM (JST, today), now, or ISO 8601")
    p.add_argument("--duration", help="new duration, e.g. 3h, 90m, 1h30m")
    p.add_argument("--json", action="store_true", help="print JSON")
    home(p)
    p.set_defaults(handler=cmd_event)
    p = esub.add_parser("cancel", help="cancel an event (the VEN is told at its next poll)")
    p.add_argument("event_id", help="the event's id")
    home(p)
    p.set_defaults(handler=cmd_event)


# -- ven ------------------------------------------------------------------------------------
def openadr3_dir(home: Path) -> Path:
    """Where the OpenADR 3 VTN keeps its objects, clients and token key."""
    return home / "ac" / "openadr3"


def cmd_client(args: argparse.Namespace) -> int:
    import os

    from erab.openadr.v3.auth import ClientRegistry, Role
    from erab.openadr.v3.store import ObjectStore

    home = _home(args)
    if not home.is_dir():
        raise CliError(f"no deployment home at {home} (make one with 'erab pki init --home "
                       f"{home}', or give --home)")  # fmt: skip
    folder = openadr3_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)  # the store holds the clients' secret hashes
    try:
        store = ObjectStore(folder / "openadr3.sqlite")
    finally:
        os.umask(old)
    try:
        registry = ClientRegistry(store)
        command = args.ac_client_command
        if command == "add":
            if args.role == "ven" and not args.ven_name:
                raise CliError("--role ven needs --ven-name (the VEN the client acts for)")
            if args.role == "bl" and args.ven_name:
                raise CliError("--ven-name is for --role ven only")
            secret = registry.register(args.client_id, Role(args.role), ven_name=args.ven_name)
            print(f"client {args.client_id} ({args.role}) registered; its secret, shown once:")
            print(secret)
            audit = audit_hook(home)
            if audit is not None:
                audit("openadr3_client_added", args.client_id,
                      {"role": args.role, "ven_name": args.ven_name})  # fmt: skip
        elif command == "list":
            rows = [{"client_id": r.client_id, "role": r.role, "ven_name": r.ven_name}
                    for r in store.clients()]  # fmt: skip
            if args.json:
                print(json.dumps(rows))
            elif not rows:
                print("no clients (add one with 'erab ac client add ID --role bl|ven')")
            else:
                for r in rows:
                    print(f"{r['client_id']}  {r['role']}  {r['ven_name'] or ''}".rstrip())
        elif command == "remove":
            if not registry.remove(args.client_id):
                known = ", ".join(r.client_id for r in store.clients()) or "none"
                raise CliError(f"no client {args.client_id!r} (clients: {known})")
            print(f"client {args.client_id} removed")
            audit = audit_hook(home)
            if audit is not None:
                audit("openadr3_client_removed", args.client_id, {})
        else:
            args.group_parser.print_help()
            return 2
    finally:
        store.close()
    return 0


def cmd_ven(args: argparse.Namespace) -> int:
    from erab.openadr import AcStoreError, fingerprint_of_file
    from erab.openadr.security import normalise_fingerprint

    command = args.ac_ven_command
    store = _store(args)
    try:
        if command == "add":
            try:
                if args.issue:
                    fingerprint = _issue_ven(args)
                elif args.cert is not None:
                    fingerprint = fingerprint_of_file(args.cert)
                else:
                    fingerprint = normalise_fingerprint(args.fingerprint)
                ven = store.add_ven(args.ven_id, fingerprint)
            except (AcStoreError, ValueError) as exc:
                raise CliError(str(exc)) from None
            _audit(_home(args), "openadr_ven_added", f"ven:{ven.ven_id}",
                   {"fingerprint": ven.fingerprint})  # fmt: skip
            print(f"VEN {ven.ven_id} added, certificate SHA-256 {ven.fingerprint}")
        elif command == "remove":
            try:
                ven = store.remove_ven(args.ven_id)
            except AcStoreError as exc:
                raise CliError(str(exc)) from None
            _audit(_home(args), "openadr_ven_removed", f"ven:{ven.ven_id}",
                   {"fingerprint": ven.fingerprint})  # fmt: skip
            print(f"VEN {ven.ven_id} removed: its certificate is refused from now on")
        else:
            vens = store.vens()
            if args.json:
                print(json.dumps([v.__dict__ for v in vens], indent=2))
            for v in [] if args.json else vens:
                state = f"registered {v.registered_at}" if v.registration_id else "not registered"
                print(f"{v.ven_id}  {v.fingerprint[:16]}…  {state}  last seen "
                      f"{v.last_seen or 'never'}")  # fmt: skip
            if not vens and not args.json:
                print("no VENs yet ('erab ac ven add')")
    finally:
        store.close()
    return 0


def _issue_ven(args: argparse.Namespace) -> str:
    """A client certificate for the VEN from this home's CA; its fingerprint."""
    from erab.clock import RealClock
    from erab.openadr import fingerprint_of_pem
    from erab.security import CertificateAuthority, PkiError, SecurityHome
    from erab.security._common import atomic_write
    from erab.security.pki import certificate_pem, private_key_pem

    if args.out_dir is None:
        raise CliError("--issue needs --out-dir for the VEN's key and certificate")
    security = SecurityHome(_home(args))
    try:
        ca = CertificateAuthority.open(security, RealClock())
        issued = ca.issue_service_client(args.ven_id)
    except PkiError as exc:
        raise CliError(str(exc)) from None
    args.out_dir.mkdir(parents=True, exist_ok=True)
    pem = certificate_pem(issued.certificate)
    atomic_write(args.out_dir / f"{args.ven_id}.pem", pem)
    atomic_write(args.out_dir / f"{args.ven_id}.key.pem", private_key_pem(issued.private_key),
                 private=True)  # fmt: skip
    atomic_write(args.out_dir / "ca-bundle.pem", security.ca_bundle.read_bytes())
    print(f"issued {args.out_dir / (args.ven_id + '.pem')} (key beside it) and the VTN's CA "
          f"bundle {args.out_dir / 'ca-bundle.pem'}")  # fmt: skip
    return fingerprint_of_pem(pem)


# -- event ----------------------------------------------------------------------------------
def _event_dict(store: AcStore, e: AcEvent) -> dict[str, Any]:
    return {"event_id": e.event_id, "ven": e.ven_id, "signal": e.signal, "level": e.level,
            "target_kw": e.target_kw, "start": e.start.isoformat(timespec="seconds"),
            "end": e.end.isoformat(timespec="seconds"),
            "ramp_up_s": e.ramp_up_s, "randomise_s": e.randomise_s, "state": e.state,
            "modification": e.modification, "source": e.source, "award_id": e.award_id,
            "distributed_at": e.distributed_at, "opt": e.opt, "opt_detail": e.opt_detail,
            "responded_at": e.responded_at, "delivery": store.delivery(e)}  # fmt: skip


def _line(d: dict[str, Any]) -> str:
    what = f"level {d['level']}" if d["signal"] == "SIMPLE" else f"{d['target_kw']:+g} kW"
    delivery = d["delivery"]
    delivered = "" if delivery["delivered_kw"] is None else (
        f"  delivered {delivery['delivered_kw']:+g} kW ({delivery['ratio']:.0%})"
        if delivery["ratio"] is not None else f"  delivered {delivery['delivered_kw']:+g} kW")
    opt = d["opt"] or ("sent, no answer yet" if d["distributed_at"] else "not yet polled")
    why = f" ({d['opt_detail']})" if d["opt"] == "optOut" and d["opt_detail"] else ""
    version = f"  (modification {d['modification']})" if d["modification"] else ""
    return (f"{d['event_id']}  {d['ven']:<12} {d['state']:<10} {what}  {d['start']} – "
            f"{d['end']}  {opt}{why}{delivered}{version}")


def cmd_event(args: argparse.Namespace) -> int:
    from erab.openadr import AcStoreError
    from erab.openadr.award import AwardError

    command = args.ac_event_command
    store = _store(args)
    try:
        if command == "create":
            try:
                events = _create(args, store)
            except (AcStoreError, AwardError, ValueError) as exc:
                raise CliError(str(exc)) from None
            out = [_event_dict(store, e) for e in events]
            for e in events:
                _audit(_home(args), "openadr_event_created", f"event:{e.event_id}",
                       {"ven": e.ven_id, "target_kw": e.target_kw, "level": e.level,
                        "start": e.start.isoformat(), "source": e.source})  # fmt: skip
        elif command == "modify":
            from erab.cli.ra_event import parse_duration, parse_start
            from erab.clock import JST

            try:
                before = store.event(args.event_id)
                event = store.modify_event(
                    args.event_id, target_kw=args.kw, level=args.level,
                    start=None if args.start is None
                    else parse_start(args.start, datetime.now(JST)),
                    duration=None if args.duration is None else parse_duration(args.duration))
            except (AcStoreError, ValueError) as exc:
                raise CliError(str(exc)) from None
            changed = {k: [old, new] for k, old, new in (
                ("target_kw", before.target_kw, event.target_kw),
                ("level", before.level, event.level),
                ("start", before.start.isoformat(), event.start.isoformat()),
                ("duration_s", before.duration.total_seconds(),
                 event.duration.total_seconds())) if old != new}
            _audit(_home(args), "openadr_event_modified", f"event:{event.event_id}",
                   {"ven": event.ven_id, "modification": event.modification,
                    "changed": changed})
            out = [_event_dict(store, event)]
        elif command == "cancel":
            try:
                event = store.advance(args.event_id, "cancel")
            except AcStoreError as exc:
                raise CliError(str(exc)) from None
            _audit(_home(args), "openadr_event_cancelled", f"event:{event.event_id}",
                   {"ven": event.ven_id})  # fmt: skip
            out = [_event_dict(store, event)]
        elif command == "show":
            try:
                event = store.event(args.event_id)
            except AcStoreError as exc:
                raise CliError(str(exc)) from None
            d = _event_dict(store, event)
            d["reports"] = [{"r_id": r, "at": at.isoformat(), "value": v}
                            for r, at, v in store.reports(event.ven_id)
                            if event.start - timedelta(minutes=15) <= at < event.end][-60:]
            if args.json:
                print(json.dumps(d, indent=2))
            else:
                print(_line(d))
                for r in d["reports"][-12:]:
                    print(f"  {r['at']}  {r['r_id']:<9} {r['value']:g} kW")
            return 0
        else:
            out = [_event_dict(store, e) for e in store.events()]
    finally:
        store.close()
    if getattr(args, "json", False):
        print(json.dumps(out, indent=2))
    else:
        print("\n".join(_line(d) for d in out) or "no events yet ('erab ac event create')")
    return 0


def _create(args: argparse.Namespace, store: AcStore) -> list[AcEvent]:
    from erab.cli.ra_event import parse_duration, parse_start
    from erab.clock import JST
    from erab.openadr import AcStoreError
    from erab.openadr.award import read_award

    if args.award is not None:
        if args.ven or args.kw is not None or args.level is not None:
            raise CliError("give either --award FILE or --ven with --kw/--level, not both")
        award_id, lines = read_award(args.award)
        known = {v.ven_id for v in store.vens()}
        unknown = sorted({line.ven for line in lines} - known)
        if unknown:  # check all before creating any: a bad file creates nothing
            raise AcStoreError(f"{args.award.name}: VEN(s) {', '.join(unknown)} not in the "
                               "registry ('erab ac ven add')")  # fmt: skip
        return [store.create_event(
            line.ven, line.kw, line.start, line.duration,
            signal="SIMPLE" if line.level is not None else "LOAD_DISPATCH", level=line.level,
            ramp_up_s=line.ramp_up.total_seconds(), randomise_s=line.randomise.total_seconds(),
            source=f"award:{args.award.name}", award_id=award_id) for line in lines]  # fmt: skip
    if not args.ven or (args.kw is None and args.level is None):
        raise CliError("give --ven and --kw (or --level), or --award FILE")
    start = parse_start(args.start, datetime.now(JST))
    duration = parse_duration(args.duration)
    ramp = parse_duration(args.ramp_up) if args.ramp_up != "0" else timedelta(0)
    randomise = parse_duration(args.randomise) if args.randomise != "0" else timedelta(0)
    simple = args.level is not None
    return [store.create_event(args.ven, 0.0 if simple else args.kw, start, duration,
                               signal="SIMPLE" if simple else "LOAD_DISPATCH", level=args.level,
                               ramp_up_s=ramp.total_seconds(),
                               randomise_s=randomise.total_seconds(), source="cli")]  # fmt: skip


# -- audit ----------------------------------------------------------------------------------
def audit_hook(home: Path) -> Any:
    """The deployment's audit log as the openadr package's hook (what, subject, details)."""
    from erab.clock import RealClock
    from erab.security import AuditKind, AuditLog, SecurityHome

    security = SecurityHome(home)
    if not security.dir.is_dir():
        return None
    log = AuditLog.for_home(security, RealClock())

    def hook(what: str, subject: str, details: dict[str, Any]) -> None:
        kind = AuditKind.SECURITY_EVENT if what in ("openadr_refused", "openadr_registered",
                                                    "openadr_ven_added", "openadr_ven_removed") \
            else AuditKind.COMMAND  # fmt: skip
        log.append(kind, "openadr", subject, {"event": what, **details})

    return hook


def _audit(home: Path, what: str, subject: str, details: dict[str, Any]) -> None:
    hook = audit_hook(home)
    if hook is not None:
        hook(what, subject, details)


# -- serve ----------------------------------------------------------------------------------
def server_identity(home: Path, host: str) -> tuple[Path, Path]:
    """The VTN's TLS certificate and key (``HOME/ac/vtn.pem``), issued from the home's CA for
    ``host`` the first time."""
    import ipaddress

    from erab.clock import RealClock
    from erab.security import CertificateAuthority, PkiError, SecurityHome
    from erab.security._common import atomic_write
    from erab.security.pki import certificate_pem, private_key_pem

    cert, key = home / "ac" / "vtn.pem", home / "ac" / "vtn.key.pem"
    if cert.is_file() and key.is_file():
        return cert, key
    try:
        ca = CertificateAuthority.open(SecurityHome(home), RealClock())
    except PkiError as exc:
        raise CliError(f"{exc} (the VTN's certificate comes from the home's CA)") from None
    try:
        ips, dns = [str(ipaddress.ip_address(host))], []
    except ValueError:
        ips, dns = [], [host]
    issued = ca.issue_server(dns, ips)
    cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(cert, certificate_pem(issued.certificate))
    atomic_write(key, private_key_pem(issued.private_key), private=True)
    _audit(home, "openadr_vtn_certificate", f"vtn:{host}",
           {"serial": format(issued.certificate.serial_number, "x")})
    return cert, key


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    import ssl

    from erab.openadr import VtnConfig, build_vtn, hold_to_tls12, run_vtn
    from erab.openadr.v3 import PREFIX_3_1
    from erab.security import SecurityHome, TlsProfile
    from erab.security.tls import server_context

    home = _home(args)
    if args.duration is not None and args.duration <= 0:
        raise CliError(f"--duration must be more than 0 seconds, got {args.duration:g}")
    if not 0 < args.port < 65536:
        raise CliError(f"--port {args.port} is not a TCP port")
    if args.poll_interval <= 0 or args.report_interval <= 0:
        raise CliError("--poll-interval and --report-interval must be more than 0 seconds")
    if not 0 <= args.openadr3_port < 65536 or args.openadr3_port == args.port:
        raise CliError(f"--openadr3-port {args.openadr3_port}: a TCP port other than --port, "
                       "or 0 to serve no OpenADR 3")  # fmt: skip
    if args.vtn_id.islower():
        raise CliError(f"--vtn-id {args.vtn_id!r}: openleadr VENs refuse an all-lower-case "
                       "vtnID; use e.g. ERAB-AC")  # fmt: skip
    cert, key = server_identity(home, args.host)
    security = SecurityHome(home)
    try:
        context = hold_to_tls12(server_context(cert, key, security.ca_bundle,
                                               profile=TlsProfile.OPENADR_TLS12))  # fmt: skip
        for extra in args.trust:
            context.load_verify_locations(cafile=str(extra))
    except (ssl.SSLError, OSError) as exc:
        raise CliError(f"cannot set up TLS: {exc}") from None
    config = VtnConfig(vtn_id=args.vtn_id, host=args.host, port=args.port,
                       poll_interval_s=args.poll_interval, report_interval_s=args.report_interval,
                       require_signatures=args.require_signatures,
                       sign_cert=str(cert) if args.sign else None,
                       sign_key=str(key) if args.sign else None)  # fmt: skip
    store = _store(args)
    vtn = build_vtn(store, config, context, audit=audit_hook(home))

    def status() -> None:
        vens = store.vens()
        states: dict[str, int] = {}
        for e in store.events():
            states[e.state] = states.get(e.state, 0) + 1
        line = {"vens": len(vens), "registered": sum(1 for v in vens if v.registration_id),
                "events": states, "refused": dict(vtn.refusals)}  # fmt: skip
        if args.json:
            print(json.dumps(line), flush=True)
        else:
            print(", ".join(f"{k} {v}" for k, v in line.items()), file=sys.stderr, flush=True)

    v3_app = None
    if args.openadr3_port:
        import socket

        from erab.openadr.v3.serve import app_for_home

        try:  # say so now rather than after the 2.0b VTN has started
            with socket.socket() as probe:
                probe.bind((args.host, args.openadr3_port))
        except OSError as exc:
            raise CliError(f"cannot listen on {args.host}:{args.openadr3_port} for OpenADR 3: "
                           f"{exc.strerror or exc} (--openadr3-port, or 0 for none)") from None

        audit = audit_hook(home)

        def changed(change: Any) -> None:
            if audit is not None:
                audit("openadr3_change", change.client_id,
                      {"kind": str(change.kind), "operation": str(change.operation),
                       "id": change.object_id, "api": change.api})  # fmt: skip

        import os

        old = os.umask(0o077)
        try:
            v3_app = app_for_home(openadr3_dir(home), on_change=changed)
        finally:
            os.umask(old)

    async def serve_v3(stop: asyncio.Event) -> None:
        import uvicorn

        assert v3_app is not None
        config = uvicorn.Config(v3_app, host=args.host, port=args.openadr3_port,
                                ssl_certfile=str(cert), ssl_keyfile=str(key),
                                log_level="warning", lifespan="off")  # fmt: skip
        # uvicorn takes SIGINT/SIGTERM while it serves and gives them back when it stops;
        # the loop below then sees this task done and stops the 2.0b VTN too
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            await asyncio.wait([serving, asyncio.create_task(stop.wait())],
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if serving.done() and not server.started:
                raise OSError(f"the OpenADR 3 port {args.openadr3_port} could not be bound")
        finally:
            server.should_exit = True
            await asyncio.gather(serving, return_exceptions=True)
            await v3_app.state.notifier.aclose()
        if serving.done() and not serving.cancelled() and serving.exception() is not None:
            raise serving.exception()  # type: ignore[misc]

    async def main() -> None:
        stop, ready = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        task = asyncio.create_task(run_vtn(vtn, stop, ready=ready))
        v3_task = asyncio.create_task(serve_v3(stop)) if v3_app is not None else None
        began = loop.time()
        try:
            await asyncio.wait([task, asyncio.create_task(ready.wait())],
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if ready.is_set():
                print(f"OpenADR 2.0b VTN {config.vtn_id} on {config.url} (TLS 1.2, client "
                      "certificates)", file=sys.stderr, flush=True)  # fmt: skip
                if v3_task is not None:
                    base = f"https://{args.host}:{args.openadr3_port}"
                    print(f"OpenADR 3.0.1 VTN on {base}/, 3.1.0 on {base}{PREFIX_3_1} "
                          "(OAuth2 client credentials at auth/token)", file=sys.stderr,
                          flush=True)  # fmt: skip
            while not stop.is_set() and not task.done() and not (v3_task and v3_task.done()):
                left = None if args.duration is None else args.duration - (loop.time() - began)
                await asyncio.wait([task], timeout=min(10.0, left) if left is not None else 10.0)
                status()
                if left is not None and loop.time() - began >= args.duration:
                    stop.set()
        finally:
            stop.set()
            await asyncio.gather(task, *([v3_task] if v3_task else []), return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise CliError(f"the VTN stopped: {task.exception()}")
        if v3_task is not None and not v3_task.cancelled() and v3_task.exception() is not None:
            raise CliError(f"the OpenADR 3 VTN stopped: {v3_task.exception()}")

    try:
        asyncio.run(main())
    finally:
        store.close()
    return 0


# -- the RA's VEN, for `erab ra serve --vtn URL` ----------------------------------------------
def add_ven_flags(p: argparse.ArgumentParser) -> None:
    """The VEN's options on ``erab ra serve``."""
    p.add_argument("--vtn", default=None, metavar="URL",
                   help="join this OpenADR 2.0b VTN as a VEN, e.g. "
                   "https://127.0.0.1:8443/OpenADR2/Simple/2.0b (docs/openadr.md)")  # fmt: skip
    p.add_argument("--ven-name", default="erab-ra", help="the VEN's name (default erab-ra)")
    p.add_argument("--ven-cert", type=Path, default=None,
                   help="the VEN's certificate (default: issued from the home's CA into "
                   "HOME/openadr/)")  # fmt: skip
    p.add_argument("--ven-key", type=Path, default=None, help="the VEN certificate's key")
    p.add_argument("--vtn-ca", type=Path, default=None,
                   help="CA bundle the VTN's certificate is checked against (default: the "
                   "home's)")  # fmt: skip
    p.add_argument("--simple-levels", default="", metavar="LEVEL=KW,...",
                   help="kW for SIMPLE levels, e.g. 1=-50,2=-100,3=-200 (negative reduces)")
    p.add_argument("--vtn-fingerprint", default=None, metavar="SHA256",
                   help="verify the VTN's XML signatures: its certificate's SHA-256 "
                   "fingerprint (unsigned or other answers are then ignored)")  # fmt: skip


def start_ven(ra: Any, args: argparse.Namespace, home: Path, stop: Any) -> Any:
    """Start the VEN beside a running RA service; the task runs until ``stop`` is set."""
    import asyncio
    import ssl

    from erab.openadr import ErabVen, RaBackend, SignalMapping, VenConfig, hold_to_tls12
    from erab.openadr.mapping import MappingError
    from erab.security import SecurityHome, TlsProfile
    from erab.security.tls import client_context

    if not str(args.vtn).startswith("https://"):
        raise CliError(f"--vtn {args.vtn!r}: give the VTN's https:// URL (2.0b needs TLS)")
    if (args.ven_cert is None) != (args.ven_key is None):
        raise CliError("give both --ven-cert and --ven-key, or neither")
    try:
        mapping = SignalMapping.parse_levels(args.simple_levels)
    except MappingError as exc:
        raise CliError(f"--simple-levels: {exc}") from None
    vtn_fingerprint = None
    if args.vtn_fingerprint:
        from erab.openadr.security import normalise_fingerprint, short_fingerprint

        try:
            vtn_fingerprint = short_fingerprint(normalise_fingerprint(args.vtn_fingerprint))
        except ValueError as exc:
            raise CliError(f"--vtn-fingerprint: {exc}") from None
    security = SecurityHome(home)
    cert, key = args.ven_cert, args.ven_key
    if cert is None:
        cert, key = _own_ven_identity(home, args.ven_name)
    ca_file = args.vtn_ca or security.ca_bundle
    try:
        context = hold_to_tls12(client_context(ca_file, cert_file=cert, key_file=key,
                                               profile=TlsProfile.OPENADR_TLS12))  # fmt: skip
    except (ssl.SSLError, OSError) as exc:
        raise CliError(f"cannot set up the VEN's TLS: {exc}") from None
    ven = ErabVen(VenConfig(vtn_url=args.vtn, ven_name=args.ven_name, cert=str(cert),
                            key=str(key), ca_file=str(ca_file), ssl_context=context,
                            vtn_fingerprint=vtn_fingerprint, mapping=mapping),
                  RaBackend(ra), audit=audit_hook(home))  # fmt: skip
    print(f"VEN {args.ven_name} joining {args.vtn}", file=sys.stderr, flush=True)
    return asyncio.create_task(ven.run(stop))


def _own_ven_identity(home: Path, name: str) -> tuple[Path, Path]:
    from erab.clock import RealClock
    from erab.security import CertificateAuthority, PkiError, SecurityHome
    from erab.security._common import atomic_write
    from erab.security.pki import certificate_pem, private_key_pem

    cert, key = home / "openadr" / "ven.pem", home / "openadr" / "ven.key.pem"
    if cert.is_file() and key.is_file():
        return cert, key
    try:
        issued = CertificateAuthority.open(SecurityHome(home), RealClock()) \
            .issue_service_client(name)  # fmt: skip
    except PkiError as exc:
        raise CliError(f"{exc} (or give --ven-cert and --ven-key)") from None
    cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(cert, certificate_pem(issued.certificate))
    atomic_write(key, private_key_pem(issued.private_key), private=True)
    print(f"VEN certificate {cert}: give the VTN's operator its fingerprint "
          f"(erab ac ven add NAME --cert {cert})", file=sys.stderr)  # fmt: skip
    return cert, key
