"""prefork: a pre-fork WSGI HTTP server and process supervisor."""

__version__ = "0.1.0"
SERVER_SOFTWARE = f"prefork/{__version__}"
