"""erab.sim (see ARCHITECTURE.md)."""
