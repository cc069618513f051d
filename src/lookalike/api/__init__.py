"""The HTTP service and the web page, over the same core ``Library`` the CLI uses.

``app.create_app`` assembles the service: ``deps`` holds what a request is served with (the service's state,
its library once loaded, the API key checks), ``schemas`` the JSON bodies, and ``routes/`` the endpoints, one
router per part of the API; ``problems``, ``limits``, ``metrics`` and ``security`` are the layers around them.
"""

API = "/api/v1"  # the JSON API's prefix (health checks and the API documents are also served outside it)
# the health checks' paths (routes/health.py): open, and answered beyond max_requests (api/server.py)
LIVE_PATHS = ("/healthz/live", "/livez", f"{API}/healthz/live")
READY_PATHS = ("/healthz/ready", "/readyz", "/healthz", f"{API}/healthz/ready", f"{API}/healthz")
