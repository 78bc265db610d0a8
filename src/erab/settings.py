"""One typed settings object, read from the environment (``ERAB_*``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Deployment settings.

    ``home`` holds erab's state for the embedded default (CA, SQLite files, audit log).
    """

    home: Path
    database_url: str

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        home = Path(env.get("ERAB_HOME", "erab-data")).expanduser()
        database_url = env.get("ERAB_DATABASE_URL", f"sqlite:///{home / 'erab.sqlite'}")
        return cls(home=home, database_url=database_url)
