"""The web console: review, people, models, fleet and events pages for signed-in users.

Mounted at ``/`` on the model server's FastAPI app (``facefleet serve``); the device API
stays under ``/v1`` with its bearer tokens. Pages are rendered on the server (Jinja2) with
htmx (shipped in ``static/``, no CDN) for in-place updates. Every action calls the library
function the CLI calls: ``facefleet.curate`` (clusters, labels), ``facefleet.enrol``,
``facefleet.registry.versions`` and ``facefleet.fleet``.
"""

from __future__ import annotations

from typing import Any


def mount(app: Any, ws: Any) -> None:
    """Add the console's routes, middleware and static files to ``app``."""
    from facefleet.web.console.app import install

    install(app, ws)
