"""``RecsysClient`` (sync) and ``AsyncRecsysClient`` (asyncio) over httpx: one method per
endpoint, the same requests built once for both (``_Call``), typed answers (``client.types``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from client import types

T = TypeVar("T")
API_KEY_HEADER = "X-API-Key"
REQUEST_ID_HEADER = "X-Request-ID"
DEFAULT_URL = "http://127.0.0.1:8000"


class RecsysError(Exception):
    """A non-2xx answer: ``status``, the decoded error ``body`` (JSON, else text), the request
    id the service answered with, and ``code``/``detail`` when the body carries them."""

    def __init__(self, status: int, body: Any, method: str, url: str,
                 request_id: str | None = None):
        self.status, self.body, self.method, self.url = status, body, method, url
        self.request_id = request_id
        super().__init__(f"{method} {url} -> {status}: {self.detail!r}")

    @property
    def detail(self) -> Any:
        return self.body.get("detail", self.body) if isinstance(self.body, dict) else self.body

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request and how its answer is read."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: list[tuple[str, Any]] = field(default_factory=list)
    json: Any = None
    ok: tuple[int, ...] = ()  # non-2xx statuses that are answers, not errors


def _segment(value: str) -> str:
    return quote(value, safe="")


def _none(_body: Any) -> None:
    return None


def _recommend(user_id: str | None, k: int, exclude: Sequence[str], offset: int,
               history: Sequence[str] | None) -> _Call[types.Recommendation]:
    parse = types.Recommendation.model_validate
    if history is None and user_id is not None:  # GET: the cached, fastest path
        params = [("k", k), *(("exclude", item) for item in exclude)]
        if offset:
            params.append(("offset", offset))
        return _Call("GET", f"/recommend/{_segment(user_id)}", parse, params)
    body: dict[str, Any] = {"k": k, "exclude": list(exclude), "offset": offset,
                            "history": list(history or [])}
    if user_id is not None:
        body["user_id"] = user_id
    return _Call("POST", "/recommend", parse, json=body)


class _Calls:
    """The endpoints as ``_Call`` builders; each client runs them its own way."""

    @staticmethod
    def recommend(user_id, k, exclude, offset, history):
        return _recommend(user_id, k, exclude, offset, history)

    @staticmethod
    def items(offset: int, limit: int, q: str | None) -> _Call[types.ItemsPage]:
        params = [("offset", offset), ("limit", limit)] + ([("q", q)] if q else [])
        return _Call("GET", "/items", types.ItemsPage.model_validate, params)

    @staticmethod
    def item(item_id: str) -> _Call[types.ItemOut]:
        return _Call("GET", f"/items/{_segment(item_id)}", types.ItemOut.model_validate)

    @staticmethod
    def upsert_items(items: Sequence[Mapping[str, Any]]) -> _Call[types.ItemsOut]:
        return _Call("POST", "/items", types.ItemsOut.model_validate,
                     json={"items": [dict(item) for item in items]})

    @staticmethod
    def delete_item(item_id: str) -> _Call[None]:
        return _Call("DELETE", f"/items/{_segment(item_id)}", _none)

    @staticmethod
    def add_interaction(user_id: str, item_id: str,
                        ts: float | None) -> _Call[types.InteractionOut]:
        body: dict[str, Any] = {"user_id": user_id, "item_id": item_id}
        if ts is not None:
            body["ts"] = ts
        return _Call("POST", "/interactions", types.InteractionOut.model_validate, json=body)

    @staticmethod
    def history(user_id: str, limit: int) -> _Call[types.UserHistory]:
        return _Call("GET", f"/users/{_segment(user_id)}/history",
                     types.UserHistory.model_validate, [("limit", limit)])

    @staticmethod
    def ready() -> _Call[types.Ready]:
        return _Call("GET", "/readyz", types.Ready.model_validate, ok=(503,))

    @staticmethod
    def reload(bundle: str | None) -> _Call[types.ReloadOut]:
        return _Call("POST", "/admin/reload", types.ReloadOut.model_validate,
                     json={} if bundle is None else {"bundle": bundle})


def _headers(api_key: str | None, request_id: str | None) -> dict[str, str]:
    headers = {}
    if api_key is not None:
        headers[API_KEY_HEADER] = api_key
    if request_id is not None:
        headers[REQUEST_ID_HEADER] = request_id
    return headers


def _answer(call: _Call[T], response: httpx.Response) -> T:
    if response.is_success or response.status_code in call.ok:
        return call.parse(response.json() if response.content else None)
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    raise RecsysError(response.status_code, body, call.method, str(response.request.url),
                      response.headers.get(REQUEST_ID_HEADER))


class _Endpoints:
    """The public methods, written once: ``_run`` is sync in one client, async in the other."""

    def _run(self, call: _Call, request_id: str | None) -> Any:
        raise NotImplementedError

    def recommend(self, user_id: str | None = None, *, k: int = 20, exclude: Sequence[str] = (),
                  offset: int = 0, history: Sequence[str] | None = None,
                  request_id: str | None = None):
        """Top ``k`` for a user (GET /recommend/{id}), or for a history and/or user (POST
        /recommend) when ``history`` is given; ``offset`` pages, ``exclude`` drops items."""
        return self._run(_Calls.recommend(user_id, k, exclude, offset, history), request_id)

    def items(self, *, offset: int = 0, limit: int = 50, q: str | None = None,
              request_id: str | None = None):
        """A page of the live catalogue; ``q`` matches an id prefix or a title substring."""
        return self._run(_Calls.items(offset, limit, q), request_id)

    def item(self, item_id: str, *, request_id: str | None = None):
        return self._run(_Calls.item(item_id), request_id)

    def upsert_items(self, items: Sequence[Mapping[str, Any]], *,
                     request_id: str | None = None):
        """Items as the API takes them: ``{"item_id", "features": {...}}`` or ``{"item_id",
        "text"}`` (a text bundle)."""
        return self._run(_Calls.upsert_items(items), request_id)

    def delete_item(self, item_id: str, *, request_id: str | None = None):
        return self._run(_Calls.delete_item(item_id), request_id)

    def add_interaction(self, user_id: str, item_id: str, ts: float | None = None, *,
                        request_id: str | None = None):
        return self._run(_Calls.add_interaction(user_id, item_id, ts), request_id)

    def history(self, user_id: str, *, limit: int = 20, request_id: str | None = None):
        """The user's history as the service uses it, newest first."""
        return self._run(_Calls.history(user_id, limit), request_id)

    def ready(self, *, request_id: str | None = None):
        """GET /readyz, ready or not (a 503 is an answer here, not an error)."""
        return self._run(_Calls.ready(), request_id)

    def reload(self, bundle: str | None = None, *, request_id: str | None = None):
        return self._run(_Calls.reload(bundle), request_id)


