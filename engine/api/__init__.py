"""The public API: the Engine, tasks and triggering, the runs, queues, waitpoints and
workers APIs, realtime subscriptions, and what a running task sees (its context and the
seam to durable calls). It builds on engine.db; it never imports the worker runtime but
in `Engine.worker()`, the one lazy import API.md allows."""
