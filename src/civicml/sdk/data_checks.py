"""``proj.datasets.expectations`` and the personal-data calls of ``proj.datasets``: quality
expectations, reports, quarantine overrides, scans, classifications and redactions, embedded or
against a server (the same names and schemas, docs/datasets.md)."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import TypeAdapter, ValidationError

from civicml.core.errors import InvalidInputError
from civicml.data.expectation_schemas import Expectation, ExpectationCreate, QualityReport
from civicml.data.pii_schemas import PiiReport, RedactionResult, RedactionRule, RedactRequest
from civicml.data.schemas import Classification, DatasetVersion

__all__ = ["DataChecksMixin", "ExpectationsHandle"]

_EXPECTATIONS = TypeAdapter(list[Expectation])


def _validated(model: Any, values: dict[str, Any], what: str) -> Any:
    """The request, or one InvalidInputError saying what is wrong with it."""
    try:
        return model.model_validate(values)
    except ValidationError as err:
        problems = "; ".join(
            (".".join(str(p) for p in e["loc"]) + ": " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in err.errors()
        )
        raise InvalidInputError(
            f"Invalid {what}: {problems}.",
            hint="See 'Quality expectations' and 'Personal data' in docs/datasets.md.",
        ) from None


def _version_path(base: str, version: DatasetVersion) -> str:
    return f"{base}/versions/{version.version}"


class ExpectationsHandle:
    """The quality expectations of a project's datasets (``proj.datasets.expectations``).

    Example:
        >>> proj.datasets.expectations.add("applications", "age-range", kind="between",
        ...                                column="age", min=0, max=120)  # doctest: +SKIP
        >>> proj.datasets.expectations.run("applications").status  # doctest: +SKIP
        <QualityStatus.PASSED: 'passed'>
    """

    def __init__(self, datasets: Any) -> None:
        self._ds = datasets

    @property
    def _remote(self) -> bool:
        return bool(self._ds._backend.remote)

    def _svc(self) -> Any:
        from civicml.data.quality import QualityService

        return QualityService(self._ds._backend.ctx)

    def add(self, dataset: str, name: str, *, kind: str, **fields: Any) -> Expectation:
        """Add expectation ``name`` of ``kind`` to ``dataset``: ``column``, ``min``, ``max``,
        ``strict``, ``values``, ``pattern``, ``max_age``, ``dataset`` (as ``ref_dataset``),
        ``dataset_column``, ``dataset_version``, ``sql``, ``mostly``, ``blocking``,
        ``description`` as the kind needs (:class:`ExpectationCreate`)."""
        if "ref_dataset" in fields:
            fields["dataset"] = fields.pop("ref_dataset")
        spec = _validated(ExpectationCreate, {"name": name, "kind": kind, **fields}, "expectation")
        if not self._remote:
            return self._svc().add(self._ds._project, dataset, spec)  # type: ignore[no-any-return]
        body = self._ds._backend._json(
            "POST",
            f"{self._ds._base(dataset)}/expectations",
            json_body=spec.model_dump(mode="json"),
        )
        return Expectation.model_validate(body)

    def list(self, dataset: str) -> builtins.list[Expectation]:
        """The expectations of ``dataset``, by name."""
        if not self._remote:
            return self._svc().list(self._ds._project, dataset)  # type: ignore[no-any-return]
        return _EXPECTATIONS.validate_python(
            self._ds._backend._json("GET", f"{self._ds._base(dataset)}/expectations")
        )

    def remove(self, dataset: str, name: str) -> None:
        """Remove expectation ``name`` of ``dataset``."""
        if not self._remote:
            self._svc().remove(self._ds._project, dataset, name)
            return
        path = f"{self._ds._base(dataset)}/expectations/{quote(name, safe='')}"
        self._ds._backend.call("DELETE", path)

    def run(
        self, dataset: str, version: int | str = "latest", *, sample_rows: int = 20
    ) -> QualityReport | None:
        """Evaluate the expectations of ``dataset`` on a version, store and return the report
        (None: the dataset has no expectations)."""
        found = self._ds.version(dataset, version)
        if not self._remote:
            return self._svc().run(found, sample_rows=sample_rows)  # type: ignore[no-any-return]
        body = self._ds._backend._json(
            "POST",
            f"{_version_path(self._ds._base(dataset), found)}/quality",
            params={"sample_rows": sample_rows},
        )
        return None if body is None else QualityReport.model_validate(body)

    def report(self, dataset: str, version: int | str = "latest") -> QualityReport:
        """The newest quality report of a version."""
        found = self._ds.version(dataset, version)
        if not self._remote:
            return self._svc().report(found)  # type: ignore[no-any-return]
        path = f"{_version_path(self._ds._base(dataset), found)}/quality"
        return QualityReport.model_validate(self._ds._backend._json("GET", path))

    def override(self, dataset: str, version: int | str, *, justification: str) -> DatasetVersion:
        """Release a quarantined version (``datasets.override_quarantine``), justified."""
        found = self._ds.version(dataset, version)
        if not self._remote:
            return self._svc().override_quarantine(  # type: ignore[no-any-return]
                found, justification=justification
            )
        body = self._ds._backend._json(
            "POST",
            f"{_version_path(self._ds._base(dataset), found)}/quarantine/override",
            json_body={"justification": justification},
        )
        return DatasetVersion.model_validate(body)


class DataChecksMixin:
    """Personal-data and usability calls of ``proj.datasets`` (mixed into DatasetsHandle)."""

    _backend: Any
    _project: str

    if TYPE_CHECKING:  # DatasetsHandle's

        def _base(self, name: str | None = None) -> str: ...

        def version(self, name: str, version: int | str = "latest") -> DatasetVersion: ...

        def get(self, name: str) -> Any: ...

    @property
    def expectations(self) -> ExpectationsHandle:
        """The datasets' quality expectations."""
        return ExpectationsHandle(self)

    def _personal(self) -> Any:
        from civicml.data.personal import PersonalDataService

        return PersonalDataService(self._backend.ctx)

    def scan_pii(self, name: str, version: int | str = "latest") -> PiiReport:
        """Scan a version for personal data; the report (its classification is stored)."""
        found = self.version(name, version)
        if not self._backend.remote:
            return self._personal().scan(found)  # type: ignore[no-any-return]
        body = self._backend._json("POST", f"{_version_path(self._base(name), found)}/pii")
        return PiiReport.model_validate(body)

    def pii_report(self, name: str, version: int | str = "latest") -> PiiReport:
        """The newest personal-data scan of a version."""
        found = self.version(name, version)
        if not self._backend.remote:
            return self._personal().report(found)  # type: ignore[no-any-return]
        body = self._backend._json("GET", f"{_version_path(self._base(name), found)}/pii")
        return PiiReport.model_validate(body)

    def classification(self, name: str) -> Classification | None:
        """The dataset's classification (the most sensitive of its versions')."""
        found: Classification | None = self.get(name).classification
        return found

    def redact(
        self,
        name: str,
        version: int | str = "latest",
        *,
        rules: builtins.list[RedactionRule | dict[str, Any]],
        target: str | None = None,
        quasi_identifiers: builtins.list[str] | None = None,
        min_k: int = 1,
        description: str = "",
    ) -> RedactionResult:
        """Write a redacted successor of a version: ``rules`` like ``{"column": "email",
        "action": "hash"}``; the k-anonymity over ``quasi_identifiers`` is checked (refused
        below ``min_k``)."""
        request = _validated(
            RedactRequest,
            {
                "rules": [r.model_dump() if isinstance(r, RedactionRule) else r for r in rules],
                "target": target,
                "quasi_identifiers": list(quasi_identifiers or []),
                "min_k": min_k,
                "description": description,
            },
            "redaction",
        )
        found = self.version(name, version)
        if not self._backend.remote:
            return self._personal().redact(found, request)  # type: ignore[no-any-return]
        body = self._backend._json(
            "POST",
            f"{_version_path(self._base(name), found)}/redact",
            json_body=request.model_dump(mode="json"),
        )
        return RedactionResult.model_validate(body)

    def justify_personal_use(
        self, name: str, version: int | str, *, justification: str
    ) -> DatasetVersion:
        """Record why a version classified personal may be trained on
        (``datasets.override_quarantine``)."""
        found = self.version(name, version)
        if not self._backend.remote:
            return self._personal().justify_personal_use(  # type: ignore[no-any-return]
                found, justification=justification
            )
        body = self._backend._json(
            "POST",
            f"{_version_path(self._base(name), found)}/personal-use",
            json_body={"justification": justification},
        )
        return DatasetVersion.model_validate(body)

    def check_usable(self, version: DatasetVersion, *, purpose: str = "training") -> None:
        """Raise ``ConflictError`` when training may not consume ``version`` (quarantined,
        unchecked, or personal under the policy); the server decides for a remote client."""
        if not self._backend.remote:
            from civicml.data.service import DatasetService

            DatasetService(self._backend.ctx).check_usable(version, purpose=purpose)
            return
        path = f"{_version_path(self._base(version.name), version)}/usable"
        self._backend.call("GET", path, params={"purpose": purpose})
