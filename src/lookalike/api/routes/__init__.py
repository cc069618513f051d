"""The service's endpoints, one ``APIRouter`` per part: search, uploads, images, jobs, library, health,
metrics, docs, the page's read cookie (session) and the page; ``app.create_app`` includes them in this order
(that of the OpenAPI document).

A handler that touches the catalog, the image store, files or a model is a plain ``def``: FastAPI runs it in
its thread pool, so the event loop keeps serving others. Only search and upload are ``async``, because they
read the request body first; they hand each blocking call to ``run_in_threadpool``.
"""
