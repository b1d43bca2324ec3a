"""A Python client for the nnverify service: upload a model, submit a job, follow it to its
verdict, list results, fetch certificates.

::

    from service.client import Client

    with Client("http://127.0.0.1:8000", api_key=None) as nnv:   # or NNVERIFY_URL / _API_KEY
        model = nnv.upload_model("examples/tiny_classifier.onnx")
        job = nnv.submit(model.id, "examples/tiny_robustness.vnnlib", timeout=60)
        job = nnv.wait(job.id, on_progress=lambda j: print(j.state, j.elapsed))
        print(job.verdict, nnv.certificate(job.id))

Every refusal of the server raises :class:`ServiceError` carrying its HTTP status and the
server's own message; an unreachable server raises :class:`Unreachable`.  ``wait`` follows
the job's server-sent events (``GET /api/v1/jobs/{id}/events``) and falls back to polling
with backoff where the server has no event stream.  Only httpx is needed: the module does
not import the engine, so a client machine needs no torch.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .settings import ClientSettings

API_PREFIX = "/api/v1"
API_KEY_HEADER = "X-API-Key"
FINISHED_STATES = frozenset({"succeeded", "failed", "cancelled"})
STREAM_READ_TIMEOUT = 60.0  # the server sends a keep-alive comment every 15 s
POLL_START, POLL_MAX, POLL_GROWTH = 0.25, 5.0, 1.5  # seconds between polls, and growth


class ClientError(Exception):
    """Any failure of a client call, with a message fit to show a person."""


class ServiceError(ClientError):
    """The server answered with an error: ``status`` and the server's ``message``."""

    def __init__(self, status: int, message: str, method: str = "", url: str = ""):
        super().__init__(f"{status} from {method} {url}: {message}".replace("  ", " "))
        self.status, self.message, self.method, self.url = status, message, method, url


class Unreachable(ClientError):
    """No answer from the server (wrong URL, server down, network)."""


class WaitTimeout(ClientError):
    """``wait`` gave up before the job finished; ``job`` is its last known state."""

    def __init__(self, job: JobStatus, seconds: float):
        super().__init__(f"job {job.id} still {job.state} after waiting {seconds:g} s")
        self.job = job


@dataclass(frozen=True)
class ModelInfo:
    """An uploaded model: its id (the sha256 of its bytes) and sizes."""

    id: str
    filename: str
    n_inputs: int
    n_outputs: int
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelInfo:
        return cls(id=data["id"], filename=data.get("filename", ""),
                   n_inputs=int(data.get("n_inputs", 0)),
                   n_outputs=int(data.get("n_outputs", 0)), raw=dict(data))


@dataclass(frozen=True)
class JobStatus:
    """A job as the server reported it: state, verdict, progress and result."""

    id: str
    kind: str
    state: str
    verdict: str | None
    message: str
    model_id: str
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    certificate_url: str | None
    seconds: float | None
    timeout: float | None  # the job's time limit (options.timeout)
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobStatus:
        options = data.get("options") or {}
        timeout = options.get("timeout")
        return cls(id=data["id"], kind=data.get("kind", "verify"), state=data["state"],
                   verdict=data.get("verdict"), message=data.get("message") or "",
                   model_id=data.get("model_id", ""), progress=data.get("progress"),
                   result=data.get("result"), certificate_url=data.get("certificate_url"),
                   seconds=data.get("seconds"),
                   timeout=float(timeout) if isinstance(timeout, int | float) else None,
                   raw=dict(data))

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def outcome(self) -> str:
        """The verdict once the job succeeded, else its state (failed, cancelled, ...)."""
        return (self.verdict or "unknown") if self.state == "succeeded" else self.state

    @property
    def elapsed(self) -> float | None:
        """Seconds of computation so far (the run's time once finished)."""
        if self.seconds is not None:
            return float(self.seconds)
        return float(self.progress["elapsed"]) if self.progress else None


@dataclass(frozen=True)
class JobPage:
    """One page of ``GET /jobs``: the jobs, newest first, and how many match in all."""

    items: list[JobStatus]
    total: int


