"""The memory served to other programs over HTTP: a REST API on FastAPI + uvicorn (`vsalmonn serve`).

A face of the root layer (docs/architecture.md): it builds its objects through `vsalmonn.app` and reads only
through `MemoryView`, so a server in another process than the daemon answers from the same committed
checkpoints. This package's root imports nothing heavy: the settings import its `config` module.
"""
