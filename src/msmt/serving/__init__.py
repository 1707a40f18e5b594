"""HTTP scoring of a run directory: the shared base plus per-group personal blocks.

``request``: request validation generated from ``schema.json``; ``scorer``: encoding and
model backends (eager torch or onnxruntime); ``blocks``: lazily loaded personal blocks with an
LRU cache; ``app``: the FastAPI application. ``msmt serve`` (``msmt/commands/serve.py``) runs it
with uvicorn.
"""
