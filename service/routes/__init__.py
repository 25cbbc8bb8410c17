"""One router a resource; handlers stay thin and call ``Recommender``.

Handlers are plain ``def``: FAISS, ONNX Runtime, SQL and Redis calls block, so FastAPI runs
them in its thread pool instead of on the event loop.
"""
