"""
Send the sms of the users whose email the partner's backend reports verified, within seconds
(see ``email_verified_dag``): the backend posts an event of the email-verified asset.
"""

from __future__ import annotations

from airflow_sfox.assets.sfox import email_verified_asset
from airflow_sfox.onboarding.dag import email_verified_dag

dag = email_verified_dag(
    dag_id="sfox_email_verified",
    asset=email_verified_asset("api.sfox.com"),
    sfox_conn_id="sfox_default",
    warehouse_conn_id="sfox_warehouse",
)
