"""The encryption keys of the artifact store (``/api/v1/keys``), for platform admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from civicml.governance.keys import KeyService
from civicml.governance.schemas import KeyReport, KeyRotation
from civicml.server.deps import Services, services

router = APIRouter(prefix="/api/v1", tags=["keys"])
Svc = Annotated[Services, Depends(services)]


@router.get("/keys", response_model=KeyReport)
def list_keys(svc: Svc) -> KeyReport:
    """Every key-encryption key, which is current and how many artifacts each protects
    (`keys.admin`); key ids only, never key material."""
    return KeyService(svc.ctx).report()


@router.post("/keys/rotate", response_model=KeyRotation)
def rotate_keys(svc: Svc) -> KeyRotation:
    """Make a new key current and re-wrap every artifact's data key under it (`keys.admin`)."""
    return KeyService(svc.ctx).rotate()


@router.delete("/keys/{key_id}", status_code=204)
def retire_key(key_id: str, svc: Svc) -> None:
    """Destroy a key no artifact uses any more (`keys.admin`; 409 while one does)."""
    KeyService(svc.ctx).retire(key_id)


@router.post("/keys/encrypt-existing")
def encrypt_existing(svc: Svc) -> dict[str, int]:
    """Encrypt the artifacts stored in plaintext before encryption was on (`keys.admin`)."""
    return {"encrypted": KeyService(svc.ctx).encrypt_existing()}
