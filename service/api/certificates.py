"""/certificates/{id} (with its proof and property files) and /models/{id}/certificates (a
certificate is its job's owner's)."""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter, Request, Response

from .. import services
from ..tables import PROOF_STATUSES, Certificate
from .deps import ReadCaller, SessionDep
from .models import Limit, Offset
from .schemas import (
    AUTH_ERRORS,
    CertificateList,
    CertificatePublic,
    ProofPublic,
    ProofStatus,
    error_responses,
    file_response,
)

router = APIRouter(tags=["certificates"])
PROOF_MEDIA_TYPE = "application/octet-stream"
PROPERTY_MEDIA_TYPE = "text/plain; charset=utf-8"


def certificate_public(row: Certificate, request: Request,
                       prop: tuple[str, str]) -> CertificatePublic:
    """The certificate's JSON; ``prop`` is its property's (id, format)."""
    def url(name: str, **params: str) -> str:
        return str(request.url_for(name, **params))

    return CertificatePublic(
        id=row.id, job_id=row.job_id, model_id=row.model_id, verdict=row.verdict,
        created_at=row.created_at, certificate=row.body, property_id=prop[0],
        property_format=prop[1], property_url=url("get_certificate_property",
                                                  certificate_id=row.id),
        model_file_url=url("get_model_file", model_id=row.model_id),
        proof=proof_public(row),
        proof_url=url("get_certificate_proof", certificate_id=row.id)
        if row.proof_status == "checked" else None)


def proof_public(row: Certificate) -> ProofPublic:
    status = cast(ProofStatus, row.proof_status if row.proof_status in PROOF_STATUSES
                  else "none")
    return ProofPublic(status=status, reason=row.proof_reason, checker=row.proof_checker,
                       leaves=row.proof_leaves, bytes=row.proof_size_bytes,
                       search_seconds=row.proof_search_seconds,
                       check_seconds=row.proof_check_seconds)


def publics(session: SessionDep, request: Request,
            rows: list[Certificate]) -> list[CertificatePublic]:
    props = services.certificate_properties(session, [r.id for r in rows])
    return [certificate_public(r, request, props.get(r.id, ("", ""))) for r in rows]


@router.get("/certificates/{certificate_id}", response_model=CertificatePublic,
            name="get_certificate", responses=error_responses(*AUTH_ERRORS, 404, 422))
def get_certificate(certificate_id: str, request: Request, session: SessionDep,
                    caller: ReadCaller) -> CertificatePublic:
    return publics(session, request,
                   [services.get_certificate(session, caller, certificate_id)])[0]


@router.get("/certificates/{certificate_id}/proof", name="get_certificate_proof",
            response_class=Response,
            responses={**file_response(PROOF_MEDIA_TYPE,
                                       "The proof file (nnverify-proof/1) the checker "
                                       "accepted: `nnverify check` it with the model file "
                                       "and the property text."),
                       **error_responses(*AUTH_ERRORS, 404, 422)})
def get_certificate_proof(certificate_id: str, session: SessionDep,
                          caller: ReadCaller) -> Response:
    """The certificate's proof, checked by the independent checker; 404 saying why when
    it has none (proofs off, a property not in VNN-LIB, no proof found, rejected)."""
    data = services.certificate_proof(session, caller, certificate_id)
    return Response(data, media_type=PROOF_MEDIA_TYPE, headers={
        "Content-Disposition":
            f'attachment; filename="certificate-{certificate_id}.nnvproof"'})


@router.get("/certificates/{certificate_id}/property", name="get_certificate_property",
            response_class=Response,
            responses={**file_response(PROPERTY_MEDIA_TYPE,
                                       "The property's text as stored (VNN-LIB as given, "
                                       "JSON in canonical form): the bytes its "
                                       "property_sha256 names."),
                       **error_responses(*AUTH_ERRORS, 404, 422)})
def get_certificate_property(certificate_id: str, session: SessionDep,
                             caller: ReadCaller) -> Response:
    """The text of the property the certificate is about."""
    prop = services.certificate_property(session, caller, certificate_id)
    suffix = "vnnlib" if prop.format == "vnnlib" else prop.format
    return Response(prop.text.encode(), media_type=PROPERTY_MEDIA_TYPE, headers={
        "Content-Disposition":
            f'attachment; filename="property-{prop.id[:16]}.{suffix}"'})


@router.get("/models/{model_id}/certificates", response_model=CertificateList,
            responses=error_responses(*AUTH_ERRORS, 404, 422))
def list_model_certificates(model_id: str, request: Request, session: SessionDep,
                            caller: ReadCaller, limit: Limit = 100,
                            offset: Offset = 0) -> CertificateList:
    """The certificates of the caller's jobs on the model, newest first."""
    rows, total = services.list_model_certificates(session, caller, model_id, limit, offset)
    return CertificateList(items=publics(session, request, list(rows)), total=total,
                           limit=limit, offset=offset)
