"""`qface serve`: a REST API and a web page in front of one shared model.

    from qface.serve.app import create_app
    from qface.serve.settings import Settings
    app = create_app(Settings(api_key="secret"))     # any ASGI server; `qface serve` runs uvicorn

`settings` (every limit, no web dependency), `form` (multipart parsing in memory), `batcher` (the bounded queue and
the worker that batches requests through the network), `app` (routes, errors, the page in `static/`).
This package's `__init__` imports nothing, so the CLI can read the settings without FastAPI installed.
"""
