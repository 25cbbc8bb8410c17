"""Run every example of ``/openapi.json`` as Swagger UI's "Try it out" would send it, and take a
snapshot of what users see, to compare before and after (shared by the in-process docs test and
the browser test against a live server; ``client`` is any httpx-like client)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

ORDER = {"get": 0, "post": 1, "put": 1, "patch": 1, "delete": 2}
# writes in the order a reader of /docs follows: the example item exists before an event on
# it, and is deleted last
PATHS = {"/recommend": 0, "/items": 1, "/interactions": 2, "/admin/reload": 3}


def _example(parameter: dict[str, Any]) -> Any:
    if "example" in parameter:
        return parameter["example"]
    named = parameter.get("examples")
    if isinstance(named, dict) and named:
        return next(iter(named.values())).get("value")
    listed = parameter.get("schema", {}).get("examples")
    return listed[0] if isinstance(listed, list) and listed else None


def example_requests(schema: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """``(method, url, json body or None)`` of every operation, reads first, then the writes in
    the order above, deletes last. A required parameter or body without an example fails."""
    requests = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if method not in ORDER:
                continue
            url, query = path, []
            for parameter in operation.get("parameters", []):
                value = _example(parameter)
                if value is None:
                    assert not parameter.get("required"), (method, path, parameter["name"])
                    continue
                if parameter["in"] == "path":
                    url = url.replace(f"{{{parameter['name']}}}", quote(str(value), safe=""))
                elif parameter["in"] == "query":
                    values = value if isinstance(value, list) else [value]
                    query += [f"{parameter['name']}={quote(str(v), safe='')}" for v in values]
            body = None
            if "requestBody" in operation:
                content = operation["requestBody"]["content"]["application/json"]
                examples = content.get("examples") or {}
                assert examples or not operation["requestBody"].get("required"), (method, path)
                body = next(iter(examples.values()))["value"] if examples else None
            url += f"?{'&'.join(query)}" if query else ""
            requests.append((method, url, body))
    requests.sort(key=lambda r: (ORDER[r[0]], PATHS.get(r[1].split("?")[0], 9)))
    return requests


def run_examples(client: Any, schema: dict[str, Any],
                 headers: dict[str, str]) -> list[tuple[str, str, int]]:
    """Send them all; returns ``(method, url, status)`` of each."""
    done = []
    for method, url, body in example_requests(schema):
        kwargs = {"json": body} if body is not None else {}
        response = client.request(method.upper(), url, headers=headers, **kwargs)
        done.append((method.upper(), url, response.status_code))
    return done


def snapshot(client: Any, users: list[str], items: list[str]) -> dict[str, Any]:
    """What a user would miss if it changed: every user's list (ids and scores) and history,
    every catalogue item, the served version and the index size."""
    ready = client.get("/readyz").json()
    lists, histories = {}, {}
    for user in users:
        body = client.get(f"/recommend/{user}?k=20").json()
        lists[user] = [(e["item_id"], round(e["score"], 5)) for e in body["items"]]
        response = client.get(f"/users/{user}/history?limit=20")
        histories[user] = response.json() if response.status_code == 200 else None
    catalogue = {item: client.get(f"/items/{item}").status_code for item in items}
    return {"version": ready["model_version"], "index_items": ready["index_items"],
            "lists": lists, "histories": histories, "items": catalogue}
