"""erab.meter (see ARCHITECTURE.md)."""
