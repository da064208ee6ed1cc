"""Datasets: immutable, content-addressed versions of tabular data with schema and profile.

``DatasetService.ingest`` streams a CSV, Parquet or JSON Lines file (or a pandas DataFrame) into
canonical Parquet in the artifact store, in bounded memory. Each version records its SHA-256, its
columns with Arrow types, its row count, a per-column profile and how its columns changed since the
previous version; identical content gives back the existing version instead of a copy.
"""

from civicml.data.schemas import (
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
    "ColumnKind",
    "ColumnProfile",
    "ColumnSchema",
    "Dataset",
    "DatasetService",
    "DatasetVersion",
    "ReadOptions",
    "SchemaChanges",
    "SourceFormat",
    "TopValue",
    "TypeChange",
    "diff_schemas",
]
