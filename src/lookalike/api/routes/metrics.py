"""GET /metrics for Prometheus, behind the read key unless LOOKALIKE_METRICS_PUBLIC."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lookalike.api.deps import METRICS, Service

router = APIRouter()


@router.get("/metrics", include_in_schema=False, dependencies=METRICS)
def metrics(state: Service) -> Response:
    # a plain function: the photo count gauge asks the catalog (a query) while the text is generated
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
