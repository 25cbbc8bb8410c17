"""The OpenAPI schema made true for the served bundle: its modalities, its ids as examples."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.schemas import FLOAT32_MAX


def openapi_for_bundle(app: FastAPI) -> dict:
    """The OpenAPI schema made true for the served bundle, rebuilt when the bundle changes
    (generic before one is loaded): ``features`` has exactly the bundle's modalities with their
    dimensions, and every id example, nested ones included, is an id the bundle knows (a
    delete's example is the last item, so the other examples keep theirs)."""
    service = getattr(app.state, "service", None)
    model = service.model if service is not None else None
    version = model.version if model is not None else None
    if app.openapi_schema is not None and getattr(app.state, "openapi_version", 0) == version:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    if model is not None:
        users, items = model.bundle.user_ids[:1], model.bundle.item_ids[:2]
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
                        "item_id": ["new-item-1"] if name == "ItemIn" else items[:1]}
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
                        last = model.bundle.item_ids[-1]
                        parameter["example"] = last if method == "delete" else items[0]
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
