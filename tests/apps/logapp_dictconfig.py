"""An application that configures logging itself when imported, as Django does:
logging.config closes every handler that exists at that moment."""

import logging.config

logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})

from logapp import app  # noqa: E402,F401
