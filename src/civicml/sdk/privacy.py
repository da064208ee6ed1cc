"""``proj.privacy``: retention periods, legal holds and erasure requests of a project.

The same calls work embedded (the services in-process) and remote
(``/api/v1/projects/{project}/privacy/…``).
"""

from __future__ import annotations

import builtins
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter

from civicml.privacy.schemas import Erasure, RetentionResult, RetentionRule

__all__ = ["PrivacyHandle"]

_RULES: TypeAdapter[list[RetentionRule]] = TypeAdapter(list[RetentionRule])
_ERASURES: TypeAdapter[list[Erasure]] = TypeAdapter(list[Erasure])


class PrivacyHandle:
    """Retention and erasure of one project's data (``proj.privacy``).

    Example:
        >>> proj.privacy.set_retention("endpoint", "eligibility", days=90)  # doctest: +SKIP
        >>> proj.privacy.hold("dataset", "applications", reason="case 2026-114")  # doctest: +SKIP
        >>> done = proj.privacy.erase("applicant_id", "A-1029")  # doctest: +SKIP
        >>> proj.privacy.certificate(done.id)  # doctest: +SKIP
    """

    def __init__(self, backend: Any, project: str) -> None:
        self._backend = backend
        self._project = project

    @property
    def _base(self) -> str:
        return f"/api/v1/projects/{quote(self._project, safe='')}/privacy"

    def _ctx(self) -> Any:
        return self._backend.ctx

    @staticmethod
    def _target(kind: str, name: str) -> str:
        return f"{quote(str(kind).strip().lower(), safe='')}/{quote(name, safe='')}"

    # Retention --------------------------------------------------------------------------------
    def retention(self) -> builtins.list[RetentionRule]:
        """The project's retention periods and legal holds."""
        if self._backend.remote:
            return _RULES.validate_python(self._backend._json("GET", f"{self._base}/retention"))
        from civicml.privacy.rules import RuleService

        return RuleService(self._ctx()).list(self._project)

    def set_retention(self, kind: str, name: str, *, days: int | None) -> RetentionRule:
        """Keep a dataset's versions, or an endpoint's captured requests, ``days`` days
        (None: no period)."""
        if self._backend.remote:
            path = f"{self._base}/retention/{self._target(kind, name)}"
            data = self._backend._json("PUT", path, json_body={"days": days})
            return RetentionRule.model_validate(data)
        from civicml.privacy.rules import RuleService

        return RuleService(self._ctx()).set_retention(self._project, kind, name, days)

    def hold(self, kind: str, name: str, *, reason: str) -> RetentionRule:
        """Place a legal hold: nothing of the target is deleted while it stands."""
        if self._backend.remote:
            path = f"{self._base}/holds/{self._target(kind, name)}"
            data = self._backend._json("PUT", path, json_body={"reason": reason})
            return RetentionRule.model_validate(data)
        from civicml.privacy.rules import RuleService

        return RuleService(self._ctx()).hold(self._project, kind, name, reason)

    def release(self, kind: str, name: str) -> RetentionRule:
        """Clear a legal hold."""
        if self._backend.remote:
            path = f"{self._base}/holds/{self._target(kind, name)}"
            return RetentionRule.model_validate(self._backend._json("DELETE", path))
        from civicml.privacy.rules import RuleService

        return RuleService(self._ctx()).release(self._project, kind, name)

    def enforce_retention(self) -> RetentionResult:
        """Apply the project's retention periods now."""
        if self._backend.remote:
            data = self._backend._json("POST", f"{self._base}/retention/enforce", json_body={})
            return RetentionResult.model_validate(data)
        from civicml.privacy.retention import RetentionService

        return RetentionService(self._ctx()).enforce(self._project)

    # Erasure ----------------------------------------------------------------------------------
    def erase(self, key_column: str, value: str | int, *, reason: str = "") -> Erasure:
        """Erase the data subject whose ``key_column`` holds ``value`` from every dataset
        version and captured request of the project; flag the models trained on them."""
        if self._backend.remote:
            body = {"key_column": key_column, "value": value, "reason": reason}
            data = self._backend._json("POST", f"{self._base}/erasures", json_body=body)
            return Erasure.model_validate(data)
        from civicml.privacy.erasure import ErasureService

        host = getattr(self._backend, "_serving", None)
        writer = None if host is None else host.capture
        service = ErasureService(self._ctx(), writer)
        return service.erase(self._project, key_column, value, reason=reason)

    def erasures(self) -> builtins.list[Erasure]:
        """The project's erasures, newest first."""
        if self._backend.remote:
            return _ERASURES.validate_python(self._backend._json("GET", f"{self._base}/erasures"))
        from civicml.privacy.erasure import ErasureService

        return ErasureService(self._ctx()).list(self._project)

    def erasure(self, erasure_id: str) -> Erasure:
        """One erasure."""
        if self._backend.remote:
            path = f"{self._base}/erasures/{quote(erasure_id, safe='')}"
            return Erasure.model_validate(self._backend._json("GET", path))
        from civicml.privacy.erasure import ErasureService

        return ErasureService(self._ctx()).get(self._project, erasure_id)

    def certificate(self, erasure_id: str, *, html: bool = False) -> bytes:
        """The erasure certificate: JSON (default) or the HTML page."""
        if self._backend.remote:
            path = f"{self._base}/erasures/{quote(erasure_id, safe='')}/certificate"
            params = {"format": "html" if html else "json"}
            return bytes(self._backend.call("GET", path, params=params).content)
        from civicml.privacy.erasure import ErasureService

        return ErasureService(self._ctx()).certificate(self._project, erasure_id, html=html)
