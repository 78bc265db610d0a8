"""erab.devices (see ARCHITECTURE.md)."""