def property_body(prop: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The ``property`` of a job request: a mapping is the JSON property form; a path ending
    in ``.json`` is read as one; any other path is a VNN-LIB file; a string holding an
    s-expression ("(") is VNN-LIB text itself."""
    if isinstance(prop, Mapping):
        return {"json": dict(prop)}
    if isinstance(prop, str) and "(" in prop:
        return {"vnnlib": prop}
    path = Path(prop)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ClientError(f"cannot read the property file {path}: {exc.strerror}") from None
    if path.suffix.lower() == ".json":
        try:
            return {"json": json.loads(text)}
        except json.JSONDecodeError as exc:
            raise ClientError(f"{path} is not valid JSON: {exc}") from None
    return {"vnnlib": text}


def job_options(timeout: float | None = None, device: str | None = None,
                bab: bool | None = None, methods: list[str] | None = None,
                **more: Any) -> dict[str, Any]:
    """The ``options`` of a job request: the ones given (the server has defaults)."""
    given = dict(timeout=timeout, device=device, bab=bab, methods=methods, **more)
    return {k: v for k, v in given.items() if v is not None}


class Client:
    """The service's API over HTTP.  ``url`` is the server's address (the API is under
    /api/v1), ``api_key`` is sent as X-API-Key; both default to the environment
    (NNVERIFY_URL, else http://127.0.0.1:$NNVERIFY_PORT; NNVERIFY_API_KEY)."""

    def __init__(self, url: str | None = None, api_key: str | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None):
        env = ClientSettings() if url is None or api_key is None else None
        self.url = (url or (env.base_url if env else "")).rstrip("/")
        key = api_key if api_key is not None else (env.api_key if env else None)
        headers = {API_KEY_HEADER: key} if key else {}
        self._http = httpx.Client(base_url=self.url + API_PREFIX, headers=headers,
                                  timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- requests -----------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response to one request; ServiceError for an error status, Unreachable when
        there is no answer."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.is_error:
            raise _service_error(response)
        return response

    def _unreachable(self, exc: Exception) -> Unreachable:
        return Unreachable(f"cannot reach the nnverify server at {self.url} ({exc}); is it "
                           "running? (set --url or NNVERIFY_URL)")

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        data = self._request(method, path, **kwargs).json()
        if not isinstance(data, dict):
            raise ClientError(f"unexpected answer from {method} {path}: {data!r:.200}")
        return data

    # -- models ---------------------------------------------------------------------------

    def upload_model(self, path: str | Path) -> ModelInfo:
        """Upload an ONNX file; the same bytes give the same model (its id is their sha256),
        and a model the server already has is not sent again."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ClientError(f"cannot read the model file {path}: {exc.strerror}") from None
        existing = self.get_model(hashlib.sha256(data).hexdigest())
        if existing is not None:
            return existing
        files = {"file": (path.name, data, "application/octet-stream")}
        return ModelInfo.from_json(self._json("POST", "/models", files=files))

    def get_model(self, model_id: str) -> ModelInfo | None:
        """The model with this id, or None when the server has none (for this key)."""
        try:
            return ModelInfo.from_json(self._json("GET", f"/models/{model_id}"))
        except ServiceError as exc:
            if exc.status == 404:
                return None
            raise

    # -- jobs -----------------------------------------------------------------------------

    def submit(self, model_id: str, prop: str | Path | Mapping[str, Any] | None, *,
               timeout: float | None = None, device: str | None = None,
               bab: bool | None = None, methods: list[str] | None = None,
               kind: str = "verify", lipschitz: Mapping[str, Any] | None = None,
               **options: Any) -> JobStatus:
        """Create a job on an uploaded model: ``prop`` is a VNN-LIB or JSON property file,
        VNN-LIB text, or the JSON property form as a mapping."""
        body: dict[str, Any] = {"model_id": model_id, "kind": kind,
                                "options": job_options(timeout, device, bab, methods, **options)}
        if prop is not None:
            body["property"] = property_body(prop)
        if lipschitz is not None:
            body["lipschitz"] = dict(lipschitz)
        return JobStatus.from_json(self._json("POST", "/jobs", json=body))

    def status(self, job_id: str) -> JobStatus:
        return JobStatus.from_json(self._json("GET", f"/jobs/{job_id}"))

    def cancel(self, job_id: str) -> JobStatus:
        return JobStatus.from_json(self._json("POST", f"/jobs/{job_id}/cancel"))

    def results(self, model: str | None = None, state: str | None = None,
                verdict: str | None = None, kind: str | None = None, limit: int = 50,
                offset: int = 0) -> JobPage:
        """Jobs, newest first, filtered by model id, state, verdict and kind."""
        params = {k: v for k, v in (("model", model), ("state", state), ("verdict", verdict),
                                    ("kind", kind)) if v is not None}
        data = self._json("GET", "/jobs", params=dict(params, limit=limit, offset=offset))
        return JobPage(items=[JobStatus.from_json(j) for j in data.get("items", [])],
                       total=int(data.get("total", 0)))

    def certificate(self, job_or_certificate_id: str) -> dict[str, Any]:
        """The certificate of a finished job (by job id), or a certificate by its own id."""
        try:
            job = self.status(job_or_certificate_id)
        except ServiceError as exc:
            if exc.status != 404:
                raise
            return self._json("GET", f"/certificates/{job_or_certificate_id}")
        if not job.certificate_url:
            raise ClientError(f"job {job.id} has no certificate ({job.state}"
                              f"{', ' + job.verdict if job.verdict else ''}): one is issued "
                              "when a job succeeds")
        return self._json("GET", job.certificate_url)

    # -- following a job ------------------------------------------------------------------

    def events(self, job_id: str, read_timeout: float = STREAM_READ_TIMEOUT
               ) -> Iterator[JobStatus]:
        """The job at each change, from its server-sent event stream, ending with the
        finished job (or earlier, when the server closes the stream first).  Raises
        ServiceError 404/405 where the server has no event stream, Unreachable when nothing
        arrives for ``read_timeout`` seconds (the server sends a comment every 15 s)."""
        try:
            with self._http.stream("GET", f"/jobs/{job_id}/events",
                                   headers={"Accept": "text/event-stream"},
                                   timeout=httpx.Timeout(10.0, read=read_timeout)
                                   ) as response:
                if response.is_error:
                    response.read()
                    raise _service_error(response)
                for event, data in parse_sse(response.iter_lines()):
                    if event == "error":
                        raise ServiceError(404, _detail_of(data), "GET", f"/jobs/{job_id}")
                    if event in ("progress", "finished"):
                        yield JobStatus.from_json(json.loads(data))
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def wait(self, job_id: str, timeout: float | None = None,
             on_progress: Callable[[JobStatus], None] | None = None) -> JobStatus:
        """Block until the job finishes and return it; ``on_progress`` sees the job at
        every change on the way.  WaitTimeout after ``timeout`` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        notify = _changes_only(on_progress)
        job = self.status(job_id)
        streaming = True
        while not job.finished:
            notify(job)
            if streaming:
                job, streaming = self._follow_stream(job, deadline, notify)
            else:
                job = self._poll(job, deadline, notify)
            if not job.finished and deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(job, timeout or 0.0)
        return job

    def _follow_stream(self, job: JobStatus, deadline: float | None,
                       notify: Callable[[JobStatus], None]) -> tuple[JobStatus, bool]:
        """The job after its event stream ends (finished, closed by the server, or the
        deadline), and whether streaming is worth trying again."""
        read_timeout = STREAM_READ_TIMEOUT if deadline is None else \
            max(0.05, min(STREAM_READ_TIMEOUT, deadline - time.monotonic()))
        try:
            for update in self.events(job.id, read_timeout):
                job = update
                if job.finished or (deadline is not None and time.monotonic() >= deadline):
                    return job, True
                notify(job)
        except ServiceError as exc:
            if exc.status not in (404, 405, 406, 501):
                raise
            return self.status(job.id), False  # a real 404 (job gone) is raised here
        except Unreachable:
            if deadline is not None and time.monotonic() >= deadline:
                return job, True  # waited long enough: wait() says so
            return job, False  # a proxy that cuts or stalls streams: poll instead
        return job, True

    def _poll(self, job: JobStatus, deadline: float | None,
              notify: Callable[[JobStatus], None]) -> JobStatus:
        """Poll with backoff (reset whenever the job changes) until it finishes or the
        deadline passes."""
        interval = POLL_START
        while not job.finished:
            if deadline is not None and time.monotonic() >= deadline:
                return job
            pause = interval if deadline is None else min(interval, deadline - time.monotonic())
            time.sleep(max(0.0, pause))
            update = self.status(job.id)
            changed = update.raw != job.raw
            job = update
            interval = POLL_START if changed else min(POLL_MAX, interval * POLL_GROWTH)
            if not job.finished:
                notify(job)
        return job


def _changes_only(callback: Callable[[JobStatus], None] | None
                  ) -> Callable[[JobStatus], None]:
    """``callback`` called only with a job that differs from the one it saw last."""
    last: list[dict[str, Any]] = []

    def notify(job: JobStatus) -> None:
        if callback is not None and (not last or last[0] != job.raw):
            last[:] = [job.raw]
            callback(job)

    return notify


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) for each event of a text/event-stream (comments and ``retry`` lines
    skipped; an event without a name is "message"; data lines joined by newlines)."""
    event, data = "", list[str]()
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if data:
        yield event or "message", "\n".join(data)


def _detail_of(body: str) -> str:
    """The server's message in an error body ``{"detail": ...}``, else the body itself."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500] or "(no message)"
    if isinstance(data, dict) and "detail" in data:
        detail = data["detail"]
        return detail if isinstance(detail, str) else json.dumps(detail)
    return body.strip()[:500]


def _service_error(response: httpx.Response) -> ServiceError:
    request = response.request
    return ServiceError(response.status_code, _detail_of(response.text), request.method,
                        str(request.url))
