"""Request and response bodies, one schema per use (Create / Public / List)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

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


class MonotonicityQuery(BaseModel):
    """Is ``y[output]`` non-decreasing in ``x[input]`` over the region?"""

    model_config = ConfigDict(extra="forbid")

    output: int = Field(ge=0)
    input: int = Field(ge=0)


class LipschitzCreate(BaseModel):
    """A local Lipschitz job's parameters.  The region is ``center`` +- ``eps``, the box
    ``lower``/``upper``, or (neither given) the first input box of the job's ``property``,
    replaced by its centre +- ``eps`` when ``eps`` is given.  Outputs: every one (default),
    ``output``, or the rows of ``C``.  ``norm`` "inf" bounds rows' l1 norms (the inf->inf
    operator norm), "2" their l2 norms."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    center: list[float] | None = None
    eps: float | None = Field(default=None, gt=0)
    lower: list[float] | None = None
    upper: list[float] | None = None
    norm: Literal["inf", "2"] = "inf"
    output: int | None = Field(default=None, ge=0)
    c_matrix: list[list[float]] | None = Field(default=None, alias="C")
    samples: int = Field(default=256, ge=0, le=100_000)
    attack_steps: int = Field(default=50, ge=0, le=10_000)
    seed: int = Field(default=0, ge=0)
    bab_seconds: float | None = Field(default=None, ge=0)
    monotonicity: list[MonotonicityQuery] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _consistent(self) -> LipschitzCreate:
        if self.output is not None and self.c_matrix is not None:
            raise ValueError('give at most one of "output" and "C"')
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

    def stored(self) -> dict[str, Any]:
        """What the job's options keep (the region's values go to its property record)."""
        return self.model_dump(by_alias=True, exclude={"center", "lower", "upper"})


class JobCreate(BaseModel):
    """``kind`` "verify" (default) needs a ``property``; "lipschitz" needs ``lipschitz``
    parameters with a region, or a ``property`` whose first input box is the region."""

    model_config = ConfigDict(extra="forbid")

    model_id: str
    kind: Literal["verify", "lipschitz"] = "verify"
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