class RecsysClient(_Endpoints):
    """Synchronous client. ``http``: an ``httpx.Client`` of your own (e.g. FastAPI's
    ``TestClient``), used as is with its base URL; otherwise one is made for ``base_url``."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None,
                 request_id: str | None = None, timeout: float = 10.0,
                 http: httpx.Client | None = None, transport: httpx.BaseTransport | None = None):
        self._headers = _headers(api_key, request_id)
        self._own = http is None
        self.http = http or httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def _run(self, call: _Call, request_id: str | None) -> Any:
        headers = {**self._headers, **_headers(None, request_id)}
        response = self.http.request(call.method, call.path, params=call.params or None,
                                     json=call.json, headers=headers)
        return _answer(call, response)

    def close(self) -> None:
        if self._own:
            self.http.close()

    def __enter__(self) -> RecsysClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AsyncRecsysClient(_Endpoints):
    """Asynchronous client (every method a coroutine); ``http``: an ``httpx.AsyncClient``
    of your own, e.g. with ``httpx.ASGITransport(app)``."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None,
                 request_id: str | None = None, timeout: float = 10.0,
                 http: httpx.AsyncClient | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        self._headers = _headers(api_key, request_id)
        self._own = http is None
        self.http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout,
                                              transport=transport)

    async def _run(self, call: _Call, request_id: str | None) -> Any:
        headers = {**self._headers, **_headers(None, request_id)}
        response = await self.http.request(call.method, call.path,
                                           params=call.params or None, json=call.json,
                                           headers=headers)
        return _answer(call, response)

    async def aclose(self) -> None:
        if self._own:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncRecsysClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()
