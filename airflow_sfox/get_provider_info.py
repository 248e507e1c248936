"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_sfox import __version__

#: Connection extras the hook reads, as Airflow 3.2+ ``conn-fields`` (JSON schema per field).
#: The ``default`` of each schema is also the default the hook applies: one source of truth.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "timeout": {
        "label": "Read timeout (seconds)",
        "description": "How long to wait for sFOX to answer one request.",
        "schema": {"type": ["number", "null"], "minimum": 0.1, "default": 30},
    },
    "connect_timeout": {
        "label": "Connect timeout (seconds)",
        "description": "How long to wait for a TCP/TLS connection to sFOX.",
        "schema": {"type": ["number", "null"], "minimum": 0.1, "default": 10},
    },
    "requests_per_second": {
        "label": "Request budget (requests/second)",
        "description": (
            "Client-side pace shared by every request of one hook, all threads together. "
            "sFOX allows 250 requests per 10 s per IP and then blocks for 60 s; keep the sum over "
            "all concurrent hooks under 25. 0 disables pacing."
        ),
        "schema": {"type": ["number", "null"], "minimum": 0, "default": 20},
    },
    "max_retry_seconds": {
        "label": "Retry budget (seconds)",
        "description": (
            "How long one call may keep retrying 5xx, connection errors, timeouts and 429 pauses "
            "before it fails."
        ),
        "schema": {"type": ["number", "null"], "minimum": 0, "default": 300},
    },
    "rate_limit_pause_seconds": {
        "label": "Pause after HTTP 429 (seconds)",
        "description": (
            "How long every request of the hook pauses after a 429 without a Retry-After header "
            "(sFOX documents a 60 s block)."
        ),
        "schema": {"type": ["number", "null"], "minimum": 0, "default": 60},
    },
}

#: Airflow 3.2+ ``ui-field-behaviour``: the standard fields, relabelled or hidden.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    # Every extra has its own field, so the raw "extra" JSON box is hidden too.
    "hidden-fields": ["schema", "login", "port", "extra"],
    "relabeling": {"host": "Base URL", "password": "Enterprise API token"},
    "placeholders": {
        "host": "https://api.sfox.com",
        "password": "the partner's Enterprise API key",
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider's metadata in the shape of Airflow's ``provider_info.schema.json``."""
    return {
        "package-name": "airflow-provider-sfox",
        "name": "sFOX",
        "description": (
            "`sFOX Connect <https://docs.sfox.com/>`__: end-user verification and batch onboarding."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "sFOX Connect",
                "external-doc-url": "https://docs.sfox.com/",
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": "sFOX Connect", "python-modules": ["airflow_sfox.hooks.sfox"]}],
        "operators": [
            {
                "integration-name": "sFOX Connect",
                "python-modules": ["airflow_sfox.operators.verification"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "sfox",
                "hook-class-name": "airflow_sfox.hooks.sfox.SfoxConnectHook",
                "hook-name": "sFOX Connect",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }
