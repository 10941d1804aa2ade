"""Real-time early warning: a store of users' events, scoring as events arrive, alerts, a sweep.

`store.Store` holds the state (SQLite or PostgreSQL), `service.RiskService` does each
request's work through the batch pipeline's one scoring path, `app.create_app` serves it
over HTTP (FastAPI); scripts/serve.py starts it and scripts/replay.py streams a log into it.
"""
