"""`llmbatch dashboard`: a read-only web page over the store, on the starlette stack the
emulator uses. One page (static HTML, JS and the vendored uPlot chart: nothing from the
internet) reads small JSON views and updates itself every few seconds.

- The store's figures (counts the store keeps, costs, budgets, held requests' reasons) come
  from the same `FigureCache` as /metrics (read again in the background, so a page on a
  million requests stays fast); batches, events and failures are read live (small, indexed
  reads).
- Localhost by default. Any other address needs `LLMBATCH_DASHBOARD_TOKEN`: sent as
  `Authorization: Bearer TOKEN`, or once as `/?token=TOKEN`, which sets an HttpOnly cookie.
- Keys are never in the store, so never here; request and response bodies only in the view
  of one request, when the user opens it (`bodies=1`).
- A store that stops answering is a 503 with one line, which the page shows as a banner.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from llmbatch import defaults, views
from llmbatch.budget import ALL_QUEUES
from llmbatch.errors import ConfigError, LlmbatchError
from llmbatch.observe.figures import FigureCache, Figures
from llmbatch.progress import batch_eta, snapshot
from llmbatch.states import REQUEST_STATES
from llmbatch.store.base import Store
from llmbatch.store.types import Count

TOKEN_ENV = "LLMBATCH_DASHBOARD_TOKEN"
COOKIE = "llmbatch_dashboard"
STATIC = resources.files("llmbatch.observe").joinpath("static")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
MAX_ID = 512  # a custom_id search longer than this finds nothing (the store has none)


def is_local(host: str) -> bool:
    """Whether `host` only serves this machine (loopback names and addresses)."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback
                for info in socket.getaddrinfo(host, None)
            )
        except (OSError, ValueError):
            return False


def check_host(host: str, token: str | None) -> None:
    """A dashboard other machines can reach needs a token; one line if it has none."""
    if not is_local(host) and not token:
        raise ConfigError(
            f"--host {host} serves other machines: set {TOKEN_ENV} to a long random token "
            "first (the page then asks for it), or keep the default 127.0.0.1"
        )


class Views:
    """The JSON the page reads, over one store."""

    def __init__(self, store: Store, figures: FigureCache, clock: Callable[[], float] = time.time):
        self.store = store
        self.figures = figures
        self.clock = clock

    def overview(self) -> dict[str, Any]:
        now = self.clock()
        f = self.figures.get()
        counts = counts_of(f)
        snap = snapshot(self.store, None, counts)
        etas = [batch_eta(b) for b in snap.batches]
        eta_at = views.queue_eta(snap, now)
        batches = views.batch_records(self.store.batch_overview(10), snap.batches, now)
        lease = f.observed.lease
        risks = f.deadlines().values()
        missed, at_risk = sum(m for m, _ in risks), sum(r for _, r in risks)
        return {
            "store": self.store.location,
            "now": now,
            "figures": {
                "at": f.at,
                "took_ms": round(f.took_s * 1000, 1),
                "error": f.error,
            },
            "states": [s for s in REQUEST_STATES],
            "grid": views.count_records(counts) if counts else [],
            "progress": {
                "total": snap.total,
                "done_at_provider": snap.done,
                "read_back": snap.read_back,
                "eta_s": None if eta_at is None else round(max(0.0, eta_at - now)),
                "eta_at": eta_at,
                "unknown_etas": sum(1 for e in etas if e is None),
            },
            "batches": [_jsonable(b) for b in batches],
            "budgets": [_budget(b) for b in f.budgets],
            "held": [{"reason": r, "count": n} for r, n in f.held],
            "deadlines": {"missed": missed, "at_risk": at_risk},
            "events": [_jsonable(e) for e in self.store.recent_events(15)],
            "failures": [_jsonable(x) for x in self.store.recent_failures(10)],
            "lease": None
            if lease is None
            else {
                "holder": lease.holder,
                "live": lease.expires_at > now,
                "expires_in_s": round(lease.expires_at - now, 1),
            },
        }

    def costs(self) -> dict[str, Any]:
        f = self.figures.get()
        days = []
        for day in sorted(f.days):
            p = f.days[day]
            days.append(
                {
                    "day": datetime.fromtimestamp(day * 86400, UTC).date().isoformat(),
                    "at": day * 86400,
                    "requests": p.requests,
                    "batch_usd": str(p.batch_usd),
                    "realtime_usd": str(p.realtime_usd),
                    "saved_usd": str(p.realtime_usd - p.batch_usd),
                    "unpriced": p.unpriced,
                }
            )
        batch = sum((p.batch_usd for p in f.days.values()), Decimal(0))
        real = sum((p.realtime_usd for p in f.days.values()), Decimal(0))
        return {
            "days": days,
            "total": {
                "batch_usd": str(batch),
                "realtime_usd": str(real),
                "saved_usd": str(real - batch),
            },
        }

    def request(self, custom_id: str, queue: str | None, bodies: bool) -> dict[str, Any]:
        # a NUL cannot be stored (PostgreSQL refuses it in text): nothing can match it
        if not custom_id or len(custom_id) > MAX_ID or "\x00" in custom_id + (queue or ""):
            return {"custom_id": custom_id[:MAX_ID], "found": []}
        found = []
        for req in self.store.request_detail(custom_id, queue or None):
            found.append(_request(req, bodies))
        return {"custom_id": custom_id, "found": found}

    def batch(self, batch_id: int) -> dict[str, Any]:
        return {"id": batch_id, "events": [_jsonable(e) for e in self.store.batch_events(batch_id)]}


