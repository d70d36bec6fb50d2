"""``/api/v1/audit``: the governance store's hash-chained audit log and its verification."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from serving.management.context import ApiContext, ctx
from serving.schemas import error_responses

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=error_responses(422))


@router.get("", summary="Audit entries, newest first (filters are exact matches)")
def list_audit(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10_000_000),
               subject_kind: str | None = Query(None, max_length=50),
               subject_id: str | None = Query(None, max_length=500),
               actor: str | None = Query(None, max_length=200),
               action: str | None = Query(None, max_length=100),
               c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    entries = c.store.list_audit(limit, offset, subject_kind=subject_kind, subject_id=subject_id, actor=actor,
                                 action=action)
    return {"items": [e.to_dict() for e in entries], "total": len(entries), "offset": offset}


@router.get("/verify", summary="Verify every entry, the chain links and the head against the anchor file")
def verify_audit(c: ApiContext = Depends(ctx)) -> dict[str, Any]:
    return c.store.verify_audit().to_dict()
