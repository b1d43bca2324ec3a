"""A job's specification, typed from the request to the worker.

``JobSpec`` is built once from a checked request (``service.services.create_job``), stored
in the job's ``options`` column as JSON (``stored()``) and read back typed by the worker and
the Lipschitz code (``JobSpec.from_stored``), so no part of the service re-parses an
untyped dict of options.  The request schemas (``service.api.schemas``) reuse its parts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from verifier.verify import Settings

from .engine import engine_settings

JobKind = Literal["verify", "lipschitz"]
DEVICE_PATTERN = r"^(cpu|cuda(:[0-9]{1,3})?)$"
# every request number is checked strictly (no "60" for 60, no "yes" for true) and finite
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True)


class MonotonicityQuery(BaseModel):
    """Is ``y[output]`` non-decreasing in ``x[input]`` over the region?"""

    model_config = STRICT

    output: int = Field(ge=0, le=2**31)
    input: int = Field(ge=0, le=2**31)


class LipschitzParams(BaseModel):
    """A Lipschitz job's parameters apart from its region's values (those are the job's
    property record).  Outputs: every one (default), ``output``, or the rows of ``C``;
    ``norm`` "inf" bounds rows' l1 norms (the inf->inf operator norm), "2" their l2 norms;
    ``eps``: the region is the centre +- eps."""

    model_config = STRICT

    eps: float | None = Field(default=None, gt=0)
    norm: Literal["inf", "2"] = "inf"
    output: int | None = Field(default=None, ge=0, le=2**31)
    c_matrix: list[list[float]] | None = Field(default=None, alias="C", max_length=10_000)
    samples: int = Field(default=256, ge=0, le=100_000)
    attack_steps: int = Field(default=50, ge=0, le=10_000)
    seed: int = Field(default=0, ge=0, le=2**31)
    bab_seconds: float | None = Field(default=None, ge=0)
    monotonicity: list[MonotonicityQuery] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _one_output_selection(self) -> LipschitzParams:
        if self.output is not None and self.c_matrix is not None:
            raise ValueError('give at most one of "output" and "C"')
        return self

    def describe_outputs(self) -> str:
        if self.c_matrix is not None:
            return f"C ({len(self.c_matrix)} rows)"
        if self.output is not None:
            return f"output {self.output}"
        return "all outputs"


class JobSpec(BaseModel):
    """What a job computes and under which limits; ``lipschitz`` is set exactly for a
    Lipschitz job.  Stored as JSON in ``Job.options``."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    kind: JobKind = "verify"
    timeout: float = 60.0
    device: str = "cpu"
    bab: bool = True
    methods: list[str] | None = None
    lipschitz: LipschitzParams | None = None

    @model_validator(mode="after")
    def _params_fit_kind(self) -> JobSpec:
        if (self.kind == "lipschitz") != (self.lipschitz is not None):
            raise ValueError("a lipschitz job has lipschitz parameters, a verify job none")
        return self

    @classmethod
    def from_stored(cls, options: dict[str, Any]) -> JobSpec:
        """The spec of a stored job (jobs stored before kinds are verifications)."""
        return cls.model_validate(options)

    def stored(self) -> dict[str, Any]:
        """The JSON kept in ``Job.options`` (and shown as the job's ``options``)."""
        return self.model_dump(mode="json", by_alias=True)

    def engine_settings(self, device: str | None = None) -> Settings:
        """The engine's settings for a verify job; ``device`` (a worker's own) overrides
        the job's.  Raises ValueError for settings the engine refuses."""
        return engine_settings({"timeout": self.timeout, "bab": self.bab,
                                "device": self.device, "methods": self.methods}, device)

    @property
    def params(self) -> LipschitzParams:
        """The Lipschitz parameters (a Lipschitz job only)."""
        if self.lipschitz is None:
            raise ValueError("not a lipschitz job")
        return self.lipschitz
