"""Post an email-verified asset event from the partner's backend with requests (docs: event-driven)."""

from __future__ import annotations

import requests


# [START howto_post_event_requests]
def post_email_verified(
    airflow: str, username: str, password: str, user_ids: list[str], host: str = "api.sfox.com"
) -> int:
    """Post one event naming ``user_ids``; return the asset id it was posted to."""
    session = requests.Session()
    token = session.post(
        f"{airflow}/auth/token", json={"username": username, "password": password}, timeout=10
    )
    token.raise_for_status()
    session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    uri = f"sfox://{host}/email-verified"
    found = session.get(f"{airflow}/api/v2/assets", params={"uri_pattern": uri}, timeout=10)
    found.raise_for_status()
    # uri_pattern is a substring match: keep the exact URI only.
    asset_id = next(a["id"] for a in found.json()["assets"] if a["uri"] == uri)
    posted = session.post(
        f"{airflow}/api/v2/assets/events",
        json={"asset_id": asset_id, "extra": {"user_ids": user_ids}},
        timeout=10,
    )
    posted.raise_for_status()
    return int(asset_id)


# [END howto_post_event_requests]
