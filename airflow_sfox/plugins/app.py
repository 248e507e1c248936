"""
The FastAPI app behind the "sFOX onboarding" page, mounted by the Airflow api-server.

Routes, relative to the plugin's ``url_prefix`` (``/sfox-onboarding``):

``GET /``              the page (HTML); anonymous visitors are sent to Airflow's login page
``GET /api/summary``   every figure of the page as JSON (the page polls it)
``GET /static/...``    the page's own JS, CSS and icons (no CDN: works without internet)

The page and the JSON need an Airflow login: the routes depend on Airflow's own
:func:`airflow.api_fastapi.core_api.security.get_user`, which accepts the UI's ``_token``
cookie or an ``Authorization: Bearer <JWT>`` header (``POST /auth/token``) and answers 401
(no or expired token) or 403 (invalid token) otherwise. The static files hold no data.

Settings, read on each request from Airflow's configuration (or ``AIRFLOW__SFOX__*``):

``[sfox] onboarding_warehouse_conn_id``  the warehouse connection (default ``sfox_warehouse``)
``[sfox] onboarding_ledger_table``       ledger table (default ``sfox_onboarding_ledger``)
``[sfox] onboarding_runs_table``         run table (default ``sfox_onboarding_runs``)
``[sfox] onboarding_refresh_seconds``    how often the page polls (default 10)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_sfox.onboarding.warehouse import LEDGER_TABLE, RUNS_TABLE, Warehouse
from airflow_sfox.plugins.dashboard import Dashboard, DashboardSettings, TTLCache

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
#: Configuration section and options of the page.
CONFIG_SECTION = "sfox"
DEFAULT_CONN_ID = "sfox_warehouse"
DEFAULT_REFRESH_SECONDS = 10


def _config(key: str, fallback: str) -> str:
    from airflow.configuration import conf

    value = conf.get(CONFIG_SECTION, key, fallback=fallback)
    return str(value).strip() if value else fallback


def settings_from_config() -> DashboardSettings:
    """The page's settings from Airflow's configuration (``[sfox] onboarding_*``)."""
    return DashboardSettings(
        conn_id=_config("onboarding_warehouse_conn_id", DEFAULT_CONN_ID),
        ledger_table=_config("onboarding_ledger_table", LEDGER_TABLE),
        runs_table=_config("onboarding_runs_table", RUNS_TABLE),
    )


def refresh_seconds_from_config() -> int:
    """How often the page polls, from ``[sfox] onboarding_refresh_seconds`` (at least 2 s)."""
    raw = _config("onboarding_refresh_seconds", str(DEFAULT_REFRESH_SECONDS))
    try:
        return max(2, int(float(raw)))
    except ValueError:
        return DEFAULT_REFRESH_SECONDS


def airflow_user_dependency() -> Callable[..., Any]:
    """Airflow's "who is calling" dependency (imported late: it loads the api-server's modules)."""
    from airflow.api_fastapi.core_api.security import get_user

    return get_user


def _login_url(request: Request) -> str:
    """Airflow's login page, coming back to this page."""
    try:
        from airflow.api_fastapi.app import get_auth_manager

        return get_auth_manager().get_url_login(next_url=str(request.url))
    except Exception:  # noqa: BLE001 - no auth manager: the UI root redirects to the login
        return "/"


def create_app(
    *,
    settings: Callable[[], DashboardSettings] = settings_from_config,
    refresh_seconds: Callable[[], int] = refresh_seconds_from_config,
    cache_seconds: float = 3.0,
) -> FastAPI:
    """
    Build the page's FastAPI app.

    :param settings: returns where to read from (called on every request).
    :param refresh_seconds: returns the page's polling period.
    :param cache_seconds: serve a summary again for this long (many open pages, one query set).
    """
    get_user = airflow_user_dependency()
    cache = TTLCache(cache_seconds)
    app = FastAPI(
        title="sFOX onboarding",
        description="Onboarding funnel, runs and failures from the sFOX onboarding ledger.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="sfox_onboarding_static")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Send an anonymous visitor of the page to Airflow's login; JSON callers get the status."""
        if exc.status_code in (401, 403) and request.url.path.rstrip("/") == request.scope.get(
            "root_path", ""
        ).rstrip("/"):
            return RedirectResponse(_login_url(request), status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.get("/", include_in_schema=False, dependencies=[Depends(get_user)])
    def page() -> FileResponse:
        """The page: static HTML that polls ``api/summary``."""
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/summary", dependencies=[Depends(get_user)])
    def summary() -> JSONResponse:
        """Funnel, runs, reasons and recent failures as JSON."""
        try:
            current = settings()
        except ValueError as error:
            raise HTTPException(
                status_code=500, detail=f"Invalid [sfox] onboarding setting: {error}"
            ) from None
        try:
            warehouse = Warehouse.from_conn_id(
                current.conn_id, ledger_table=current.ledger_table, runs_table=current.runs_table
            )
            key = (current, warehouse.dialect)
            data = dict(cache.get(key, Dashboard(warehouse, current).summary))
        except Exception as error:  # any driver or lookup error: say which, log it
            log.exception("sFOX onboarding page: cannot read warehouse connection %r", current.conn_id)
            raise HTTPException(
                status_code=503,
                detail=f"Cannot read the onboarding ledger through connection {current.conn_id!r} "
                f"({type(error).__name__}); see the api-server log.",
            ) from None
        data["conn_id"] = current.conn_id
        data["refresh_seconds"] = refresh_seconds()
        return JSONResponse(data, headers={"Cache-Control": "no-store"})

    return app
