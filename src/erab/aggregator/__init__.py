"""erab.aggregator (see ARCHITECTURE.md)."""
