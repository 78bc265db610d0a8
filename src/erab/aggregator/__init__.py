"""erab.aggregator: the resource aggregator (RA), see ARCHITECTURE.md and docs/aggregator.md.

- Registry and ingest (docs/aggregator-registry.md): :class:`Registry` of customers, sites,
  gateways, resources and contracts in the store; :class:`Ingest` from the bus's JetStream
  consumer into the store, exactly once per (gateway, sequence).
- The fleet as columns (docs/aggregator.md): :class:`FleetState`, the thermal model
  (:func:`fit_thermal`), :func:`flexibility` and :func:`flexibility_for_window`, and dispatch
  (:func:`merit_order`, :func:`dispatch_lp`) to a :class:`DispatchPlan`.
- Events and commands: :class:`EventBook` of demand-response events (their life as a table),
  :class:`Fanout` of signed envelopes to gateways until acknowledged or expired.
"""

from erab.aggregator.dispatch import (
    DispatchParams,
    DispatchPlan,
    ResourceTerms,
    dispatch_lp,
    merit_order,
)
from erab.aggregator.events import (
    DrEvent,
    EventBook,
    EventError,
    EventRequest,
    EventStage,
    EventTrigger,
    check_request,
)
from erab.aggregator.fanout import CommandStage, Fanout, RaCommand
from erab.aggregator.flexibility import (
    Direction,
    Flexibility,
    FlexParams,
    Forecast,
    SlotLimits,
    WindowFlexibility,
    flexibility,
    flexibility_for_window,
    posix_seconds,
    slot_limits,
)
from erab.aggregator.ingest import CommittedReadings, Ingest, IngestStats, ReadingsHook, to_batch
from erab.aggregator.registry import (
    ImportReport,
    Inventory,
    Registry,
    RegistryError,
    check_resource,
    read_inventory,
)
from erab.aggregator.state import (
    ApplyResult,
    FleetState,
    ReadingFlag,
    ResourceKind,
    TelemetryBatch,
    TelemetryField,
)
from erab.aggregator.thermal import (
    ThermalModel,
    comfort_margin_k,
    curtailment_time_h,
    fit_thermal,
    holding_power_kw,
    max_held_kw,
    rebound_kwh,
    rebound_share,
)

__all__ = [
    "ApplyResult",
    "CommandStage",
    "CommittedReadings",
    "Direction",
    "DispatchParams",
    "DispatchPlan",
    "DrEvent",
    "EventBook",
    "EventError",
    "EventRequest",
    "EventStage",
    "EventTrigger",
    "Fanout",
    "FleetState",
    "FlexParams",
    "Flexibility",
    "Forecast",
    "ImportReport",
    "Ingest",
    "IngestStats",
    "Inventory",
    "RaCommand",
    "ReadingFlag",
    "ReadingsHook",
    "Registry",
    "RegistryError",
    "ResourceKind",
    "ResourceTerms",
    "SlotLimits",
    "TelemetryBatch",
    "TelemetryField",
    "ThermalModel",
    "WindowFlexibility",
    "check_request",
    "check_resource",
    "comfort_margin_k",
    "curtailment_time_h",
    "dispatch_lp",
    "fit_thermal",
    "flexibility",
    "flexibility_for_window",
    "holding_power_kw",
    "max_held_kw",
    "merit_order",
    "posix_seconds",
    "read_inventory",
    "rebound_kwh",
    "rebound_share",
    "slot_limits",
    "to_batch",
]
