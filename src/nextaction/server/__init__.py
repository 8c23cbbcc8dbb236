"""The prediction service: an HTTP API (FastAPI on uvicorn) over live events kept in an embedded store.

``store.py`` keeps events (SQLite by default, behind the :class:`~nextaction.server.store.EventStore`
protocol); ``app.py`` holds the routes, which stay thin and call :class:`~nextaction.predictor.Predictor`.
"""
