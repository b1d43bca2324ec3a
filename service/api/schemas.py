"""Request and response bodies, one schema per use (Create / Public / List)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from ..jobspec import DEVICE_PATTERN, STRICT, JobKind, JobSpec, LipschitzParams


class ModelPublic(BaseModel):
    """A model; ``id`` is its ``sha256`` on a server without keys, else one per key."""

    id: str
    sha256: str
    owner: str | None  # the id of the key that uploaded it
    filename: str
    size_bytes: int
    input_shape: list[int]
    output_shape: list[int]
    n_inputs: int
    n_outputs: int
    op_census: dict[str, int]
    n_parameters: int
    # false for a model the engine cannot import but onnxruntime runs: its jobs search for
    # counterexamples (or enumerate inputs read only as integers) on onnxruntime alone
    bounded: bool = True
    not_bounded_because: str | None = None
    created_at: datetime
    url: str


class ModelList(BaseModel):
    items: list[ModelPublic]
    total: int
    limit: int
    offset: int


class ErrorBody(BaseModel):
    """Every error answer: what is wrong, in words."""

    detail: str


class PropertyCreate(BaseModel):
    """Exactly one of ``vnnlib`` (VNN-LIB text) and ``json`` (the JSON property form)."""

    model_config = STRICT

    vnnlib: str | None = None
    json_spec: dict[str, Any] | list[Any] | None = Field(default=None, alias="json")

    @model_validator(mode="after")
    def _exactly_one(self) -> PropertyCreate:
        if (self.vnnlib is None) == (self.json_spec is None):
            raise ValueError('give the property as exactly one of "vnnlib" or "json"')
        return self

    @property
    def format(self) -> str:
        return "vnnlib" if self.vnnlib is not None else "json"

    @property
    def value(self) -> Any:
        return self.vnnlib if self.vnnlib is not None else self.json_spec


class JobOptions(BaseModel):
    """``timeout`` in seconds (at most the server's NNVERIFY_MAX_JOB_TIMEOUT), ``device``
    ``cpu``, ``cuda`` or ``cuda:N``, ``bab``: branch-and-bound after the bounds,
    ``methods``: bound methods in order (verify jobs)."""

    model_config = STRICT

    timeout: float = Field(default=60.0, gt=0)
    methods: list[str] | None = Field(default=None, max_length=16)
    device: str = Field(default="cpu", pattern=DEVICE_PATTERN)
    bab: bool = True


class LipschitzCreate(LipschitzParams):
    """A local Lipschitz job's parameters.  The region is ``center`` +- ``eps``, the box
    ``lower``/``upper``, or (neither given) the first input box of the job's ``property``,
    replaced by its centre +- ``eps`` when ``eps`` is given."""

    center: list[float] | None = None
    lower: list[float] | None = None
    upper: list[float] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> LipschitzCreate:
        if (self.lower is None) != (self.upper is None):
            raise ValueError('give both "lower" and "upper" for a box region')
        if self.center is not None and self.lower is not None:
            raise ValueError('give the region as "center" + "eps" or as "lower" + "upper", '
                             "not both")
        if self.center is not None and self.eps is None:
            raise ValueError('"center" needs "eps" (the half-width of the box)')
        if self.lower is not None and self.eps is not None:
            raise ValueError('"eps" goes with "center" or a property, not with a box')
        return self

    @property
    def has_region(self) -> bool:
        return self.center is not None or self.lower is not None

    def params(self) -> LipschitzParams:
        """What the job's spec keeps (the region's values go to its property record)."""
        return LipschitzParams.model_validate(
            self.model_dump(by_alias=True, exclude={"center", "lower", "upper"}))


class JobCreate(BaseModel):
    """``kind`` "verify" (default) needs a ``property``; "lipschitz" needs ``lipschitz``
    parameters with a region, or a ``property`` whose first input box is the region."""

    model_config = STRICT

    model_id: str = Field(max_length=64)
    kind: JobKind = "verify"
    property: PropertyCreate | None = None
    lipschitz: LipschitzCreate | None = None
    options: JobOptions = Field(default_factory=JobOptions)

    @model_validator(mode="after")
    def _fits_kind(self) -> JobCreate:
        if self.kind == "verify":
            if self.lipschitz is not None:
                raise ValueError('"lipschitz" parameters need "kind": "lipschitz"')
            if self.property is None:
                raise ValueError('a verify job needs a "property"')
            return self
        if self.lipschitz is None:
            self.lipschitz = LipschitzCreate()
        if self.lipschitz.has_region == (self.property is not None):
            raise ValueError('give the lipschitz region either in "lipschitz" ("center" + '
                             '"eps", or "lower" + "upper") or as a "property" (its first '
                             "input box), not both or neither")
        if self.options.methods:
            raise ValueError('"options.methods" applies to verify jobs only')
        return self

    def spec(self) -> JobSpec:
        """The job's typed specification (checked against the model and the server's
        limits by ``service.services.create_job``)."""
        return JobSpec(kind=self.kind, timeout=self.options.timeout, device=self.options.device,
                       bab=self.options.bab, methods=self.options.methods,
                       lipschitz=self.lipschitz.params() if self.lipschitz else None)


class ProgressPublic(BaseModel):
    stage: str
    elapsed: float
    domains_open: int = 0
    domains_done: int = 0
    lower_bound: float | None = None
    # lipschitz jobs: the bracket known so far
    lipschitz_lower: float | None = None
    lipschitz_upper: float | None = None


class JobPublic(BaseModel):
    id: str
    url: str
    kind: str
    owner: str | None  # the id of the key that created it
    model_id: str
    property_id: str
    state: str
    verdict: str | None
    message: str
    cancel_requested: bool
    options: dict[str, Any]
    progress: ProgressPublic | None
    result: dict[str, Any] | None
    certificate_url: str | None
    worker: str | None
    device: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    seconds: float | None


class JobList(BaseModel):
    items: list[JobPublic]
    total: int
    limit: int
    offset: int


ProofStatus = Literal["none", "checked", "rejected", "unavailable"]  # tables.PROOF_STATUSES


class ProofPublic(BaseModel):
    """What became of the proof of a verified result (``NNVERIFY_PROOFS``): ``checked``
    (the independent checker accepted it; download it at the certificate's ``proof_url``),
    ``rejected`` (it did not), ``unavailable`` (no proof found, or none possible: a JSON
    property, a model outside the checker's ops), ``none`` (none searched: proofs off, not
    a verified result); ``reason`` says why there is none."""

    status: ProofStatus
    reason: str
    checker: str | None  # the proof format the checker read: "nnverify-proof/1"
    leaves: int | None
    bytes: int | None
    search_seconds: float | None
    check_seconds: float | None


class CertificatePublic(BaseModel):
    """A certificate.  To check its proof yourself: ``nnverify check PROOF MODEL PROPERTY``
    with the files at ``proof_url``, ``model_file_url`` and ``property_url`` (the model's
    bytes and the property's text exactly as stored, whose sha256 the proof names)."""

    id: str
    job_id: str
    model_id: str
    verdict: str
    created_at: datetime
    certificate: dict[str, Any]
    property_id: str
    property_format: str
    property_url: str
    model_file_url: str
    proof: ProofPublic
    proof_url: str | None


class CertificateList(BaseModel):
    items: list[CertificatePublic]
    total: int
    limit: int
    offset: int


class Health(BaseModel):
    status: str
    database: dict[str, Any]
    queue: dict[str, Any]
    workers: int


ERROR_DESCRIPTIONS = {
    400: "Malformed request: a body that is not JSON (or not the multipart form), an upload "
         "that is not an ONNX model, or a Host header this server does not answer to.",
    401: "An API key is required (the server listens beyond loopback) and none was sent.",
    403: "The API key is invalid or has been revoked.",
    404: "No such object (another key's objects are not shown), or a certificate without "
         "a proof file (the message says why).",
    409: "Conflict with the object's state: cancelling a finished job, deleting a model "
         "with queued or running jobs, a model deleted while a job was created on it.",
    413: "The request body is larger than the upload limit (NNVERIFY_MAX_UPLOAD_MB).",
    422: "The request is well-formed but invalid: a field of the wrong type or out of range, "
         "a property or model the engine cannot use, options the server refuses.",
    503: "The job queue (or the database) is unavailable.",
}
AUTH_ERRORS = (400, 401, 403)  # any route but the health probes: Host check and the key


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries of these error statuses (body: ErrorBody)."""
    return {code: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[code]}
            for code in sorted(set(codes))}


def file_response(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entry of a 200 answered with a file."""
    schema = {"type": "string"} if media_type.startswith("text/") else \
        {"type": "string", "format": "binary"}
    return {200: {"description": description, "content": {media_type: {"schema": schema}}}}
