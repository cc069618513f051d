"""Prometheus metrics: request latency per route, searches and indexed photos."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Receive, Scope, Send


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "lookalike_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.searches = Counter("lookalike_searches_total", "searches served", ["kind"], registry=self.registry)
        self.indexed = Counter("lookalike_indexed_images_total", "photos added", registry=self.registry)
        self.rejected = Counter("lookalike_rejected_files_total", "files rejected", registry=self.registry)
        self.images = Gauge("lookalike_images", "photos in the library", registry=self.registry)


# the methods a label may name: any other token a client sends is "other", or each made-up method (HTTP allows any
# token) would add a series kept for ever, growing the process and /metrics without bound (hostile probe)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def record(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.latency.labels(method, path, str(status["code"])).observe(
                time.perf_counter() - started
            )
