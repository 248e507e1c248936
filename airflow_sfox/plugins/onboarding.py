"""
The Airflow plugin that adds the "sFOX onboarding" page to the Airflow UI.

Registered through the ``airflow.plugins`` entry point of the package::

    [project.entry-points."airflow.plugins"]
    sfox_onboarding = "airflow_sfox.plugins.onboarding:SfoxOnboardingPlugin"

The api-server mounts the plugin's FastAPI app under :data:`URL_PREFIX`; the UI shows the
page as an entry of its navigation bar (seen on Airflow 3.1.8 and 3.3.2), rendered in an iframe
at ``/plugin/sfox-onboarding``, and as a tab of every DAG's page (that DAG's figures) and of
every DAG run's page (that run's view), with the ids in the URL (:data:`VIEWS`; the ``dag`` and
``dag_run`` destinations exist from Airflow 3.1.0 on, the provider's floor).

Every Airflow process loads plugins (scheduler, workers, DAG processor, ...), so this module
stays light: the FastAPI app, and with it Airflow's api-server modules, is built on the first
request the api-server routes to it.

``[sfox] onboarding_page_enabled = False`` (read once, when this module is imported) leaves the
plugin without app and view: no route, no navigation entry. Who may see the page:
:func:`airflow_sfox.plugins.app.requires_onboarding_dag_access`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from airflow_sfox.get_provider_info import CONFIG_SECTION, config_default

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]

#: Where the api-server mounts the page's app (must not start with a reserved Airflow prefix).
URL_PREFIX = "/sfox-onboarding"
#: The UI route of the page: ``/plugin/<URL_ROUTE>``.
URL_ROUTE = "sfox-onboarding"
PAGE_NAME = "sFOX onboarding"
#: The page's entry in the UI's navigation bar, which shows about six characters under its icon
#: ("sFOX onboarding" read "sFOX onb..."); the page itself is titled :data:`PAGE_NAME`.
NAV_LABEL = "sFOX"


class LazyApp:
    """
    An ASGI app that builds the real one (:func:`airflow_sfox.plugins.app.create_app`) on first use.

    :param factory: import path ``module:function`` of the app factory.
    """

    def __init__(self, factory: str = "airflow_sfox.plugins.app:create_app") -> None:
        self.factory = factory
        self._app: Any = None
        self._lock = threading.Lock()

    @property
    def app(self) -> Any:
        """The real app, built once."""
        if self._app is None:
            with self._lock:
                if self._app is None:
                    import importlib

                    module, _, name = self.factory.partition(":")
                    self._app = getattr(importlib.import_module(module), name)()
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand the request to the real app."""
        await self.app(scope, receive, send)


def page_enabled() -> bool:
    """``[sfox] onboarding_page_enabled``: whether the plugin registers the page at all."""
    return conf.getboolean(
        CONFIG_SECTION, "onboarding_page_enabled", fallback=config_default("onboarding_page_enabled")
    )


def _view(destination: str, url_route: str, fragment: str = "") -> dict[str, Any]:
    """
    One external view of the page: a navigation entry, or a tab of a DAG's or DAG run's page.

    :param destination: ``nav``, ``dag`` or ``dag_run`` (Airflow 3.1 and later).
    :param url_route: the UI route ``/plugin/<url_route>`` (under the DAG or run for a tab);
        unique per view: the UI finds a view by its route alone.
    :param fragment: the ids the page reads from its URL's fragment, with Airflow's
        ``{DAG_ID}`` / ``{RUN_ID}`` placeholders. A fragment, not a query: Airflow 3.1 puts the
        ids in unencoded, and a query would read a run_id's ``+`` as a space.
    """
    prefix = URL_PREFIX.lstrip("/")
    return {
        "name": NAV_LABEL,
        # Relative to the UI's <base href>: works when Airflow is served under a sub-path.
        "href": f"{prefix}/{fragment}",
        "url_route": url_route,
        "destination": destination,
        # No category; nav_top_level (ignored by 3.1) keeps it out of a "Plugins" menu.
        **({"nav_top_level": True} if destination == "nav" else {}),
        "icon": f"{prefix}/static/icon.svg",
        "icon_dark_mode": f"{prefix}/static/icon-dark.svg",
    }


#: The navigation entry, the DAG tab (the DAG's figures) and the DAG run tab (the run's view).
VIEWS: list[dict[str, Any]] = [
    _view("nav", URL_ROUTE),
    _view("dag", f"{URL_ROUTE}-dag", "#dag_id={DAG_ID}"),
    _view("dag_run", f"{URL_ROUTE}-run", "#dag_id={DAG_ID}&run_id={RUN_ID}"),
]


class SfoxOnboardingPlugin(AirflowPlugin):
    """The "sFOX onboarding" page: funnel, runs and failures of batch onboarding."""

    name = "sfox_onboarding"
    if page_enabled():
        fastapi_apps = [
            {"app": LazyApp(), "url_prefix": URL_PREFIX, "name": PAGE_NAME},
        ]
        external_views = VIEWS
