"""erab.security (see ARCHITECTURE.md)."""
