"""``proj.datasets``: ingest and read dataset versions, embedded or against a server."""

from __future__ import annotations

import builtins
import hashlib
import io
import tempfile
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter

from civicml.core.errors import ArtifactIntegrityError, InvalidInputError
from civicml.core.ids import validate_name
from civicml.data.ingest import open_source
from civicml.data.schemas import Dataset, DatasetVersion, SourceFormat
from civicml.data.service import DatasetService
from civicml.sdk.data_checks import DataChecksMixin

__all__ = ["DatasetsHandle"]

_VERSIONS = TypeAdapter(list[DatasetVersion])
_DATASETS = TypeAdapter(list[Dataset])
_SPOOL_BYTES = 8 << 20


class DatasetsHandle(DataChecksMixin):
    """The datasets of a project (quality expectations and personal data: DataChecksMixin).

    Args:
        backend: The SDK backend (embedded or remote).
        project: Project name.

    Example:
        >>> raw = proj.datasets.ingest("applications", "applications.csv")  # doctest: +SKIP
        >>> proj.datasets.to_pandas(raw).head()  # doctest: +SKIP
    """

    def __init__(self, backend: Any, project: str) -> None:
        self._backend = backend
        self._project = project

    @property
    def _svc(self) -> DatasetService:
        return DatasetService(self._backend.ctx)

    def _base(self, name: str | None = None) -> str:
        base = f"/api/v1/projects/{quote(validate_name('Project', self._project), safe='')}"
        base += "/datasets"
        return base if name is None else f"{base}/{quote(validate_name('Dataset', name), safe='')}"

    def ingest(
        self,
        name: str,
        source: Any,
        *,
        format: str | None = None,
        encoding: str | None = None,
        delimiter: str | None = None,
        description: str = "",
        progress: bool | None = None,
    ) -> DatasetVersion:
        """Store ``source`` as a new immutable version of dataset ``name``.

        ``source`` is a CSV, Parquet or JSON Lines file path or a pandas DataFrame (or pyarrow
        Table). Identical content returns the existing version instead of a copy. A CSV file's
        ``encoding`` and ``delimiter`` are detected unless given (e.g. ``encoding="cp1252"``,
        ``delimiter=";"``); the version's ``read_options`` say what was used.
        """
        if not self._backend.remote:
            return self._svc.ingest(
                self._project,
                name,
                source,
                format=format,
                encoding=encoding,
                delimiter=delimiter,
                description=description,
                progress=progress,
            )
        validate_name("Dataset", name)
        # the same checks and messages as embedded; the server detects what is not given
        checked = open_source(source, format, encoding=encoding, delimiter=delimiter)
        params = {"description": description}
        if checked.encoding is not None:
            params["encoding"] = checked.encoding
        if checked.delimiter is not None:
            params["delimiter"] = checked.delimiter
        if checked.format is SourceFormat.DATAFRAME:
            import pyarrow.parquet as pq  # type: ignore[import-untyped]

            with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
                pq.write_table(checked.frame, spool)
                spool.seek(0)
                body = self._backend._json(
                    "POST",
                    f"{self._base(name)}/versions",
                    params={**params, "format": "parquet"},
                    content=spool,
                )
        else:
            if checked.path is None:
                raise InvalidInputError(
                    "The remote client ingests files and data frames.",
                    hint="Pass a file path or a pandas DataFrame.",
                )
            with open(checked.path, "rb") as upload:
                body = self._backend._json(
                    "POST",
                    f"{self._base(name)}/versions",
                    params={**params, "format": checked.format.value},
                    content=upload,
                )
        return DatasetVersion.model_validate(body)

    def get(self, name: str) -> Dataset:
        """The dataset ``name``."""
        if not self._backend.remote:
            return self._svc.get_dataset(self._project, name)
        return Dataset.model_validate(self._backend._json("GET", self._base(name)))

    def list(self) -> builtins.list[Dataset]:
        """Every dataset of the project, by name."""
        if not self._backend.remote:
            return self._svc.list_datasets(self._project)
        return _DATASETS.validate_python(self._backend._json("GET", self._base()))

    def version(self, name: str, version: int | str = "latest") -> DatasetVersion:
        """A version by number, or ``"latest"``."""
        if not self._backend.remote:
            return self._svc.get_version(self._project, name, version)
        path = f"{self._base(name)}/versions/{quote(str(version), safe='')}"
        return DatasetVersion.model_validate(self._backend._json("GET", path))

    def versions(self, name: str) -> builtins.list[DatasetVersion]:
        """The versions of a dataset, oldest first."""
        if not self._backend.remote:
            return self._svc.list_versions(self._project, name)
        return _VERSIONS.validate_python(self._backend._json("GET", f"{self._base(name)}/versions"))

    def read(self, version: DatasetVersion) -> Any:
        """The rows of a version as a ``pyarrow.Table``, verified against its SHA-256."""
        import pyarrow.parquet as pq

        if not self._backend.remote:
            return self._svc.read(version)
        if version.project != self._project:
            raise InvalidInputError(
                f"Dataset version {version.name} v{version.version} belongs to project "
                f"{version.project!r}, not {self._project!r}.",
                hint=f"Read it from ml.project({version.project!r}).datasets.",
            )
        path = f"{self._base(version.name)}/versions/{version.version}/data"
        data = self._backend.call("GET", path).content
        if hashlib.sha256(data).hexdigest() != version.digest:
            raise ArtifactIntegrityError(
                f"The Parquet file received for {version.name} v{version.version} does not match "
                f"its SHA-256 sha256:{version.digest}; it was not used.",
                hint="Try again; if it persists, run 'civicml audit verify' on the server.",
            )
        return pq.read_table(io.BytesIO(data))

    def to_pandas(self, version: DatasetVersion) -> Any:
        """The rows of a version as a pandas ``DataFrame``."""
        return self.read(version).to_pandas()
