"""
The FastAPI app behind the "sFOX onboarding" page, mounted by the Airflow api-server.

Routes, relative to the plugin's ``url_prefix`` (``/sfox-onboarding``)::

    GET /                the page (HTML); anonymous visitors are sent to Airflow's login page
    GET /api/summary[?dag_id=<text>]
                         every figure of the page as JSON (the page polls it), of every
                         DAG's runs or of one DAG's
    GET /api/user?user_id=<text>
                         one user's ledger rows (every channel due for its account type) and
                         attempts timeline (404: unknown)
    GET /api/run?run_id=<text>[&dag_id=<text>]
                         one run's row, outcomes, held rows and top failure reasons
                         (404: unknown, or not a run of that DAG; 422: runs of several
                         DAGs have that run_id and no dag_id says which)
    GET /static/...      the page's own JS, CSS and icons (no CDN: works without internet)

A user_id or run_id is any text of 1 to 255 characters, compared exactly; it goes in the query
string, not the path, because a path cannot carry every text (a browser resolves a segment
``..`` or ``.`` before sending it). Longer or empty: 422.

The page and the JSON show a DAG's ledger, so they need read access to that DAG: the routes
depend on :func:`requires_onboarding_dag_access`, which identifies the caller with Airflow's own
:func:`airflow.api_fastapi.core_api.security.get_user` (the UI's ``_token`` cookie or an
``Authorization: Bearer <JWT>`` header from ``POST /auth/token``; 401 without or with an
expired token, 403 with an invalid one) and then asks the configured auth manager, as Airflow's
``requires_access_dag`` does, whether the user may ``GET`` every DAG of
``[sfox] onboarding_dag_ids``, and the DAG named by a ``dag_id`` query parameter (403
otherwise). An anonymous browser asking for the page is sent to Airflow's login page instead.
The static files hold no data and need no login.

Settings, read on each request from Airflow's configuration (or ``AIRFLOW__SFOX__*``), declared
with their defaults in :data:`airflow_sfox.get_provider_info.CONFIG`:

``[sfox] onboarding_dag_ids``            the DAGs whose ledger the page shows (comma-separated)
``[sfox] onboarding_warehouse_conn_id``  the warehouse connection
``[sfox] onboarding_ledger_table``       ledger table
``[sfox] onboarding_runs_table``         run table
``[sfox] onboarding_refresh_seconds``    how often the page polls
``[sfox] onboarding_sfox_conn_id``       the sfox connection whose operator's hold the page shows
"""

from __future__ import annotations

import html
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_sfox.get_provider_info import CONFIG_SECTION, config_default
from airflow_sfox.onboarding.warehouse import Warehouse
from airflow_sfox.plugins.dashboard import AmbiguousRun, DashboardSettings, NotFound, check_key
from airflow_sfox.plugins.lookups import Lookups

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


def _config(key: str) -> str:
    """``[sfox] <key>``, or its declared default when unset or blank."""
    from airflow.configuration import conf

    fallback = config_default(key)
    value = conf.get(CONFIG_SECTION, key, fallback=fallback)
    return str(value).strip() if value and str(value).strip() else fallback


def settings_from_config() -> DashboardSettings:
    """The page's settings from Airflow's configuration (``[sfox] onboarding_*``)."""
    return DashboardSettings(
        conn_id=_config("onboarding_warehouse_conn_id"),
        ledger_table=_config("onboarding_ledger_table"),
        runs_table=_config("onboarding_runs_table"),
    )


def refresh_seconds_from_config() -> int:
    """How often the page polls, from ``[sfox] onboarding_refresh_seconds`` (at least 2 s)."""
    default = int(config_default("onboarding_refresh_seconds"))
    try:
        return max(2, int(float(_config("onboarding_refresh_seconds"))))
    except ValueError:
        return default


def hold_from_config() -> dict[str, Any] | None:
    """
    The operator's hold on the budget scope of ``[sfox] onboarding_sfox_conn_id``, if any
    (``python -m airflow_sfox hold``); ``None`` when senders are free or it cannot be read (said
    once at WARNING). One backend per process serves every poll.
    """
    from airflow_sfox.hooks.budget import watched_hold

    return watched_hold(_config("onboarding_sfox_conn_id"))


def dag_ids_from_config() -> tuple[str, ...]:
    """The DAGs whose ledger the page shows, from ``[sfox] onboarding_dag_ids`` (comma-separated)."""
    return tuple(
        dict.fromkeys(part.strip() for part in _config("onboarding_dag_ids").split(",") if part.strip())
    )


def airflow_user_dependency() -> Callable[..., Any]:
    """Airflow's "who is calling" dependency (imported late: it loads the api-server's modules)."""
    from airflow.api_fastapi.core_api.security import get_user

    return get_user


