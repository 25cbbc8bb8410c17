"""One router a resource; handlers stay thin and call ``RecommendationService``.

Writes are plain ``def``: ONNX Runtime, FAISS and SQL calls block, so FastAPI runs them in its
thread pool. Recommendations are ``async``: the cache is asked on the event loop, and misses are
ranked in batches (see ``service.batching``).
"""

BAD_BODY = {400: {"description": "The body cannot be parsed (not JSON, or not UTF-8)."}}
UNAUTHORIZED = {401: {"description": "Missing or wrong API key (X-API-Key)."}}
