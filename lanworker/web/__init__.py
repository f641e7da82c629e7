"""The status view served by `worker.py serve`: HTML pages at `/` and `/jobs/ID`, the JSON the
`jobs` command reads at `/api/jobs`, a self-refreshing table, and sign-in for browsers when
the API needs a token. Talks to the rest only through the task store and TesService; one APIRouter (`router`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from lanworker.tes.api import Service, unavailable
from lanworker.tes.app import TOKEN_COOKIE
from lanworker.tes.service import CancelNotRecorded, TesService
from lanworker.web import pages
from lanworker.web import readmodel as status
from lanworker.web.formatting import when

PAGE_SIZE = 50

router = APIRouter(include_in_schema=False)


CSRF_SECRET = secrets.token_bytes(32)  # per process: a form outlives no restart


def csrf_for(job_id: str) -> str:
    return hmac.new(CSRF_SECRET, job_id.encode(), hashlib.sha256).hexdigest()


def params(request: Request) -> tuple[str | None, str | None, str | None]:
    query = request.query_params
    state = query.get("state") or None
    if state is not None and state not in status.STATE_ORDER:
        state = None
    return state, query.get("q") or None, query.get("page_token") or None


def overview(service: TesService) -> dict[str, Any]:
    return status.overview(service.store, service.queue.depth)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def job_list(request: Request, service: Service) -> Response:
    state, query, token = params(request)
    try:
        rows, next_token = status.list_jobs(service.store, state, query, PAGE_SIZE, token)
    except ValueError as exc:
        return page(pages.layout("Bad request", f"<h1>{pages.e(str(exc))}</h1>"), 400)
    return page(pages.list_page(rows, {**overview(service), "updated": _now()}, state, query, next_token))


@router.get("/fragments/jobs", include_in_schema=False)
def job_rows(request: Request, service: Service) -> JSONResponse:
    state, query, token = params(request)
    try:
        rows, _ = status.list_jobs(service.store, state, query, PAGE_SIZE, token)
    except ValueError as exc:
        return JSONResponse({"msg": str(exc), "status_code": 400}, status_code=400)
    counts = pages.counts_html(status.counts(service.store), state, query)
    return JSONResponse({"rows": pages.rows_html(rows), "counts": counts, "updated": _now()})


@router.get("/jobs/{job_id:path}", response_class=HTMLResponse, include_in_schema=False)
def job_page(job_id: str, service: Service) -> Response:
    record = service.store.get(job_id)
    if record is None:
        return page(pages.layout("Not found", f"<h1>No job {pages.e(job_id)}</h1>"), 404)
    job = status.detail(record)
    job["submitted_text"] = status.pretty(job["submitted"])
    return page(pages.job_page(job, csrf_for(job_id)))


@router.post("/jobs/{job_id:path}/cancel", include_in_schema=False)
async def cancel(job_id: str, request: Request, service: Service) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    if not hmac.compare_digest(form.get("csrf", [""])[0], csrf_for(job_id)):
        return page(pages.layout("Refused", "<h1>Cancel refused: stale form</h1>"), 403)
    try:
        record = service.cancel(job_id)
    except CancelNotRecorded as exc:
        return unavailable(f"cancel not recorded: {exc}", html=True)
    if record is None:
        return page(pages.layout("Not found", "<h1>No such job</h1>"), 404)
    return RedirectResponse("/jobs/" + quote(job_id, safe=""), status_code=303)


@router.get("/api/jobs", include_in_schema=False)
def api_jobs(request: Request, service: Service, limit: int = PAGE_SIZE) -> JSONResponse:
    state, query, token = params(request)
    try:
        rows, next_token = status.list_jobs(service.store, state, query, max(1, min(limit, 1000)), token)
    except ValueError as exc:
        return JSONResponse({"msg": str(exc), "status_code": 400}, status_code=400)
    return JSONResponse(
        {
            "jobs": [job.as_dict() for job in rows],
            "next_page_token": next_token,
            "counts": status.counts(service.store),
        }
    )


@router.get("/api/jobs/{job_id:path}", include_in_schema=False)
def api_job(job_id: str, service: Service) -> JSONResponse:
    record = service.store.get(job_id)
    if record is None:
        return JSONResponse({"msg": f"no job {job_id!r}"}, status_code=404)
    return JSONResponse(status.detail(record))


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_form() -> HTMLResponse:
    return page(pages.login_page())


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    token = parse_qs((await request.body()).decode("utf-8", "replace")).get("token", [""])[0]
    expected = getattr(request.app.state, "auth_token", None)
    if expected is None:
        return RedirectResponse("/", status_code=303)
    if not hmac.compare_digest(token.encode(), expected.encode()):
        return page(pages.login_page("That is not the token."), 401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        TOKEN_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return response


def page(content: str, status_code: int = 200) -> HTMLResponse:
    """Every HTML page: with its content security policy, never framed."""
    return HTMLResponse(content, status_code=status_code, headers=pages.PAGE_HEADERS)


def _now() -> str:
    return when(time.time()) + " UTC"
