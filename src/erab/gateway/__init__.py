"""erab.gateway (see ARCHITECTURE.md)."""
