"""erab.web (see ARCHITECTURE.md)."""
