"""One router a resource; handlers stay thin and call ``Recommender``.

Writes are plain ``def``: ONNX Runtime, FAISS and SQL calls block, so FastAPI runs them in its
thread pool. Recommendations are ``async``: the cache is asked on the event loop, and misses are
ranked in batches (see ``service.batching``).
"""

from fastapi import Response
from pydantic import BaseModel


def json_response(body: BaseModel, status_code: int = 200) -> Response:
    """Serialize with pydantic-core directly: FastAPI's generic encoder costs ~0.3 ms on a
    20-item list, more than a cached recommendation itself. ``response_model`` still
    documents the body."""
    return Response(body.model_dump_json(), status_code=status_code,
                    media_type="application/json")

BAD_BODY = {400: {"description": "The body cannot be parsed (not JSON, or not UTF-8)."}}
UNAUTHORIZED = {401: {"description": "Missing or wrong API key (X-API-Key)."}}
