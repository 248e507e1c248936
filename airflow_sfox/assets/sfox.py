"""
The provider's assets: the "email verified" events of an sFOX host, the onboarding ledger, and
the warehouse table an onboarding DAG reads.

========================  ======================================================  ==========================
asset                     URI                                                     who emits its events
========================  ======================================================  ==========================
email verified            ``sfox://<sFOX host>/email-verified``                   the partner's backend
                                                                                  (``POST /api/v2/assets/
                                                                                  events``, user_ids in
                                                                                  ``extra``), or a watcher
ledger                    ``sfox-ledger://<warehouse conn id>/<ledger table>``    the onboarding DAG
source table              the database's own, e.g.                                the partner's load DAG
                          ``postgres://db:5432/warehouse/public/customers``       (``outlets=[...]``)
========================  ======================================================  ==========================

Airflow keeps one asset per name and URI: build each asset once (these functions) and use the
same object in every DAG that names it. A DAG that names the email-verified asset without its
watcher removes the watcher.

Building an asset does no I/O: nothing reads a connection at parse time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

from airflow.sdk import Asset

from airflow_sfox.defaults import DEFAULT_WAREHOUSE_CONN_ID, LEDGER_TABLE

if TYPE_CHECKING:
    from collections.abc import Sequence

#: sFOX's production host, the default of the email-verified asset.
DEFAULT_SFOX_HOST = "api.sfox.com"
#: The schemes this provider registers with Airflow (``get_provider_info()["asset-uris"]``).
SFOX_SCHEME = "sfox"
LEDGER_SCHEME = "sfox-ledger"
#: The path of the email-verified asset of a host.
EMAIL_VERIFIED_PATH = "/email-verified"
#: The key of an email-verified event's ``extra`` that lists the users.
USER_IDS_KEY = "user_ids"

_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
_TABLE = re.compile(r"^/[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def email_verified_asset(host: str = DEFAULT_SFOX_HOST, *, watchers: Sequence[Any] = ()) -> Asset:
    """
    The "email verified" events of the end users of one sFOX host.

    :param host: names the asset only (its URI is ``sfox://<host>/email-verified``); requests go
        where the DAG's ``sfox`` connection points. Use the sFOX host by convention
        (``api.sfox.com``), and post events to the same URI.
    :param watchers: ``AssetWatcher`` objects that emit its events, e.g.
        ``[email_verified_watcher()]`` (:func:`airflow_sfox.triggers.sfox.email_verified_watcher`).
    """
    if not isinstance(host, str) or not _HOST.match(host):
        raise ValueError(f"email_verified_asset: host must be a host name or host:port, got {host!r}")
    uri = f"{SFOX_SCHEME}://{host.lower()}{EMAIL_VERIFIED_PATH}"
    return Asset(uri=uri, name=f"sfox_email_verified@{host.lower()}", watchers=list(watchers))


def ledger_asset(
    warehouse_conn_id: str = DEFAULT_WAREHOUSE_CONN_ID, ledger_table: str = LEDGER_TABLE
) -> Asset:
    """
    The onboarding ledger of a warehouse: an outlet of every onboarding run.

    :param warehouse_conn_id: the SQL connection of the warehouse.
    :param ledger_table: the ledger table (or ``schema.table``).
    """
    return Asset(uri=f"{LEDGER_SCHEME}://{warehouse_conn_id}/{ledger_table}")


def table_asset(database_uri: str, table: str) -> Asset:
    """
    The asset of a warehouse table, in the URI form Airflow's database providers use, so that
    a load DAG's ``outlets`` and the onboarding DAG's schedule name the same asset.

    :param database_uri: the database without credentials: ``postgres://host:5432/warehouse``,
        ``mysql://host:3306/warehouse``, or any other ``scheme://host/database``.
    :param table: ``table`` or ``schema.table`` (PostgreSQL: ``public`` when no schema is given).
    """
    base = urlsplit(database_uri.rstrip("/"))
    if not base.scheme or not base.netloc or "@" in base.netloc or base.path.count("/") != 1:
        raise ValueError(
            f"table_asset: database_uri must be scheme://host[:port]/database without credentials, "
            f"got {database_uri!r}"
        )
    if not _TABLE.match(f"/{table}"):
        raise ValueError(f"table_asset: table must be a SQL identifier or schema.table, got {table!r}")
    schema, _, name = table.rpartition(".")
    if base.scheme in ("postgres", "postgresql"):
        table = f"{schema or 'public'}/{name}"
    elif schema:
        table = f"{schema}/{name}"
    return Asset(uri=f"{database_uri.rstrip('/')}/{table}")


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """
    Airflow's URI check of this provider's schemes (registered in ``get_provider_info``).

    :raises ValueError: not ``sfox://<host>/email-verified`` or ``sfox-ledger://<conn id>/<table>``.
    """
    if not uri.netloc:
        raise ValueError(f"an {uri.scheme} asset URI needs a host")
    if uri.scheme == SFOX_SCHEME and uri.path != EMAIL_VERIFIED_PATH:
        raise ValueError(f"an sfox asset URI is sfox://<host>{EMAIL_VERIFIED_PATH}, got path {uri.path!r}")
    if uri.scheme == LEDGER_SCHEME and not _TABLE.match(uri.path):
        raise ValueError(f"an sfox-ledger asset URI is sfox-ledger://<conn>/<table>, got path {uri.path!r}")
    return uri
