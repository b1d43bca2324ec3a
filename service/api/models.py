"""/models: upload (one model per key and bytes), list, get, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from .. import services
from ..tables import ModelRecord
from .deps import ModelCacheDep, ReadCaller, SessionDep, SettingsDep, WriteCaller
from .schemas import AUTH_ERRORS, ModelList, ModelPublic, error_responses, file_response

router = APIRouter(prefix="/models", tags=["models"])
CHUNK = 1 << 20
MAX_LIST_LIMIT = 500
MAX_OFFSET = 2**31 - 1  # beyond any table this service holds; larger is refused (422)
Limit = Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT, description="items per page")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]


def model_public(row: ModelRecord, request: Request) -> ModelPublic:
    s = row.summary
    return ModelPublic(
        id=row.id, sha256=row.sha256, owner=row.owner, filename=row.filename,
        size_bytes=row.size_bytes, input_shape=s["input"]["shape"],
        output_shape=s["output"]["shape"], n_inputs=s["n_inputs"], n_outputs=s["n_outputs"],
        op_census=s["op_census"], n_parameters=s["n_parameters"],
        bounded=s.get("bounded", True), not_bounded_because=s.get("reason"),
        created_at=row.created_at,
        url=str(request.url_for("get_model", model_id=row.id)))


async def read_upload(file: UploadFile, limit: int) -> bytes:
    """The upload's bytes, or 413 as soon as it passes ``limit``."""
    parts, size = [], 0
    while chunk := await file.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise services.TooLarge(f"the upload is larger than the limit of "
                                    f"{limit / 2**20:g} MB (NNVERIFY_MAX_UPLOAD_MB)")
        parts.append(chunk)
    return b"".join(parts)


@router.post("", status_code=201, response_model=ModelPublic,
             responses={200: {"model": ModelPublic,
                              "description": "The caller already has this model."},
                        **error_responses(*AUTH_ERRORS, 413, 422)})
async def upload_model(request: Request, response: Response, session: SessionDep,
                       settings: SettingsDep, cache: ModelCacheDep, caller: WriteCaller,
                       file: Annotated[UploadFile, File(description="an ONNX model")]
                       ) -> ModelPublic:
    """Validate and import an ONNX model; the same bytes from the same key always give the
    same model (201 when new, 200 when the caller had it)."""
    data = await read_upload(file, settings.max_upload_bytes)
    row, created = await run_in_threadpool(services.store_model, session, caller, data,
                                           file.filename or "", cache)
    response.status_code = 201 if created else 200
    response.headers["Location"] = str(request.url_for("get_model", model_id=row.id))
    return model_public(row, request)


@router.get("", response_model=ModelList, responses=error_responses(*AUTH_ERRORS, 422))
def list_models(request: Request, session: SessionDep, caller: ReadCaller,
                limit: Limit = 100, offset: Offset = 0) -> ModelList:
    """The caller's models (an admin's: all), newest first."""
    rows, total = services.list_models(session, caller, limit, offset)
    return ModelList(items=[model_public(r, request) for r in rows], total=total,
                     limit=limit, offset=offset)


@router.get("/{model_id}", response_model=ModelPublic, name="get_model",
            responses=error_responses(*AUTH_ERRORS, 404, 422))
def get_model(model_id: str, request: Request, session: SessionDep,
              caller: ReadCaller) -> ModelPublic:
    """The model with this id (or the caller's own model with this sha256)."""
    return model_public(services.get_model(session, caller, model_id), request)


@router.get("/{model_id}/file", name="get_model_file", response_class=Response,
            responses={**file_response("application/octet-stream",
                                       "The model's ONNX file, the bytes as uploaded."),
                       **error_responses(*AUTH_ERRORS, 404, 422)})
def get_model_file(model_id: str, session: SessionDep, caller: ReadCaller) -> Response:
    """The model's ONNX file (to check a certificate's proof against it)."""
    row, data = services.model_file(session, caller, model_id)
    return Response(data, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="model-{row.id[:16]}.onnx"'})


@router.delete("/{model_id}", status_code=204, response_class=Response,
               responses=error_responses(*AUTH_ERRORS, 404, 409, 422))
def delete_model(model_id: str, session: SessionDep, caller: WriteCaller) -> Response:
    """Delete a model with its jobs and certificates; refused while jobs on it are active."""
    services.delete_model(session, caller, model_id)
    return Response(status_code=204)