class DagAccessDenied(HTTPException):
    """403 from the DAG check: a known user without read access (not a bad or missing token)."""


def _team_names(dag_ids: Sequence[str]) -> dict[str, str | None]:
    """
    The team of each DAG, for the auth manager, as Airflow's ``requires_access_dag`` passes it.

    Teams exist only with ``[core] multi_team`` (Airflow 3.2+); otherwise every DAG has none and
    the metadata DB is not asked.
    """
    from airflow.configuration import conf

    if not conf.getboolean("core", "multi_team", fallback=False):
        return {}
    from airflow.models.dag import DagModel

    return {dag_id: DagModel.get_team_name(dag_id) for dag_id in dag_ids}


def requires_onboarding_dag_access(
    dag_ids: Callable[[], Sequence[str]] = dag_ids_from_config,
    auth_manager: Callable[[], Any] | None = None,
) -> Callable[..., None]:
    """
    A FastAPI dependency: the caller may read (``GET``) every DAG whose ledger the page shows,
    and the DAG a request narrows the figures to (its ``dag_id`` query parameter).

    The style of Airflow's own ``airflow.api_fastapi.core_api.security.requires_access_dag``:
    the user comes from Airflow's ``get_user`` (401 anonymous or expired, 403 invalid token) and
    the configured auth manager decides, through ``batch_is_authorized_dag`` with one
    ``DagDetails(id=...)`` request per DAG (the same API on Airflow 3.1 to 3.3). Refused: 403.

    :param dag_ids: returns the DAG ids (called on every request); none configured is refused.
    :param auth_manager: returns the auth manager; default: the api-server's (tests pass a fake).
    """
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    if auth_manager is None:
        from airflow.api_fastapi.app import get_auth_manager

        auth_manager = get_auth_manager
    decider: Callable[[], Any] = auth_manager

    get_user = airflow_user_dependency()

    def inner(request: Request, user: Any = Depends(get_user)) -> None:  # noqa: B008 - FastAPI's idiom
        ids = tuple(dag_ids())
        if not ids:
            raise HTTPException(
                status_code=500, detail="Invalid [sfox] onboarding setting: onboarding_dag_ids names no DAG"
            )
        # A view of one DAG (its tab, or the page's DAG filter) needs read access to it too.
        asked = request.query_params.get("dag_id")
        if asked and asked not in ids:
            ids += (asked,)
        teams = _team_names(ids)
        requests: list[Any] = [
            {"method": "GET", "details": DagDetails(id=dag_id, team_name=teams.get(dag_id))} for dag_id in ids
        ]
        if not decider().batch_is_authorized_dag(requests, user=user):
            raise DagAccessDenied(
                status_code=403,
                detail="Forbidden: the sFOX onboarding page needs read access to the DAG(s) "
                + ", ".join(ids),
            )

    return inner


class TTLCache:
    """
    Remembers the last summaries for a few seconds, so many open pages cost one set of queries.

    :param seconds: how long a summary is served again; 0 turns the cache off.
    :param clock: the monotonic clock (tests replace it).
    :param size: how many keys (one per DAG filter) it keeps.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic, size: int = 16) -> None:
        self.seconds = seconds
        self.clock = clock
        self.size = size
        self._lock = threading.Lock()
        self._entries: dict[Any, tuple[float, dict[str, Any]]] = {}

    def get(self, key: Any, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The cached value of ``key``, or ``compute()`` (one computation at a time)."""
        if self.seconds <= 0:
            return compute()
        with self._lock:
            now = self.clock()
            entry = self._entries.get(key)
            if entry and now < entry[0]:
                return entry[1]
            value = compute()
            live = {k: e for k, e in self._entries.items() if now < e[0] and k != key}
            kept = (
                sorted(live.items(), key=lambda item: item[1][0])[-(self.size - 1) :] if self.size > 1 else []
            )
            self._entries = {**dict(kept), key: (self.clock() + self.seconds, value)}
            return value


def _login_url(request: Request) -> str:
    """Airflow's login page, coming back to this page."""
    try:
        from airflow.api_fastapi.app import get_auth_manager

        return get_auth_manager().get_url_login(next_url=str(request.url))
    except Exception:  # noqa: BLE001 - no auth manager: the UI root redirects to the login
        return "/"


