"""Webhook notifications for OpenADR 3 subscriptions.

A subscription (OpenADR 3.0.1 ``subscription``) lists ``objectOperations``: object types,
operations (CREATE, UPDATE, DELETE) and a ``callbackUrl`` with an optional ``bearerToken``.
When an object of one of those types changes, the VTN POSTs a ``notification``
(``{objectType, operation, object, targets}``) to the callback, with
``Authorization: Bearer <bearerToken>`` when one was given.

Which subscriptions hear of a change is a pure function (:func:`deliveries_for`); sending is
:class:`Notifier`: a bounded queue (a change never waits for a slow subscriber, and a flood
cannot grow memory without limit: past ``max_queue`` a notification is dropped and counted),
a pool of workers, and retries with a doubling back-off for connection errors, timeouts, 429
and 5xx answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from erab.openadr.v3.models import JsonObject, Kind, Operation
from erab.openadr.v3.store import Stored

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """One notification to send: to ``url``, with ``bearer_token`` if any, the JSON ``body``."""

    subscription_id: str
    url: str
    bearer_token: str | None
    body: bytes


def notification(
    kind: Kind, operation: Operation, obj: Mapping[str, Any], api: str = "3.0.1"
) -> JsonObject:
    """The ``notification`` object for a change (its ``targets`` are the object's).  Its
    ``operation`` is the HTTP method in 3.0.1 (POST, PUT, DELETE) and the subscription's
    operation name in 3.1.0 (CREATE, UPDATE, DELETE), as each definition's enum says."""
    return {
        "objectType": kind.value,
        "operation": operation.http_method if api == "3.0.1" else operation.value,
        "object": dict(obj),
        "targets": obj.get("targets"),
    }


def related_program(kind: Kind, obj: Mapping[str, Any]) -> str | None:
    """The program an object belongs to, for a subscription's ``programID``: a program is its
    own, events and reports name theirs; VENs and resources belong to none."""
    if kind is Kind.PROGRAM:
        return str(obj.get("id"))
    if kind in (Kind.EVENT, Kind.REPORT, Kind.SUBSCRIPTION):
        value = obj.get("programID")
        return None if value is None else str(value)
    return None


def deliveries_for(
    subscriptions: Iterable[Stored],
    kind: Kind,
    operation: Operation,
    obj: Mapping[str, Any],
    may_see: Callable[[Stored], bool],
    *,
    api: str = "3.0.1",
    program: str | None = None,
) -> list[Delivery]:
    """The notifications one change causes.  A subscription hears of it when one of its
    ``objectOperations`` names the object's type and the operation, its ``programID`` is the
    object's program (objects of no program, VENs and resources, are not narrowed by it), its
    ``targets`` (if any) share a value with the object's (if any), and
    ``may_see(subscription)`` says its owner may read the object (a VEN hears only of what
    targets it).  In 3.1.0 a subscription's targets are strings matched with AND: it hears
    of objects holding all of them.  ``program`` is the object's program when the caller knows
    it better than the object says (a 3.1.0 report names only its event)."""
    body = json.dumps(notification(kind, operation, obj, api), separators=(",", ":")).encode()
    program = program or related_program(kind, obj)
    overlap = _targets_overlap if api == "3.0.1" else _targets_held
    out: list[Delivery] = []
    for sub in subscriptions:
        wanted_program = sub.body.get("programID")
        if program is not None and wanted_program and wanted_program != program:
            continue
        if not overlap(sub.body.get("targets"), obj.get("targets")):
            continue
        if not may_see(sub):
            continue
        seen: set[str] = set()
        for entry in sub.body.get("objectOperations") or ():
            if kind.value not in entry.get("objects", ()) or operation.value not in entry.get(
                "operations", ()
            ):
                continue
            url = str(entry["callbackUrl"])
            if url in seen:  # one notification per callback per change
                continue
            seen.add(url)
            out.append(Delivery(sub.id, url, entry.get("bearerToken"), body))
    return out


def _targets_overlap(wanted: Any, targets: Any) -> bool:
    """A subscription's ``targets`` narrow its notifications (OpenADR 3 definition: "used by
    server to filter notifications") to objects sharing a value of a type with them; an object
    without targets is for everyone and always passes."""
    if not wanted or not targets:
        return True
    have = {(str(t.get("type")), str(v)) for t in targets for v in t.get("values", ())}
    return any((str(w.get("type")), str(v)) in have for w in wanted for v in w.get("values", ()))


def _targets_held(wanted: Any, targets: Any) -> bool:
    """3.1.0: an object without targets is for everyone; otherwise it must hold every target
    the subscription names."""
    if not wanted or not targets:
        return True
    return set(map(str, wanted)) <= set(map(str, targets))


@dataclass
class NotifierStats:
    submitted: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0
    last_errors: list[str] = field(default_factory=list)


class Notifier:
    """Sends :class:`Delivery` s in the background of the running event loop.

    Started on the first :meth:`submit` (so that it runs in whatever loop serves the app,
    also when mounted inside another app); :meth:`aclose` stops it.
    """

    def __init__(
        self,
        *,
        max_queue: int = 10_000,
        workers: int = 32,
        attempts: int = 4,
        backoff_s: float = 0.25,
        timeout_s: float = 5.0,
    ) -> None:
        self.max_queue = max_queue
        self.workers = workers
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.stats = NotifierStats()
        self._queue: asyncio.Queue[Delivery] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _start(self) -> asyncio.Queue[Delivery]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # a new loop (the app served again, e.g. by a second test client): the old loop's
            # queue, tasks and connections cannot be used from this one
            self._queue, self._tasks, self._session, self._loop = None, [], None, loop
        if self._queue is None:
            self._queue = asyncio.Queue(self.max_queue)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.workers),
            )
            self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]
        return self._queue

    def submit(self, delivery: Delivery) -> bool:
        """Queue one notification; False (and counted as dropped) when the queue is full."""
        queue = self._start()
        self.stats.submitted += 1
        try:
            queue.put_nowait(delivery)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            log.warning(
                "notification queue full (%d): dropped one for %s", self.max_queue, delivery.url
            )
            return False
        return True

    async def drain(self) -> None:
        """Wait until every queued notification has been delivered or given up on."""
        if self._queue is not None:
            await self._queue.join()

    async def aclose(self) -> None:
        """Stop the workers (queued notifications are abandoned) and close connections."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
        self._session, self._queue = None, None

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            delivery = await self._queue.get()
            try:
                await self._send(delivery)
            finally:
                self._queue.task_done()

    async def _send(self, delivery: Delivery) -> None:
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        if delivery.bearer_token:
            headers["Authorization"] = f"Bearer {delivery.bearer_token}"
        reason = ""
        for attempt in range(self.attempts):
            if attempt:
                self.stats.retries += 1
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                async with self._session.post(
                    delivery.url, data=delivery.body, headers=headers
                ) as resp:
                    if resp.status < 300:
                        self.stats.delivered += 1
                        return
                    reason = f"HTTP {resp.status}"
                    if resp.status < 500 and resp.status != 429:
                        break  # the subscriber refuses it: sending again will not help
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
        self.stats.failed += 1
        message = f"subscription {delivery.subscription_id}: {delivery.url}: {reason}"
        self.stats.last_errors = [*self.stats.last_errors[-9:], message]
        log.warning("notification not delivered: %s", message)
