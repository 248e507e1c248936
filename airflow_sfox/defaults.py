"""
Default names of the provider, in one place: connection ids, the onboarding DAG, its tables.

Standard library only: the hook, the operators, the DAG factory, the UI plugin and the
provider's config section all import these without loading anything else.
"""

from __future__ import annotations

#: The ``sfox`` connection used when none is named (``SfoxConnectHook.default_conn_name``).
DEFAULT_SFOX_CONN_ID = "sfox_default"
#: The SQL connection of the warehouse holding the source, the ledger and the run table.
DEFAULT_WAREHOUSE_CONN_ID = "sfox_warehouse"
#: The dag_id of the onboarding DAG file shipped in ``dags/``.
DEFAULT_ONBOARDING_DAG_ID = "sfox_batch_onboarding"
#: The dag_id of the follow-up DAG that sends the sms of email-verified events.
DEFAULT_EMAIL_VERIFIED_DAG_ID = "sfox_email_verified"
#: The onboarding ledger: one row per (user_id, channel).
LEDGER_TABLE = "sfox_onboarding_ledger"
#: One row per onboarding run.
RUNS_TABLE = "sfox_onboarding_runs"
#: sFOX's users as the last plan read them (no email, no phone): joined with the source in SQL.
SNAPSHOT_TABLE = "sfox_onboarding_snapshot"
