"""Request and response bodies, one schema per use (Create / Public / List)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelPublic(BaseModel):
    id: str
    sha256: str
    filename: str
    size_bytes: int
    input_shape: list[int]
    output_shape: list[int]
    n_inputs: int
    n_outputs: int
    op_census: dict[str, int]
    n_parameters: int
    created_at: datetime
    url: str


class ModelList(BaseModel):
    items: list[ModelPublic]
    total: int


class PropertyCreate(BaseModel):
    """Exactly one of ``vnnlib`` (VNN-LIB text) and ``json`` (the JSON property form)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

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
    model_config = ConfigDict(extra="forbid")

    timeout: float = Field(default=60.0, gt=0)
    methods: list[str] | None = None
    device: str = "cpu"
    bab: bool = True


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str
    property: PropertyCreate
    options: JobOptions = Field(default_factory=JobOptions)


class ProgressPublic(BaseModel):
    stage: str
    elapsed: float
    domains_open: int = 0
    domains_done: int = 0
    lower_bound: float | None = None


class JobPublic(BaseModel):
    id: str
    url: str
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


class CertificatePublic(BaseModel):
    id: str
    job_id: str
    model_id: str
    verdict: str
    created_at: datetime
    certificate: dict[str, Any]


class CertificateList(BaseModel):
    items: list[CertificatePublic]
    total: int


class Health(BaseModel):
    status: str
    database: dict[str, Any]
    queue: dict[str, Any]
    workers: int
