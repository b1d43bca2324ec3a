"""/jobs/{id}/events: a job's progress and its final state as server-sent events, so a client
learns that the job finished without polling.

The stream is ``text/event-stream``: an ``event: progress`` whose data is the job as
``GET /jobs/{id}`` returns it, each time its state or progress changes; then one
``event: finished`` with the finished job, after which the server closes the stream.  A
comment line keeps an idle stream open through proxies; a stream that has been open for
``MAX_STREAM_SECONDS`` is closed without ``finished`` (the client opens a new one), so no
connection outlives a server restart by long.  The server watches the job with one
primary-key read per ``progress_interval`` (the interval at which workers write progress),
on the event loop, as ``GET /jobs/{id}`` does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse

from ..states import FINISHED
from .deps import KeyHeader, read_key
from .jobs import job_view
from .schemas import AUTH_ERRORS, JobPublic, error_responses

router = APIRouter(prefix="/jobs", tags=["jobs"])

KEEPALIVE_SECONDS = 15.0
MAX_STREAM_SECONDS = 600.0
RETRY_MS = 2000  # how long an EventSource waits before it reconnects

EVENTS_DESCRIPTION = (
    "Server-sent events (text/event-stream): `progress` (data: the job, as GET "
    "/jobs/{job_id} returns it) whenever its state or progress changes, then `finished` "
    "(data: the finished job), after which the stream closes.")


# one server-sent event: ``data`` is one line of JSON (the job; for ``error``, {"detail"})
EVENT_SCHEMA = {
    "type": "object", "required": ["data"],
    "properties": {"event": {"type": "string", "enum": ["progress", "finished", "error"]},
                   "data": {"type": "string", "contentMediaType": "application/json"},
                   "id": {"type": "string"}, "retry": {"type": "integer"}}}


@router.get("/{job_id}/events", name="job_events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
                             "description": EVENTS_DESCRIPTION},
                       **error_responses(*AUTH_ERRORS, 404, 422)})
async def job_events(job_id: str, request: Request, key: KeyHeader) -> StreamingResponse:
    """Stream the job's progress until it finishes (see the module's description)."""
    key = read_key(request, key)
    first = job_view(request, job_id, key)  # the key and the job's owner before streaming
    return StreamingResponse(_stream(request, job_id, key, first),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def sse(event: str, data: str, event_id: int | None = None) -> str:
    """One server-sent event; ``data`` is one line of JSON (no newline to split)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


async def _stream(request: Request, job_id: str, key: str | None,
                  job: JobPublic) -> AsyncIterator[str]:
    """The events of one stream: every change of the job, then ``finished``."""
    interval = float(request.app.state.settings.progress_interval)
    opened = last_sent = time.monotonic()
    yield f"retry: {RETRY_MS}\n\n"
    seen, n = "", 0
    while True:
        data = job.model_dump_json()
        if job.state in FINISHED:
            yield sse("finished", data, n + 1)
            return
        if data != seen:
            n, seen, last_sent = n + 1, data, time.monotonic()
            yield sse("progress", data, n)
        elif time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            last_sent = time.monotonic()
            yield ": keepalive\n\n"
        if time.monotonic() - opened > MAX_STREAM_SECONDS or await request.is_disconnected():
            return
        await asyncio.sleep(interval)
        try:
            job = job_view(request, job_id, key)
        except HTTPException as exc:  # deleted meanwhile (or the key revoked)
            yield sse("error", json.dumps({"detail": str(exc.detail)}))
            return
