"""Logging set-up for gridwatch processes."""

from __future__ import annotations

import logging


def setup_logging(level: str = "INFO") -> None:
    """Plain, greppable lines on stderr."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("httpx", "uvicorn.access", "apprise", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
