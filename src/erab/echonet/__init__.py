"""ECHONET Lite (ISO/IEC 14543-4-3): frames, class database, value codecs, node, controller.

Protocol code here is sans-IO; only the transport module touches sockets.
"""

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

__all__ = [
    "EOJ",
    "ESV",
    "NODE_PROFILE",
    "Format2Frame",
    "Frame",
    "FrameError",
    "Property",
    "PropertyMapError",
    "decode_class_list",
    "decode_frame",
    "decode_instance_list",
    "decode_property_map",
    "encode_class_list",
    "encode_frame",
    "encode_instance_list",
    "encode_property_map",
]
