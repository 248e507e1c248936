"""
The Airflow plugin that adds the "sFOX onboarding" page to the Airflow UI.

Registered through the ``airflow.plugins`` entry point of the package::

    [project.entry-points."airflow.plugins"]
    sfox_onboarding = "airflow_sfox.plugins.onboarding:SfoxOnboardingPlugin"

The api-server mounts the plugin's FastAPI app under :data:`URL_PREFIX`; the UI shows the
external view as an entry of its navigation bar (seen on Airflow 3.1.8 and 3.3.2) and renders
it in an iframe at ``/plugin/sfox-onboarding``.

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


class SfoxOnboardingPlugin(AirflowPlugin):
    """The "sFOX onboarding" page: funnel, runs and failures of batch onboarding."""

    name = "sfox_onboarding"
    if page_enabled():
        fastapi_apps = [
            {"app": LazyApp(), "url_prefix": URL_PREFIX, "name": PAGE_NAME},
        ]
        external_views = [
            {
                "name": NAV_LABEL,
                # Relative to the UI's <base href>: works when Airflow is served under a sub-path.
                "href": f"{URL_PREFIX.lstrip('/')}/",
                "url_route": URL_ROUTE,
                "destination": "nav",
                # No category; nav_top_level (ignored by 3.1) keeps it out of a "Plugins" menu.
                "nav_top_level": True,
                "icon": f"{URL_PREFIX.lstrip('/')}/static/icon.svg",
                "icon_dark_mode": f"{URL_PREFIX.lstrip('/')}/static/icon-dark.svg",
            }
        ]
