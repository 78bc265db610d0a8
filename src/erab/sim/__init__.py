"""Scenarios put together: a town of emulated homes and stores with its meters' past,
ready to be served (see ARCHITECTURE.md: ``sim`` may import every other folder)."""

from erab.sim.emulation import Emulation, StageProgress, build_emulation, check_site_addresses

__all__ = ["Emulation", "StageProgress", "build_emulation", "check_site_addresses"]
