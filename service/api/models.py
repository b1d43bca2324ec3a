"""/models: upload (content-addressed), list, get, delete."""

from __future__ import annotations

from typing import Annotated

import onnx
from fastapi import APIRouter, File, HTTPException, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import delete, func, select

from verifier.errors import ModelError

from ..engine import import_model
from ..tables import ACTIVE_STATES, Certificate, Job, ModelRecord
from .deps import ModelCacheDep, SessionDep, SettingsDep, WriteKey
from .schemas import ModelList, ModelPublic

router = APIRouter(prefix="/models", tags=["models"])
CHUNK = 1 << 20


def model_public(row: ModelRecord, request: Request) -> ModelPublic:
    s = row.summary
    return ModelPublic(
        id=row.id, sha256=row.id, filename=row.filename, size_bytes=row.size_bytes,
        input_shape=s["input"]["shape"], output_shape=s["output"]["shape"],
        n_inputs=s["n_inputs"], n_outputs=s["n_outputs"], op_census=s["op_census"],
        n_parameters=s["n_parameters"], created_at=row.created_at,
        url=str(request.url_for("get_model", model_id=row.id)))


def get_model_row(session: SessionDep, model_id: str) -> ModelRecord:
    row = session.get(ModelRecord, model_id)
    if row is None:
        raise HTTPException(404, f"no model with id {model_id!r}")
    return row


async def _read_limited(file: UploadFile, limit: int) -> bytes:
    """The upload's bytes, or 413 as soon as it passes ``limit``."""
    parts, size = [], 0
    while chunk := await file.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the upload is larger than the limit of "
                                     f"{limit / 2**20:g} MB (NNVERIFY_MAX_UPLOAD_MB)")
        parts.append(chunk)
    return b"".join(parts)


def _check_is_onnx(data: bytes) -> None:
    """400 for bytes that are not an ONNX model at all (the engine judges the rest)."""
    if not data:
        raise HTTPException(400, "the uploaded file is empty")
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises several unrelated types
        raise HTTPException(400, f"the upload is not an ONNX model: it does not parse as "
                                 f"ONNX protobuf ({exc})") from None
    if not proto.graph.node and not proto.graph.output:
        raise HTTPException(400, "the upload is not an ONNX model: no graph found "
                                 "(is the file truncated?)")


def unexpected_model_error(exc: Exception) -> str:
    """The message for an import failure that is not a ModelError (an engine bug)."""
    return (f"the model cannot be imported (an internal error of the importer, please report "
            f"it with the model): {type(exc).__name__}: {exc}")


@router.post("", status_code=201, response_model=ModelPublic)
async def upload_model(request: Request, response: Response, session: SessionDep,
                       settings: SettingsDep, cache: ModelCacheDep, _key: WriteKey,
                       file: Annotated[UploadFile, File(description="an ONNX model")]
                       ) -> ModelPublic:
    """Validate and import an ONNX model; the same bytes always give the same model."""
    data = await _read_limited(file, settings.max_upload_bytes)
    _check_is_onnx(data)
    try:
        model = await run_in_threadpool(import_model, data)
    except ModelError as exc:
        raise HTTPException(422, f"the model cannot be verified: {exc}") from None
    except Exception as exc:  # an importer failure it did not foresee: still a clear 422
        raise HTTPException(422, unexpected_model_error(exc)) from None
    existing = session.get(ModelRecord, model.sha256)
    if existing is not None:
        response.status_code = 200
        return model_public(existing, request)
    summary = dict(model.describe(), n_inputs=model.n_inputs, n_outputs=model.n_outputs)
    row = ModelRecord(id=model.sha256, filename=(file.filename or "")[:255],
                      size_bytes=len(data), onnx_bytes=data, summary=summary)
    session.add(row)
    session.commit()
    cache.get(model.sha256, lambda: data)
    response.headers["Location"] = str(request.url_for("get_model", model_id=row.id))
    return model_public(row, request)


@router.get("", response_model=ModelList)
def list_models(request: Request, session: SessionDep, limit: int = 100,
                offset: int = 0) -> ModelList:
    limit, offset = max(1, min(limit, 500)), max(0, offset)
    rows = session.scalars(select(ModelRecord).order_by(ModelRecord.created_at.desc())
                           .limit(limit).offset(offset)).all()
    total = session.scalar(select(func.count()).select_from(ModelRecord)) or 0
    return ModelList(items=[model_public(r, request) for r in rows], total=total)


@router.get("/{model_id}", response_model=ModelPublic, name="get_model")
def get_model(model_id: str, request: Request, session: SessionDep) -> ModelPublic:
    return model_public(get_model_row(session, model_id), request)


@router.delete("/{model_id}", status_code=204)
def delete_model(model_id: str, session: SessionDep, _key: WriteKey) -> Response:
    """Delete a model with its jobs and certificates; refused while jobs on it are active."""
    get_model_row(session, model_id)
    active = session.scalar(select(func.count()).select_from(Job).where(
        Job.model_id == model_id, Job.state.in_(ACTIVE_STATES))) or 0
    if active:
        raise HTTPException(409, f"model {model_id!r} has {active} queued or running job(s); "
                                 "cancel them or wait for them to finish first")
    session.execute(delete(Certificate).where(Certificate.model_id == model_id))
    session.execute(delete(Job).where(Job.model_id == model_id))
    session.execute(delete(ModelRecord).where(ModelRecord.id == model_id))
    session.commit()
    return Response(status_code=204)
