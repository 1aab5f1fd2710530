"""The recipient page and operator view served by the daemon (starlette + uvicorn in its event loop)."""

from reauthd.web.app import WebStore, create_app, site_links
from reauthd.web.security import RateLimiter, RateLimits
from reauthd.web.server import WebServer, serve

__all__ = ["RateLimiter", "RateLimits", "WebServer", "WebStore", "create_app", "serve", "site_links"]
