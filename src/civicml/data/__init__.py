"""Datasets: immutable, content-addressed versions of tabular data with schema and profile.

``DatasetService.ingest`` streams a CSV, Parquet or JSON Lines file (or a pandas DataFrame) into
Parquet in the artifact store, in bounded memory. Each version records its content hash (column
names, types and values: its identity, :mod:`civicml.data.content`), the file's SHA-256, its
columns with Arrow types, its row count, a per-column profile and how its columns changed since the
previous version; identical content gives back the existing version instead of a copy.

Every new version is scanned for personal data and checked against its dataset's quality
expectations (``QualityService`` in :mod:`civicml.data.quality`, ``PersonalDataService`` in
:mod:`civicml.data.personal`); a version failing a blocking expectation is quarantined.
"""

from civicml.data.expectation_schemas import (
    Expectation,
    ExpectationCreate,
    ExpectationKind,
    ExpectationResult,
    QualityReport,
    QualityStatus,
)
from civicml.data.pii_schemas import (
    KAnonymity,
    PiiFinding,
    PiiReport,
    PiiType,
    RedactAction,
    RedactionResult,
    RedactionRule,
    RedactRequest,
)
from civicml.data.schemas import (
    Classification,
    ColumnKind,
    ColumnProfile,
    ColumnSchema,
    Dataset,
    DatasetVersion,
    ReadOptions,
    SchemaChanges,
    SourceFormat,
    TopValue,
    TypeChange,
)
from civicml.data.service import DatasetService, diff_schemas

__all__ = [
    "Classification",
    "ColumnKind",
    "ColumnProfile",
    "ColumnSchema",
    "Dataset",
    "DatasetService",
    "DatasetVersion",
    "Expectation",
    "ExpectationCreate",
    "ExpectationKind",
    "ExpectationResult",
    "KAnonymity",
    "PiiFinding",
    "PiiReport",
    "PiiType",
    "QualityReport",
    "QualityStatus",
    "ReadOptions",
    "RedactAction",
    "RedactRequest",
    "RedactionResult",
    "RedactionRule",
    "SchemaChanges",
    "SourceFormat",
    "TopValue",
    "TypeChange",
    "diff_schemas",
]
