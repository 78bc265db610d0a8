"""erab.bus (see ARCHITECTURE.md)."""
