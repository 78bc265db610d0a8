"""erab.store (see ARCHITECTURE.md)."""