def counts_of(f: Figures) -> list[Count]:
    """The store's counts as `Store.counts` gives them, from the figures."""
    rows = sorted(f.observed.requests, key=lambda r: (r.queue, r.provider, r.model, r.state))
    return [Count(r.queue, r.provider, r.model, r.state, r.n) for r in rows]


def _budget(b: Any) -> dict[str, Any]:
    limit, committed = Decimal(b.limit_micro) / 10**6, Decimal(b.committed) / 10**6
    return {
        "queue": "all queues" if b.queue == ALL_QUEUES else b.queue,
        "period": b.period,
        "limit_usd": str(limit),
        "committed_usd": str(committed),
        "remaining_usd": str(max(Decimal(0), limit - committed)),
        "pct": float(round(committed / limit * 100, 1)) if limit else None,
    }


def _text(v: bytes | memoryview | None) -> str | None:
    return None if v is None else bytes(v).decode("utf-8", "replace")


def _request(req: dict[str, Any], bodies: bool) -> dict[str, Any]:
    out = {k: v for k, v in req.items() if k not in ("body", "result", "attempts")}
    out["body_bytes"] = len(req["body"])
    out["attempts"] = [_jsonable(a) for a in req["attempts"]]
    result = req.get("result")
    if result is not None:
        result = dict(result)
        body = result.pop("body", None)
        result["body_bytes"] = None if body is None else len(bytes(body))
        if bodies:
            result["body"] = _text(body)
        result = _jsonable(result)
    out["result"] = result
    if bodies:
        out["body"] = _text(req["body"])
    return _jsonable(out)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, bytes | memoryview):
            v = bytes(v).hex()
        elif isinstance(v, Decimal):
            v = str(v)
        out[k] = v
    return out


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data, default=str), status_code=status, media_type="application/json"
    )


Handler = Callable[[Request], Awaitable[Response]]


class Guard(BaseHTTPMiddleware):
    """The token check (when one is set) and the headers every answer carries."""

    def __init__(self, app: Any, token: str | None) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: Handler) -> Response:
        if self.token:
            given = request.query_params.get("token")
            if given is not None and request.url.path == "/":
                if not hmac.compare_digest(given.encode(), self.token.encode()):
                    return _refused()
                response: Response = RedirectResponse("/", status_code=303)
                response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
                return _headers(response)
            header = request.headers.get("authorization", "")
            sent = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
            sent = sent or request.cookies.get(COOKIE)
            if sent is None or not hmac.compare_digest(sent.encode(), self.token.encode()):
                return _refused()
        return _headers(await call_next(request))


def _refused() -> Response:
    text = (
        "llmbatch dashboard: a token is required. Open /?token=TOKEN once (the value of "
        f"{TOKEN_ENV} where the dashboard runs), or send Authorization: Bearer TOKEN.\n"
    )
    return _headers(Response(text, status_code=401, media_type="text/plain; charset=utf-8"))


def _headers(response: Response) -> Response:
    response.headers["content-security-policy"] = CSP
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "no-referrer"
    response.headers["cache-control"] = "no-store"
    return response


def create_app(
    store: Store, *, token: str | None = None, max_age: float = defaults.DASHBOARD_MAX_AGE_S
) -> Starlette:
    """The dashboard over `store`: its figures read again in the background once `max_age`
    seconds old, or five times what the last read took (on a big store, a scan of the
    requests must not run back to back)."""
    data = Views(store, FigureCache(store, max_age=max_age, pace=5.0, held_reasons=True))

    def guarded(view: Callable[[Request], Any]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            try:
                return _json(view(request))
            except LlmbatchError as exc:
                # the store went away or refused: one line for the page's banner
                return _json({"error": str(exc).splitlines()[0][:300]}, status=503)

        return endpoint

    def index(_request: Request) -> Response:
        return FileResponse(str(STATIC.joinpath("index.html")), media_type="text/html")

    def request_view(request: Request) -> Any:
        q = request.query_params
        return data.request(q.get("custom_id", ""), q.get("queue"), q.get("bodies") == "1")

    def batch_view(request: Request) -> Any:
        raw = request.path_params["batch_id"]
        if not raw.isdigit() or not 0 < int(raw) < 2**63:  # what an id column can hold
            return {"id": None, "events": []}
        return data.batch(int(raw))

    routes = [
        Route("/", index),
        Route("/api/overview", guarded(lambda _r: data.overview())),
        Route("/api/costs", guarded(lambda _r: data.costs())),
        Route("/api/request", guarded(request_view)),
        Route("/api/batch/{batch_id}", guarded(batch_view)),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Guard, token=token)])
    app.state.views = data
    return app


def serve(store: Store, host: str, port: int, token: str | None, *, announce: bool = True) -> None:
    """Serve the dashboard until interrupted; says where once the port is bound."""
    import uvicorn

    from llmbatch.emulator.server import bind

    check_host(host, token)
    sock = bind(host, port)
    try:
        app = create_app(store, token=token)
        app.state.views.figures.get()  # the first read before serving: the first page is fast
        bound = sock.getsockname()[1]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        if announce:
            print(
                f"llmbatch dashboard at http://{shown}:{bound}/ over {store.location}", flush=True
            )
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        server.run(sockets=[sock])
    finally:
        sock.close()
