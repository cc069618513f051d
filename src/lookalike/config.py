"""One typed settings object for the CLI, the library and the service.

Every field can be set from the environment with the ``LOOKALIKE_`` prefix
(``LOOKALIKE_HOME``, ``LOOKALIKE_MODELS_DIR`` ...), so the same library behaves
the same whichever front end opened it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lookalike"


class Settings(BaseSettings):
    """Lookalike configuration; the library directory (``home``) holds all state."""

    model_config = SettingsConfigDict(env_prefix="LOOKALIKE_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="library directory: catalog, images, vectors")
    models_dir: Path | None = Field(
        default=None, description="where model files are looked up and downloaded to (default: HOME/models)"
    )
    allow_download: bool = Field(default=True, description="fetch missing model files from their pinned address")
    model: str = Field(default="mobilenet_v2", description="embedding model name (see `lookalike models`)")

    # the catalog (source of truth) and how processes sharing it stay in step
    database_url: SecretStr | None = Field(
        default=None,
        description="catalog database: postgresql://user:password@host/db to share one library between processes "
        "and machines (default: SQLite file HOME/catalog.sqlite)",
    )
    database_schema: str | None = Field(default=None, description="PostgreSQL schema holding the library's tables")
    sync_interval: float = Field(
        default=0.5, gt=0, le=60, description="seconds between a service's looks at the catalog's change feed"
    )
    change_retention: float = Field(
        default=3600.0, ge=0, description="seconds the change feed is kept for processes that fell behind"
    )
    retire_grace: float = Field(
        default=30.0, ge=0, description="seconds a replaced vector collection is kept for readers still on it"
    )
    threads: int = Field(default=0, ge=0, description="inference threads per model instance (0: automatic)")
    blas_threads: int = Field(
        default=1,
        ge=0,
        le=256,
        description="threads numpy's BLAS may use (0: its own default); 1 leaves the cores to the model runtime",
    )
    switch_interval: float = Field(
        default=0.001, ge=0.0, le=1.0,
        description="seconds a Python thread may hold the interpreter before another gets a turn (0: Python's "
        "default, 5 ms); a search's helper thread and the search take turns often",
    )  # fmt: skip

    # subject detection
    detector: str = Field(default="nanodet_m", description="object detector: nanodet_m or yolo_onnx")
    yolo_onnx_path: Path | None = Field(default=None, description="your YOLO ONNX export (ultralytics layout)")
    detect_threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="minimum detection score")
    detect_iou: float = Field(default=0.5, gt=0.0, le=1.0, description="NMS IoU threshold")
    max_objects: int = Field(default=20, ge=1, le=1000, description="objects indexed per photo, best first")
    object_margin: float = Field(default=0.1, ge=0.0, le=1.0, description="crop margin around a box (fraction)")
    min_object_side: int = Field(default=24, ge=1, description="smaller boxes (in photo pixels) are not indexed")

    # ingest
    workers: int = Field(default=0, ge=0, description="decode workers (0: one per core)")
    batch_size: int = Field(default=32, ge=1, le=4096, description="images per embedding batch and catalog commit")
    thumbnail_size: int = Field(default=256, ge=16, le=4096, description="max side of stored thumbnails")
    thumbnail_quality: int = Field(default=70, ge=1, le=95, description="JPEG quality of stored thumbnails")
    keep_originals: bool = Field(
        default=False,
        description="copy local originals into the library (URLs and uploads are always kept)",
    )
    max_file_bytes: int = Field(default=100 * 2**20, ge=1, description="larger files are rejected")
    max_pixels: int = Field(default=80_000_000, ge=1, description="larger images are rejected (decompression bombs)")

    # videos (lookalike.ingest.video): each is one item, its chosen frames indexed like photos
    video_interval: float = Field(
        default=2.0, gt=0, le=3600, description="seconds between kept frames inside one scene, at most one per: 2 "
        "keeps a frame within 1 s of every moment of a pan (bench/RESULTS.md, \"Videos\")"
    )
    video_max_seconds: float = Field(default=4 * 3600.0, gt=0, description="longer videos are rejected")
    video_max_frames: int | None = Field(
        default=None,
        ge=1,
        description="videos with more frames to keep are rejected (default: one per second of "
        "LOOKALIKE_VIDEO_MAX_SECONDS, 14,400 for 4 h)",
    )
    video_max_pixels: int = Field(
        default=7680 * 4320, ge=1, description="videos with larger frames are rejected (decoding bombs)"
    )
    video_max_decoded: int = Field(
        default=2_000_000, ge=1, description="frames decoded per video, at most (absurd frame rates or counts)"
    )
    video_timeout: float = Field(default=1800.0, gt=0, description="wall-clock seconds one video may take to decode")
    video_chunk_seconds: float = Field(
        default=300.0, gt=0, description="index jobs split longer videos into ranges this long, for workers to share"
    )

    # URLs
    url_timeout: float = Field(default=15.0, gt=0, description="seconds per URL fetch")
    url_max_bytes: int = Field(default=30 * 2**20, ge=1, description="larger downloads are aborted")
    url_max_redirects: int = Field(default=5, ge=0, le=30)
    url_allow_private: bool = Field(
        default=False,
        description="allow fetching from private, loopback and link-local addresses (off: SSRF protection)",
    )

    # retrieval quality: the defaults were chosen by leave-one-set-out over the four shared sets
    # (bench/defaults.py; bench/RESULTS.md, "Retrieval defaults chosen across sets")
    whiten: bool = Field(default=True, description="PCA-whiten vectors, learned from the library itself")
    whiten_variance: float = Field(
        default=0.9, gt=0.0, le=1.0, description="whitening keeps the directions explaining this share of the variance"
    )
    whiten_max_dim: int = Field(default=512, ge=8, le=4096, description="dimensions kept by whitening, at most")
    whiten_min_photos: int = Field(default=256, ge=16, description="whitening is learned once this many photos exist")
    whiten_power: float = Field(default=0.25, ge=0.0, le=1.0, description="0: PCA only, 1: full whitening")
    whiten_shrink: float = Field(
        default=1.0, ge=0.0, le=100.0, description="added to each eigenvalue, times their mean, before the power"
    )
    whiten_auto_max: int = Field(
        default=100_000, ge=0, description="re-learn automatically (on 2x growth) only up to this many photos"
    )
    whiten_sample: int = Field(default=50_000, ge=256, description="photos a whitening is fitted on, at most")
    query_expansion: int = Field(default=1, ge=0, le=50, description="alpha-QE neighbours (0: off)")
    qe_alpha: float = Field(default=1.0, ge=0.0, le=10.0, description="alpha-QE weight exponent")
    rerank_depth: int = Field(
        default=50, ge=0, le=1000, description="k-reciprocal re-ranking of this many top candidates (0: off)"
    )
    rerank_k1: int = Field(default=10, ge=1, le=200, description="k-reciprocal neighbourhood size")
    rerank_k2: int = Field(default=6, ge=1, le=50, description="k-reciprocal local expansion size")
    copy_candidates: int = Field(
        default=20, ge=0, le=100,
        description="photos nearest the query by copy descriptor (the copy collection), with the global search's first "
        "3, judged for being the same picture or the same object: copies rank first, then photos of the same object. "
        "20 rather than 10: more covers and packages found in phone photos (bench/RESULTS.md, \"Candidates' features, "
        "stored\"), at no cost to searches that reach no candidate. "
        "0: the copy stage is off (no copy descriptors computed when indexing either)",
    )  # fmt: skip
    copy_views: bool = Field(
        default=True,
        description="also look for photos near parts of the query (its corners and centre, pooled from the copy "
        "model's pass, and its centre in pixels with a pass of its own) among the photos' whole and centre "
        "descriptors, so that a photo of an object in clutter reaches the object's clean photo",
    )
    keep_features: bool = Field(
        default=True,
        description="keep a photo's local features in the image store (39 KB) the first time geometry checks "
        "it, so that later checks, in any process, read them (one 39 KB read) instead of finding them again on "
        "its thumbnail (~8 ms of CPU). false: found again at every check, and nothing written",
    )
    copy_side: int = Field(
        default=160, ge=64, le=1024,
        description="shorter side the copy descriptor sees a photo at (changing it calls for `lookalike copies "
        "--recompute`)",
    )  # fmt: skip
    rerank_lambda: float = Field(default=0.5, ge=0.0, le=1.0, description="weight of the plain distance")

    # vector index
    vector_backend: str = Field(
        default="embedded",
        description="embedded; a Milvus URI (milvus-lite:///path/file.db, http(s)://host:19530, Zilliz Cloud); "
        "elasticsearch+http(s)://host:9200; or tcvectordb+http(s)://host:port (Tencent Cloud VectorDB)",
    )
    milvus_token: SecretStr | None = Field(default=None, description="Milvus / Zilliz Cloud token (user:password)")
    es_api_key: SecretStr | None = Field(default=None, description="Elasticsearch API key")
    tcvectordb_username: str = Field(default="root", description="Tencent Cloud VectorDB user")
    tcvectordb_key: SecretStr | None = Field(default=None, description="Tencent Cloud VectorDB API key")
    milvus_index: Literal["HNSW", "IVF_FLAT", "IVF_SQ8"] = Field(
        default="HNSW", description="index type of new Milvus collections (HNSW params above, IVF: nlist, ivf_nprobe)"
    )
    milvus_nlist: int = Field(default=4096, ge=1, le=65536, description="IVF cells of new Milvus collections")
    ann_threshold: int = Field(
        default=20_000,
        ge=0,
        description="libraries with at least this many vectors use HNSW instead of exact search",
    )
    # M=32, efC=200, ef=192: recall@10 ~0.97 at ~1 ms on 100k photo-like vectors (bench/RESULTS.md)
    hnsw_m: int = Field(default=32, ge=4, le=128)
    hnsw_ef_construction: int = Field(default=200, ge=8)
    hnsw_ef_search: int = Field(default=192, ge=8)
    # photo collections are dense; at 1M vectors IVF keeps recall@10 >= 0.95 where HNSW cannot (bench/RESULTS.md)
    ivf_threshold: int = Field(
        default=200_000, ge=0, description="libraries with at least this many vectors use IVF (faiss); 0: never"
    )
    ivf_nprobe: int = Field(default=32, ge=1, le=4096, description="IVF cells scanned per query")
    ivf_storage: Literal["float32", "float16", "int8"] = Field(
        default="float16", description="how the IVF tier stores vectors (float16: half the memory, same recall)"
    )

    # photo storage
    image_store: str = Field(
        default="local", description="where thumbnails and kept originals live: local, or s3://bucket/prefix"
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3 endpoint (MinIO, Ceph, SeaweedFS; none: AWS)")
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    s3_presign: bool = Field(default=False, description="serve S3-stored images by redirecting to presigned URLs")

    # index jobs (durable, in the catalog database; run by `lookalike worker` processes or the service)
    serve_worker: bool = Field(
        default=True, description="run an index worker inside `lookalike serve` (off when worker processes do it)"
    )
    job_chunk: int = Field(default=256, ge=1, le=100_000, description="sources per index task of a job")
    job_lease: float = Field(
        default=60.0, gt=0, le=3600, description="seconds a worker holds a task without renewing before another"
    )
    upload_wait: float = Field(
        default=120.0, ge=0, le=3600, description="seconds an upload request waits for its job (then 202 + job)"
    )

    # HTTP service
    max_upload_bytes: int = Field(default=20 * 2**20, ge=1, description="larger request bodies get 413")
    video_upload_max_bytes: int = Field(
        default=2**30, ge=1,
        description="an uploaded video (POST /api/v1/images) may be this large; a body of uploads this large is "
        "taken there (each photo in it still at most max_upload_bytes)",
    )  # fmt: skip
    api_key: SecretStr | None = Field(default=None, description="when set, write endpoints need header X-API-Key")
    api_key_for_reads: bool = Field(
        default=True,
        description="with an API key, reads need it too (searches, photos, stats, docs, OpenAPI, metrics), whatever "
        "the address and however the app is served; false opens reads to anyone who can connect (no effect without "
        "a key)",
    )
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS (JSON list)")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="names the service is reached by (JSON list; '*': any): without an API key, other Host names "
        "are refused (DNS rebinding); IP addresses and localhost are always allowed",
    )
    source_roots: list[str] = Field(
        default_factory=list,
        description="folders (and s3:// prefixes) HTTP callers may index (JSON list); empty: none. The CLI, "
        "run by the machine's own user, is not limited by it",
    )
    allow_anonymous: bool = Field(
        default=False, description="let `serve` on a non-loopback address run without an API key"
    )
    metrics_public: bool = Field(default=False, description="serve /metrics without the API key (for scrapers)")
    max_concurrent_decodes: int = Field(
        default=0, ge=0, le=256,
        description="query photos decoded at once by the service (0: sixteen per core; their memory is bounded "
        "by max_decode_memory, and a lower count only makes small queries wait behind huge ones)",
    )  # fmt: skip
    max_decode_memory: int = Field(
        default=1 << 30, ge=1 << 20,
        description="bytes all photo decodes of the service may hold at once, counted by mode and bit depth; "
        "a photo that alone needs more is refused (413)",
    )  # fmt: skip
    decode_wait: float = Field(default=30.0, gt=0, le=600, description="seconds a query waits to be decoded: 503")
    max_connections: int = Field(
        default=1024, ge=1, le=100_000,
        description="open HTTP connections; beyond, the longest-idle one is closed to make room",
    )  # fmt: skip
    max_requests: int = Field(default=64, ge=1, le=100_000, description="HTTP requests in progress; beyond: 503")
    header_timeout: float = Field(
        default=10.0, gt=0, le=600, description="seconds a connection has to send a full request head: then closed"
    )
    body_timeout: float = Field(
        default=30.0, gt=0, le=3600, description="seconds a request body may go without a new piece: then 408, closed"
    )
    body_min_rate: int = Field(
        default=500, ge=0, le=1 << 30,
        description="bytes a second a request body must average after body_timeout's grace (Apache mod_reqtimeout's "
        "MinRate; a body trickled a byte at a time held its place among the requests for ever): then 408; 0: none",
    )  # fmt: skip

    @field_validator("home", "models_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @property
    def catalog_url(self) -> str:
        """The configured database, or the SQLite file in the library directory."""
        url = self.database_url
        if url is not None:  # a plain string when set by model_copy (no validation there)
            return url.get_secret_value() if isinstance(url, SecretStr) else str(url)
        return f"sqlite:///{self.home / 'catalog.sqlite'}"

    @property
    def reads_need_key(self) -> bool:
        """A key is set and reads need it too (LOOKALIKE_API_KEY_FOR_READS): the read guard, private caching."""
        return self.api_key is not None and self.api_key_for_reads

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.home / "models"

    @property
    def resolved_decodes(self) -> int:
        return self.max_concurrent_decodes or 16 * max(1, os.cpu_count() or 1)

    @property
    def resolved_workers(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)
