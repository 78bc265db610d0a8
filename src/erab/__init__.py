"""erab: an open implementation of Japan's virtual power plant (ERAB) system.

Folders are roles or protocols (see ARCHITECTURE.md): ``echonet`` (ECHONET Lite),
``devices`` (appliance physics), ``meter`` (smart meters, route A/B), ``security``
(PKI, TLS, signed commands, audit), and higher layers built on them.
"""

__version__ = "0.1.0"