async def _http_error(request: Request, exc: Exception) -> Response:
    """
    An anonymous visitor of the page (or one with a bad token) goes to Airflow's login and a
    known user without read access gets a short 403 page; JSON callers get the status.
    """
    assert isinstance(exc, StarletteHTTPException)
    is_page = request.url.path.rstrip("/") == request.scope.get("root_path", "").rstrip("/")
    if is_page and isinstance(exc, DagAccessDenied):
        return HTMLResponse(
            f"<!doctype html><title>sFOX onboarding</title><p>{html.escape(str(exc.detail))}.</p>",
            status_code=exc.status_code,
            headers={"Cache-Control": "no-store"},
        )
    if is_page and exc.status_code in (401, 403):
        return RedirectResponse(_login_url(request), status_code=303)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def lookup_key(value: str | None, name: str, *, optional: bool = False) -> str | None:
    """
    The user_id, run_id or dag_id of a request, or 422 saying what is wrong with it.

    :param optional: absent or empty is ``None`` (a dag_id filter), not an error.
    """
    if optional and not value:
        return None
    try:
        return check_key(value or "", name)
    except ValueError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None


def _reader(
    settings: Callable[[], DashboardSettings],
) -> Callable[[Callable[[Lookups], dict[str, Any]]], tuple[DashboardSettings, dict[str, Any]]]:
    """Runs a read on the configured warehouse: bad settings 500, unknown 404, a failing read 503."""

    def read(compute: Callable[[Lookups], dict[str, Any]]) -> tuple[DashboardSettings, dict[str, Any]]:
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
            return current, compute(Lookups(warehouse, current))
        except NotFound as missing:
            raise HTTPException(status_code=404, detail=str(missing)) from None
        except AmbiguousRun as ambiguous:
            raise HTTPException(status_code=422, detail=str(ambiguous)) from None
        except Exception as error:  # any driver or lookup error: say which, log it (no user data)
            log.exception("sFOX onboarding page: cannot read warehouse connection %r", current.conn_id)
            raise HTTPException(
                status_code=503,
                detail=f"Cannot read the onboarding ledger through connection {current.conn_id!r} "
                f"({type(error).__name__}); see the api-server log.",
            ) from None

    return read


def _json(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


def _new_app() -> FastAPI:
    """The app with its static files and error pages, without routes or schema pages."""
    app = FastAPI(
        title="sFOX onboarding",
        description="Onboarding funnel, runs and failures from the sFOX onboarding ledger.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="sfox_onboarding_static")
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app


def create_app(
    *,
    settings: Callable[[], DashboardSettings] = settings_from_config,
    refresh_seconds: Callable[[], int] = refresh_seconds_from_config,
    dag_ids: Callable[[], Sequence[str]] = dag_ids_from_config,
    auth_manager: Callable[[], Any] | None = None,
    cache_seconds: float = 3.0,
    hold: Callable[[], dict[str, Any] | None] = hold_from_config,
) -> FastAPI:
    """
    Build the page's FastAPI app.

    :param settings: returns where to read from (called on every request).
    :param refresh_seconds: returns the page's polling period.
    :param dag_ids: returns the DAGs whose ledger is shown; the caller must be able to read all.
    :param auth_manager: returns the auth manager that decides; default: the api-server's.
    :param cache_seconds: serve a summary again for this long (many open pages, one query set).
    :param hold: returns the operator's hold on the senders' budget scope (cached as the summaries).
    """
    can_read_dags = Depends(requires_onboarding_dag_access(dag_ids, auth_manager))
    cache = TTLCache(cache_seconds)
    read = _reader(settings)
    app = _new_app()

    @app.get("/", include_in_schema=False, dependencies=[can_read_dags])
    def page() -> FileResponse:
        """The page: static HTML that polls ``api/summary``."""
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/summary", dependencies=[can_read_dags])
    def summary(dag_id: str | None = None) -> JSONResponse:
        """Funnel, runs, reasons and recent failures as JSON (of one DAG's runs: ``dag_id``)."""
        dag = lookup_key(dag_id, "dag_id", optional=True)

        def cached(figures: Lookups) -> dict[str, Any]:
            key = (figures.settings, figures.warehouse.dialect, dag)
            return dict(cache.get(key, lambda: figures.summary(dag)))

        current, data = read(cached)
        held = cache.get(("hold",), lambda: {"hold": hold()})["hold"]  # many pages, one read
        figures = {"conn_id": current.conn_id, "refresh_seconds": refresh_seconds(), "hold": held}
        return _json({**data, **figures})

    @app.get("/api/user", dependencies=[can_read_dags])
    def user(user_id: str = "") -> JSONResponse:
        """One user's ledger rows and attempts timeline (newest first, capped), as JSON."""
        key = str(lookup_key(user_id, "user_id"))
        return _json(read(lambda lookups: lookups.user(key))[1])

    @app.get("/api/run", dependencies=[can_read_dags])
    def run(run_id: str = "", dag_id: str | None = None) -> JSONResponse:
        """One run's row, its outcomes, held rows and top failure reasons, as JSON."""
        key = str(lookup_key(run_id, "run_id"))
        dag = lookup_key(dag_id, "dag_id", optional=True)
        return _json(read(lambda lookups: lookups.run(key, dag))[1])

    return app
