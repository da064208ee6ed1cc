"""The catalog: search datasets, models and reports across the projects a caller may read;
describe them (classification, tags, column notes); reach their lineage in one call."""

from civicml.catalog.schemas import (
    CatalogEntry,
    CatalogHit,
    ColumnDoc,
    DescribeRequest,
    SearchPage,
)
from civicml.catalog.service import CatalogService

__all__ = [
    "CatalogEntry",
    "CatalogHit",
    "CatalogService",
    "ColumnDoc",
    "DescribeRequest",
    "SearchPage",
]
