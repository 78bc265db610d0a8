"""erab.openadr (see ARCHITECTURE.md)."""
