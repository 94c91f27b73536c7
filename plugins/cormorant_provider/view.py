"""The Cormorant view inside the Airflow UI: an Airflow plugin with a FastAPI app (served by Airflow's
API server under ``/cormorant``) and a navigation entry that shows it in the UI.

- ``/cormorant/`` and ``/cormorant/use-cases/<name>``: the pages (HTML; charts drawn by Plotly, whose
  Python package ships the plotly.js bundle served here, so no CDN is needed).
- ``/cormorant/api/use-cases`` and ``/cormorant/api/use-cases/<name>``: the panels as JSON, from
  :mod:`cormorant.view` (one read-only library function per panel).
- ``/cormorant/api/use-cases/<name>/reports/<kind>/<day>``: a day's validation, drift or performance
  report from the lake.

Airflow does not protect a plugin's FastAPI app by itself: every route here requires an authenticated
Airflow user, through Airflow's own ``get_user`` (a Bearer token as for the REST API, or the UI's
session cookie), and answers 401 otherwise. What a user sees is what Airflow's auth manager lets them
read: a use case only when every one of its DAGs passes ``filter_authorized_dag_ids`` (GET), a broken
spec only when the DAG id its file stands for does; its page, panels and reports answer 403 otherwise,
and every page 403 to a user who may read none of Cormorant's DAGs (as Airflow's REST API does). Every
route is a GET: nothing here changes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

PAGE = Path(__file__).with_name("view.html")
_bearer = HTTPBearer(auto_error=False)


async def authenticated(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Any:
    """The Airflow user of this request (the UI's session or a REST API token), else 401."""
    from airflow.api_fastapi.core_api.security import get_user

    return await get_user(request, None, credentials)


app = FastAPI(
    title="Cormorant",
    description="The ML state of every Cormorant use case, read-only.",
    dependencies=[Depends(authenticated)],
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


@cache
def _plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).with_name("package_data") / "plotly.min.js"


def _settings_and_lake() -> tuple[Any, Any]:
    from cormorant.config import Settings
    from cormorant_provider.storage import airflow_lake

    settings = Settings.from_env()
    return settings, airflow_lake(settings)


def _readable(user: Any) -> Callable[[set[str]], set[str]]:
    """Filters DAG ids to those the auth manager lets ``user`` read."""
    from airflow.api_fastapi.app import get_auth_manager

    manager = get_auth_manager()
    return lambda dag_ids: manager.filter_authorized_dag_ids(dag_ids=dag_ids, user=user, method="GET")


def _visible(settings: Any, user: Any) -> dict[Path, Any]:
    """The spec files this user may see; 403 when there are specs and the user may read none of them."""
    from cormorant.view import visible_specs

    found = visible_specs(settings, _readable(user))
    if not found and visible_specs(settings):
        raise HTTPException(status_code=403, detail="you may read none of the Cormorant use cases' DAGs")
    return found


def _spec(settings: Any, name: str, user: Any) -> Any:
    from cormorant.spec import SpecError
    from cormorant.view import find_spec

    spec = find_spec(settings, name)
    if spec is None:
        raise HTTPException(status_code=404, detail=f"no use case named {name!r}")
    allowed = [s for s in _visible(settings, user).values() if not isinstance(s, SpecError)]
    if spec.name not in {s.name for s in allowed}:
        raise HTTPException(status_code=403, detail=f"you may not read the DAGs of use case {name!r}")
    return spec


@app.get("/", response_class=HTMLResponse)
@app.get("/use-cases/{name}", response_class=HTMLResponse)
def page(name: str | None = None, user: Any = Depends(authenticated)) -> HTMLResponse:
    from cormorant.config import Settings

    settings = Settings.from_env()
    if name is None:
        _visible(settings, user)
    else:
        _spec(settings, name, user)
    # Relative to the page, so the view works wherever Airflow is served (a proxy's path prefix too)
    static = "static/" if name is None else "../static/"
    html = PAGE.read_text().replace("__STATIC__", static)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@app.get("/static/plotly.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(_plotly_js(), media_type="text/javascript")


@app.get("/api/use-cases")
def use_cases(user: Any = Depends(authenticated)) -> JSONResponse:
    from cormorant.view import use_cases as panel

    settings, lake = _settings_and_lake()
    _visible(settings, user)
    return JSONResponse(panel(settings, lake, _readable(user)))


@app.get("/api/use-cases/{name}")
def use_case(name: str, user: Any = Depends(authenticated)) -> JSONResponse:
    from cormorant.view import use_case as panel

    settings, lake = _settings_and_lake()
    return JSONResponse(panel(_spec(settings, name, user), settings, lake))


@app.get("/api/use-cases/{name}/reports/{kind}/{day}")
def report(name: str, kind: str, day: str, user: Any = Depends(authenticated)) -> Response:
    from cormorant.view import REPORTS
    from cormorant.view import report as read

    settings, lake = _settings_and_lake()
    spec = _spec(settings, name, user)
    try:
        day = date.fromisoformat(day).isoformat()
    except ValueError:
        raise HTTPException(status_code=404, detail=f"{day!r} is not a day (YYYY-MM-DD)") from None
    if kind not in REPORTS:
        raise HTTPException(status_code=404, detail=f"no report kind {kind!r}; kinds: {', '.join(REPORTS)}")
    found = read(spec, lake, kind, day)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no {kind} report for {name} on {day}")
    content, media_type = found
    return Response(content, media_type=media_type)


class CormorantViewPlugin(AirflowPlugin):
    name = "cormorant_view"
    fastapi_apps = [{"app": app, "url_prefix": "/cormorant", "name": "Cormorant"}]
    external_views = [
        {
            "name": "Cormorant",
            "href": "/cormorant/",
            "destination": "nav",
            "url_route": "cormorant",
        }
    ]
