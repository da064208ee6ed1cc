"""``ml.catalog``: search datasets, models and reports across projects; describe; lineage.

The same calls work embedded (the service in-process) and remote (``/api/v1/catalog/search``
and ``/api/v1/projects/{project}/catalog/…``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from civicml.catalog.schemas import CatalogEntry, DescribeRequest, SearchPage
from civicml.core.errors import InvalidInputError
from civicml.governance.schemas import LineageGraph

__all__ = ["CatalogHandle", "parse_ref"]


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"applications:3"`` → ``("applications", 3)``; ``"applications"`` → latest (None)."""
    name, sep, version = ref.rpartition(":")
    if not sep:
        return ref, None
    if not (version.isascii() and version.isdigit()) or not name:
        raise InvalidInputError(f"{ref!r} is not NAME or NAME:VERSION.", hint="e.g. applications:3")
    return name, int(version)


class CatalogHandle:
    """The catalog (``ml.catalog``).

    Example:
        >>> ml.catalog.search("applications", kinds=["dataset"]).hits  # doctest: +SKIP
        >>> ml.catalog.describe("benefits", "dataset", "applications",  # doctest: +SKIP
        ...                     columns={"age": "Age in years"})
        >>> ml.catalog.lineage("benefits", "dataset", "applications:2")  # doctest: +SKIP
    """

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def _service(self) -> Any:
        from civicml.catalog.service import CatalogService

        return CatalogService(self._backend.ctx)

    @staticmethod
    def _path(project: str, kind: str, name: str) -> str:
        plural = "datasets" if str(kind).strip().lower() == "dataset" else "models"
        return f"/api/v1/projects/{quote(project, safe='')}/catalog/{plural}/{quote(name, safe='')}"

    def search(
        self,
        text: str | None = None,
        *,
        kinds: Sequence[str] | None = None,
        column: str | None = None,
        tag: str | None = None,
        owner: str | None = None,
        classification: str | None = None,
        project: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> SearchPage:
        """One page of datasets, models, model versions and reports the caller may read that
        match: ``text`` in a name, description or title; a ``column`` name; a ``tag``; an
        ``owner``; a ``classification``; one ``project``."""
        if self._backend.remote:
            params: dict[str, Any] = {"limit": limit, "offset": offset}
            for key, value in (
                ("q", text),
                ("column", column),
                ("tag", tag),
                ("owner", owner),
                ("classification", classification),
                ("project", project),
            ):
                if value is not None:
                    params[key] = value
            if kinds:
                params["kind"] = list(kinds)
            data = self._backend._json("GET", "/api/v1/catalog/search", params=params)
            return SearchPage.model_validate(data)
        return self._service().search(  # type: ignore[no-any-return]
            text,
            kinds=list(kinds) if kinds else None,
            column=column,
            tag=tag,
            owner=owner,
            classification=classification,
            project=project,
            limit=limit,
            offset=offset,
        )

    def get(self, project: str, kind: str, name: str) -> CatalogEntry:
        """The catalog entry of a dataset or model: description, classification, tags and
        (datasets) the latest version's columns with their notes."""
        if self._backend.remote:
            data = self._backend._json("GET", self._path(project, kind, name))
            return CatalogEntry.model_validate(data)
        return self._service().get(project, kind, name)  # type: ignore[no-any-return]

    def describe(
        self,
        project: str,
        kind: str,
        name: str,
        *,
        description: str | None = None,
        classification: str | None = None,
        tags: Sequence[str] | None = None,
        columns: Mapping[str, str] | None = None,
    ) -> CatalogEntry:
        """Document a dataset or model; what is left out stays. ``columns`` notes are merged
        (an empty note removes one); ``tags`` replace the tags."""
        try:
            request = DescribeRequest.model_validate(
                {
                    "description": description,
                    "classification": classification,
                    "tags": None if tags is None else list(tags),
                    "columns": None if columns is None else dict(columns),
                }
            )
        except ValidationError as err:
            problem = err.errors()[0]
            raise InvalidInputError(
                f"Invalid description: {problem['msg'].removeprefix('Value error, ')}.",
                hint="Classification: public, internal, confidential or personal.",
            ) from None
        if self._backend.remote:
            body = request.model_dump(mode="json", exclude_none=True)
            data = self._backend._json("PUT", self._path(project, kind, name), json_body=body)
            return CatalogEntry.model_validate(data)
        return self._service().describe(project, kind, name, request)  # type: ignore[no-any-return]

    def lineage(
        self,
        project: str,
        kind: str,
        ref: str,
        *,
        direction: str = "both",
        max_depth: int = 10,
    ) -> LineageGraph:
        """The lineage of ``NAME`` (latest version) or ``NAME:VERSION`` of a dataset or model."""
        name, version = parse_ref(ref)
        if self._backend.remote:
            params: dict[str, Any] = {"direction": direction, "max_depth": max_depth}
            if version is not None:
                params["version"] = version
            path = self._path(project, kind, name) + "/lineage"
            return LineageGraph.model_validate(self._backend._json("GET", path, params=params))
        return self._service().lineage(  # type: ignore[no-any-return]
            project, kind, name, version, direction=direction, max_depth=max_depth
        )
