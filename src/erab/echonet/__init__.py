"""ECHONET Lite (ISO/IEC 14543-4-3): frames, class database, value codecs, node, controller.

Protocol code is sans-IO (:mod:`frame`, :mod:`propmap`, :mod:`codecs`, the cores of
:mod:`node` and :mod:`controller`); only :mod:`transport` touches sockets.

Entry points: :class:`LocalNode` hosting :class:`DeviceObject` s (the device side),
:class:`Controller` (the HEMS side), :func:`decode_frame` / :class:`Frame`, and
:func:`get_class` for the class database.
"""

from erab.echonet.classdb import (
    DeviceClass,
    PropertySpec,
    UnknownClass,
    UnknownProperty,
    all_classes,
    get_class,
    property_spec,
)
from erab.echonet.codecs import (
    Level,
    Special,
    StateInRange,
    ValueCodecError,
    decode_value,
    encode_value,
    to_jsonable,
)
from erab.echonet.controller import (
    Controller,
    NoResponse,
    Notification,
    RemoteNode,
    RemoteObject,
    SetResult,
    UnknownDevice,
)
from erab.echonet.describe import FrameView, describe_frame
from erab.echonet.frame import (
    EOJ,
    ESV,
    NODE_PROFILE,
    Format2Frame,
    Frame,
    FrameError,
    Property,
    decode_frame,
    encode_frame,
    infc_response,
)
from erab.echonet.node import (
    ALL_NODES,
    ECHONET_PORT,
    MULTICAST_V4,
    MULTICAST_V6,
    DeviceObject,
    LocalNode,
    SetRejected,
)
from erab.echonet.propmap import (
    PropertyMapError,
    decode_class_list,
    decode_instance_list,
    decode_property_map,
    encode_class_list,
    encode_instance_list,
    encode_property_map,
)
from erab.echonet.transport import TransportError, check_bindable, random_loopback_address

__all__ = [
    "ALL_NODES",
    "ECHONET_PORT",
    "EOJ",
    "ESV",
    "MULTICAST_V4",
    "MULTICAST_V6",
    "NODE_PROFILE",
    "Controller",
    "DeviceClass",
    "DeviceObject",
    "Format2Frame",
    "Frame",
    "FrameError",
    "FrameView",
    "Level",
    "LocalNode",
    "NoResponse",
    "Notification",
    "Property",
    "PropertyMapError",
    "PropertySpec",
    "RemoteNode",
    "RemoteObject",
    "SetRejected",
    "SetResult",
    "Special",
    "StateInRange",
    "TransportError",
    "UnknownClass",
    "UnknownDevice",
    "UnknownProperty",
    "ValueCodecError",
    "all_classes",
    "check_bindable",
    "decode_class_list",
    "decode_frame",
    "decode_instance_list",
    "decode_property_map",
    "decode_value",
    "describe_frame",
    "encode_class_list",
    "encode_frame",
    "encode_instance_list",
    "encode_property_map",
    "encode_value",
    "get_class",
    "infc_response",
    "property_spec",
    "random_loopback_address",
    "to_jsonable",
]
