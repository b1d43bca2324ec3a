"""/certificates/{id} and /models/{id}/certificates."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import func, select

from ..tables import Certificate
from .deps import SessionDep
from .models import get_model_row
from .schemas import CertificateList, CertificatePublic

router = APIRouter(tags=["certificates"])


def certificate_public(row: Certificate) -> CertificatePublic:
    return CertificatePublic(id=row.id, job_id=row.job_id, model_id=row.model_id,
                             verdict=row.verdict, created_at=row.created_at,
                             certificate=row.body)


@router.get("/certificates/{certificate_id}", response_model=CertificatePublic,
            name="get_certificate")
def get_certificate(certificate_id: str, session: SessionDep) -> CertificatePublic:
    row = session.get(Certificate, certificate_id)
    if row is None:
        raise HTTPException(404, f"no certificate with id {certificate_id!r}")
    return certificate_public(row)


@router.get("/models/{model_id}/certificates", response_model=CertificateList)
def list_model_certificates(model_id: str, session: SessionDep, limit: int = 100,
                            offset: int = 0) -> CertificateList:
    get_model_row(session, model_id)
    limit, offset = max(1, min(limit, 500)), max(0, offset)
    where = Certificate.model_id == model_id
    rows = session.scalars(select(Certificate).where(where)
                           .order_by(Certificate.created_at.desc())
                           .limit(limit).offset(offset)).all()
    total = session.scalar(select(func.count()).select_from(Certificate).where(where)) or 0
    return CertificateList(items=[certificate_public(r) for r in rows], total=total)
