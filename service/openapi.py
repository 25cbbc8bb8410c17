"""The OpenAPI schema made true for the served bundle: its modalities, its ids as examples.

Every example in ``/docs`` succeeds against the served bundle and changes nothing a user would
miss: reads use the bundle's own ids; writes touch only ``docs-example-item`` (added by the
``POST /items`` example, removed by the ``DELETE /items/{item_id}`` one) and
``docs-example-user`` (the ``POST /interactions`` example: an event of no real user, on the
example item; the nightly retrain drops events on deleted items); the reload example reloads the
bundle ``RECSYS_BUNDLE`` names, the one served.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.schemas import FLOAT32_MAX

EXAMPLE_ITEM = "docs-example-item"
EXAMPLE_USER = "docs-example-user"
EXAMPLE_TEXT = "An example item added from the API docs #example #docs"
TAGS = [
    {"name": "recommend", "description": "Top-k items for a user or a fresh history."},
    {"name": "items", "description": "The catalogue: add, read, delete items."},
    {"name": "users", "description": "What the service knows of a user."},
    {"name": "interactions", "description": "Log what users did (the nightly retrain reads it)."},
    {"name": "health", "description": "Liveness, readiness and Prometheus metrics."},
    {"name": "admin", "description": "Operate the service (API key)."},
    {"name": "ui", "description": "What the page at `/ui` needs beside the API."},
]


def openapi_for_bundle(app: FastAPI) -> dict:
    """The OpenAPI schema made true for the served bundle, rebuilt when the bundle changes
    (generic before one is loaded): ``features`` has exactly the bundle's modalities with their
    dimensions, every id example of a read, nested ones included, is an id the bundle knows,
    and the writes' examples are the harmless ones of the module's docstring."""
    service = getattr(app.state, "service", None)
    model = service.model if service is not None else None
    version = model.version if model is not None else None
    if app.openapi_schema is not None and getattr(app.state, "openapi_version", 0) == version:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes, tags=TAGS)
    used = {tag for path in schema.get("paths", {}).values() for operation in path.values()
            if isinstance(operation, dict) for tag in operation.get("tags", [])}
    schema["tags"] = [tag for tag in TAGS if tag["name"] in used]
    if model is not None:
        users, items = model.bundle.user_ids[:1], model.bundle.item_ids[:2]
        _request_examples(schema, app, model, users, items)
        _bundle_examples(schema, {"item_42": items[:1], "user_7": users[:1]})
        features = {m.name: [0.0] * m.dim for m in model.modalities}
        number = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
        exact_features = {
            "type": "object", "additionalProperties": False, "required": list(features),
            "properties": {m.name: {"type": "array", "items": number,
                                    "minItems": m.dim, "maxItems": m.dim}
                           for m in model.modalities},
        }
        for name, component in schema.get("components", {}).get("schemas", {}).items():
            fields = component.get("properties", {})
            if name == "ItemIn":
                fields["features"] = {
                    "description": fields["features"].get("description", ""),
                    **exact_features, "examples": [features]}
                if model.text_tower is None:  # a feature bundle: features only, required
                    fields.pop("text", None)
                    component.pop("oneOf", None)
                    component["required"] = ["item_id", "features"]
            if name == "ItemsIn":  # the configured batch limit, not only the hard cap
                fields["items"]["maxItems"] = app.state.settings.max_batch
                # a repeated entry is refused; a repeated id with other features too (422),
                # which no JSON Schema keyword can say
                fields["items"]["uniqueItems"] = True
            examples = {"user_id": users, "history": [items], "exclude": [[]],
                        "item_id": items[:1]}
            if name in ("ItemIn", "InteractionIn"):  # the harmless write examples
                examples.update(item_id=[EXAMPLE_ITEM], user_id=[EXAMPLE_USER])
            if name == "ItemIn" and model.text_tower is not None:
                examples["text"] = [EXAMPLE_TEXT]
            if name == "ReloadIn":
                examples["bundle"] = [str(app.state.settings.bundle)]
            for field, example in examples.items():
                if field in fields and example:
                    fields[field]["examples"] = example
        for method_of in schema.get("paths", {}).values():
            for method, operation in method_of.items():
                for parameter in operation.get("parameters", []) if isinstance(operation,
                                                                                 dict) else []:
                    if parameter.get("name") == "user_id" and users:
                        parameter["example"] = users[0]
                    if parameter.get("name") == "item_id" and items:
                        parameter["example"] = EXAMPLE_ITEM if method == "delete" else items[0]
    app.openapi_schema, app.state.openapi_version = schema, version
    return schema


def _bundle_examples(node: object, replace: dict[str, list[str]]) -> None:
    """Replace the id types' generic examples (``item_42``, ``user_7``) everywhere in a schema."""
    if isinstance(node, dict):
        examples = node.get("examples")
        if (isinstance(examples, list) and len(examples) == 1 and isinstance(examples[0], str)
                and examples[0] in replace):
            node["examples"] = replace[examples[0]]
        for value in node.values():
            _bundle_examples(value, replace)
    elif isinstance(node, list):
        for value in node:
            _bundle_examples(value, replace)


def _request_examples(schema: dict, app: FastAPI, model: Any, users: list[str],
                      items: list[str]) -> None:
    """Named request-body examples, the first of which Swagger UI's "Try it out" sends."""
    item: dict[str, Any] = {"item_id": EXAMPLE_ITEM}
    if model.text_tower is not None:
        item["text"] = EXAMPLE_TEXT
    else:
        item["features"] = {m.name: [0.0] * m.dim for m in model.modalities}
    bodies = {
        ("/recommend", "post"): ("for_a_user", "A bundle user with a fresh history", {
            **({"user_id": users[0]} if users else {}), "history": items, "k": 10}),
        ("/items", "post"): ("example_item", "Add the example item", {"items": [item]},
                             f"Upserts `{EXAMPLE_ITEM}`, an item no user has seen; the example of "
                             f"`DELETE /items/{{item_id}}` removes it again."),
        ("/interactions", "post"): (
            "example_event", "An event of the example user on the example item",
            {"user_id": EXAMPLE_USER, "item_id": EXAMPLE_ITEM},
            f"Add `{EXAMPLE_ITEM}` first (the `POST /items` example). The event is durable and "
            "the nightly retrain reads the log, but it drops events on deleted items: delete "
            "the example item afterwards and nothing of it reaches training."),
        ("/admin/reload", "post"): (
            "served_bundle", "Reload the served bundle",
            {"bundle": str(app.state.settings.bundle)},
            "The folder RECSYS_BUNDLE names, the one served: the same version is loaded "
            "again and swapped in, users see no change (`{}` does the same)."),
    }
    for (path, method), (key, summary, value, *description) in bodies.items():
        operation = schema.get("paths", {}).get(path, {}).get(method, {})
        content = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if content is not None:
            example = {"summary": summary, "value": value}
            if description:
                example["description"] = description[0]
            content["examples"] = {key: example}
