"""Names and passwords of the test users, and a signed-in httpx client."""

from __future__ import annotations

import re

import httpx

PASSWORDS = {"ada": "admin-pass-1", "rita": "reviewer-pass-1", "vic": "viewer-pass-1"}
ROLES = {"ada": "admin", "rita": "reviewer", "vic": "viewer"}


def login_token(client: httpx.Client) -> dict[str, str]:
    """The sign-in form's CSRF field (the matching cookie stays in ``client``)."""
    page = client.get("/login")
    return {"csrf": re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)}


def signed_in(url: str, name: str) -> tuple[httpx.Client, str]:
    """A client holding ``name``'s session cookie, and the session's CSRF token."""
    client = httpx.Client(base_url=url, timeout=30, follow_redirects=False)
    r = client.post(
        "/login",
        data={"username": name, "password": PASSWORDS[name], "next": "/models", **login_token(client)},
    )
    assert r.status_code == 303, r.text
    page = client.get("/models")
    assert page.status_code == 200
    token = re.search(r'"X-CSRF-Token": "([0-9a-f]+)"', page.text).group(1)
    return client, token
