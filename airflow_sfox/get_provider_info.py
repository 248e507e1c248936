"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_sfox import __version__
from airflow_sfox.defaults import (
    DEFAULT_ONBOARDING_DAG_ID,
    DEFAULT_SFOX_CONN_ID,
    DEFAULT_WAREHOUSE_CONN_ID,
    LEDGER_TABLE,
    RUNS_TABLE,
)

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
    "rate_limit_requests": {
        "label": "Rate budget: requests (N)",
        "description": (
            "At most N request starts in any window of W seconds, shared by every hook, thread "
            "and process sending to sFOX from this machine (or from every worker, with the redis "
            "backend). sFOX allows 250 requests per 10 s per IP and then blocks the IP for 60 s: "
            "a budget that could put more than 250 in one 10-s window (N x ceil(10 / W) > 250) "
            "is refused, and so is 0. The default 200 per 10 s leaves head-room for the partner's "
            "other traffic from the same IP. Only a loopback host (the local sandbox) may go past "
            "sFOX's limit or set 0 (no client-side budget; the 429 pause still applies)."
        ),
        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 250, "default": 200},
    },
    "rate_limit_window_seconds": {
        "label": "Rate budget: window (W, seconds)",
        "description": "The window of the rate budget, in seconds (sFOX states its limit per 10 s).",
        "schema": {"type": ["number", "null"], "minimum": 1, "maximum": 300, "default": 10},
    },
    "rate_limit_margin_seconds": {
        "label": "Rate budget: jitter margin (seconds)",
        "description": (
            "How much longer than its window a request start counts, for arrivals bunched by "
            "network jitter. Empty: 0.5 s less the slack the budget leaves under sFOX's 250 per "
            "10 s (0.5 s at 250, 0.08 s at 240, none at 200); for a real sFOX host it cannot be set "
            "lower than that. Set it for a sandbox that runs the limit on a faster clock (scale it "
            "with the clock)."
        ),
        "schema": {"type": ["number", "null"], "minimum": 0, "maximum": 10, "default": None},
    },
    "rate_limit_scope": {
        "label": "Rate budget: scope",
        "description": (
            "Connections with the same scope share one budget and one 429 pause: one scope per "
            "egress IP. Default: the base URL's host[:port], so all connections to one sFOX host "
            "share it; name a scope when several hosts or connections leave through one IP. "
            "{hostname} in the name is replaced by the machine's host name: one budget per machine, "
            "which lets the local backend serve a Celery, Kubernetes or Edge deployment whose every "
            "worker host has an egress IP of its own."
        ),
        "schema": {"type": ["string", "null"], "default": None},
    },
    "rate_limit_backend": {
        "label": "Rate budget: backend",
        "description": (
            "Where the budget is kept. 'local': a SQLite file per scope in the folder below, shared "
            "by every process of one machine (LocalExecutor, dags test, triggerer), nothing to "
            "start; refused for a real sFOX host when [core] executor runs tasks on several "
            "machines (Celery, Kubernetes, Edge) unless the scope holds {hostname}. 'redis': a Redis "
            "server (pip install airflow-provider-sfox[redis]), shared by workers on several "
            "machines. If the backend cannot be reached, no request is sent and the task fails with "
            "a retryable error."
        ),
        "schema": {"type": ["string", "null"], "default": "local"},
    },
    "rate_limit_dir": {
        "label": "Rate budget: folder (local backend)",
        "description": (
            "Folder of the local backend's files; every process sharing the budget must use the "
            "same one. Default: airflow-sfox-rate-limit in the system temp folder (/tmp)."
        ),
        "schema": {"type": ["string", "null"], "default": None},
    },
    "rate_limit_redis_conn_id": {
        "label": "Rate budget: Redis connection id (redis backend)",
        "description": (
            "The Airflow connection of the Redis server (host, port, password, extras db and ssl)."
        ),
        "schema": {"type": ["string", "null"], "default": "redis_default"},
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
            "How long every request sharing the rate budget (every thread and process of the "
            "scope) pauses after a 429 without a Retry-After header (sFOX documents a 60 s block)."
        ),
        "schema": {"type": ["number", "null"], "minimum": 0, "default": 60},
    },
    "outage_probe_seconds": {
        "label": "Probe an outage every (seconds)",
        "description": (
            "Once a batch sender sees sFOX down (5xx, timeouts, refused connections), every batch "
            "sender sharing the rate budget stops spending on it: one request probes sFOX after "
            "this many seconds, the wait doubling after each failed probe (up to 8 times). Keep it "
            "below the send tasks' retry delay, so sends resume soon after sFOX is back."
        ),
        "schema": {"type": ["number", "null"], "minimum": 0.1, "default": 30},
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

#: The ``[sfox]`` configuration section, as Airflow's provider ``config`` (``airflow config list``
#: documents it). The ``default`` of each option is also the fallback the code applies when
#: Airflow has not loaded the providers' configuration: one source of truth (:func:`config_default`).
CONFIG_SECTION = "sfox"
CONFIG: dict[str, Any] = {
    CONFIG_SECTION: {
        "description": 'Settings of the sFOX provider: the "sFOX onboarding" page of the Airflow UI.\n',
        "options": {
            "onboarding_page_enabled": {
                "description": (
                    'Whether the api-server serves the "sFOX onboarding" page (and its JSON) and the UI '
                    "shows it in the navigation. When False the plugin registers no app and no view.\n"
                ),
                "version_added": "0.1.0",
                "type": "boolean",
                "example": "False",
                "default": "True",
            },
            "onboarding_dag_ids": {
                "description": (
                    "Comma-separated ids of the onboarding DAGs whose ledger the page shows. A user sees "
                    "the page and its JSON only with read access to every one of them, as checked by "
                    "Airflow's auth manager (for example the FAB permission can_read on DAG:<dag_id>).\n"
                ),
                "version_added": "0.1.0",
                "type": "string",
                "example": "sfox_batch_onboarding,sfox_onboarding_followup",
                "default": DEFAULT_ONBOARDING_DAG_ID,
            },
            "onboarding_warehouse_conn_id": {
                "description": "The Airflow connection of the warehouse that holds the onboarding ledger.\n",
                "version_added": "0.1.0",
                "type": "string",
                "example": "my_warehouse",
                "default": DEFAULT_WAREHOUSE_CONN_ID,
            },
            "onboarding_ledger_table": {
                "description": "The ledger table the page reads (a SQL identifier, or schema.table).\n",
                "version_added": "0.1.0",
                "type": "string",
                "example": "onboarding.sfox_ledger",
                "default": LEDGER_TABLE,
            },
            "onboarding_runs_table": {
                "description": "The run table the page reads (a SQL identifier, or schema.table).\n",
                "version_added": "0.1.0",
                "type": "string",
                "example": "onboarding.sfox_runs",
                "default": RUNS_TABLE,
            },
            "onboarding_sfox_conn_id": {
                "description": "The sfox connection whose rate budget the page watches: an operator's "
                "hold on its scope (``python -m airflow_sfox hold``) is shown above the funnel.\n",
                "version_added": "0.1.0",
                "type": "string",
                "example": "sfox_default",
                "default": DEFAULT_SFOX_CONN_ID,
            },
            "onboarding_refresh_seconds": {
                "description": "How often, in seconds, the open page reloads its figures (at least 2).\n",
                "version_added": "0.1.0",
                "type": "integer",
                "example": "30",
                "default": "10",
            },
        },
    }
}


def config_default(option: str) -> str:
    """The declared default of ``[sfox] <option>`` (a string, as Airflow's config holds it)."""
    return str(CONFIG[CONFIG_SECTION]["options"][option]["default"])


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
        "triggers": [{"integration-name": "sFOX Connect", "python-modules": ["airflow_sfox.triggers.sfox"]}],
        "connection-types": [
            {
                "connection-type": "sfox",
                "hook-class-name": "airflow_sfox.hooks.sfox.SfoxConnectHook",
                "hook-name": "sFOX Connect",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
        "asset-uris": [
            {
                # sfox://<sFOX host>/email-verified and sfox-ledger://<warehouse conn id>/<table>
                "schemes": ["sfox", "sfox-ledger"],
                "handler": "airflow_sfox.assets.sfox.sanitize_uri",
            }
        ],
        "config": CONFIG,
    }
