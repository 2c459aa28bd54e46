"""``/lb-status``: the operator's page (HAProxy's stats page, Traefik's dashboard), served by
the load balancer itself, for clients in ``LB_ADMIN_ALLOW`` only (``service.access``).

``/lb-status`` is the page, ``/lb-status/<asset>`` its script, stylesheet and icon, and
``/lb-status/data`` the JSON it polls every 2 s (``service.status_page``). The page may load
nothing from anywhere else: its Content-Security-Policy says so to the browser.
"""

from __future__ import annotations

import time

import orjson
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, raw, redirect

from service.access import admin_only
from service.errors import LoadBalancerError, error_response
from service.stats import build_report
from service.status_page import load_assets, status_document
from service.logs import answered_here

bp = Blueprint("status")

ASSETS = load_assets()
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}


class NoSuchAsset(LoadBalancerError):
    status = 404
    error = "not found"


def _asset(name: str) -> HTTPResponse:
    asset = ASSETS.get(name)
    if asset is None or name == "index.html":
        return error_response(NoSuchAsset(f"/lb-status/{name} is not a part of the status page"))
    return raw(asset.body, content_type=asset.content_type, headers=PAGE_HEADERS)


@bp.get("/lb-status")
@answered_here
@admin_only
async def page(request: Request) -> HTTPResponse:
    asset = ASSETS["index.html"]
    return raw(asset.body, content_type=asset.content_type, headers=PAGE_HEADERS)


@bp.get("/lb-status/", strict_slashes=True, name="page_slash")
@answered_here
@admin_only
async def page_slash(request: Request) -> HTTPResponse:
    """The page has one address: its assets are named from the root, not relative to it."""
    return redirect("/lb-status", status=308)


@bp.get("/lb-status/data")
@answered_here
@admin_only
async def data(request: Request) -> HTTPResponse:
    lb = request.app.ctx.lb
    report = await build_report(lb, history=True)
    return raw(
        orjson.dumps(status_document(report, time.time(), lb.show.panels)),
        content_type="application/json",
        headers={"cache-control": "no-store"},
    )


@bp.get("/lb-status/<name:str>")
@answered_here
@admin_only
async def asset(request: Request, name: str) -> HTTPResponse:
    return _asset(name)
