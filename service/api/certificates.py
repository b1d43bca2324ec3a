"""/certificates/{id} and /models/{id}/certificates (a certificate is its job's owner's)."""

from __future__ import annotations

from fastapi import APIRouter

from .. import services
from ..tables import Certificate
from .deps import ReadCaller, SessionDep
from .models import Limit, Offset
from .schemas import AUTH_ERRORS, CertificateList, CertificatePublic, error_responses

router = APIRouter(tags=["certificates"])


def certificate_public(row: Certificate) -> CertificatePublic:
    return CertificatePublic(id=row.id, job_id=row.job_id, model_id=row.model_id,
                             verdict=row.verdict, created_at=row.created_at,
                             certificate=row.body)


@router.get("/certificates/{certificate_id}", response_model=CertificatePublic,
            name="get_certificate", responses=error_responses(*AUTH_ERRORS, 404, 422))
def get_certificate(certificate_id: str, session: SessionDep,
                    caller: ReadCaller) -> CertificatePublic:
    return certificate_public(services.get_certificate(session, caller, certificate_id))


@router.get("/models/{model_id}/certificates", response_model=CertificateList,
            responses=error_responses(*AUTH_ERRORS, 404, 422))
def list_model_certificates(model_id: str, session: SessionDep, caller: ReadCaller,
                            limit: Limit = 100, offset: Offset = 0) -> CertificateList:
    """The certificates of the caller's jobs on the model, newest first."""
    rows, total = services.list_model_certificates(session, caller, model_id, limit, offset)
    return CertificateList(items=[certificate_public(r) for r in rows], total=total,
                           limit=limit, offset=offset)
