"""Checks of what an evaluation is asked for: selectors, facets, labels, options.

Each raises :class:`~civicml.core.errors.InvalidInputError` naming the offending column or
value, with the closest names or the values present as the hint. Labels and facet values given
as text are matched to the column's own values by their text (``"1"`` finds the integer ``1``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from pydantic import ValidationError

from civicml.core.errors import InvalidInputError, closest
from civicml.data.schemas import DatasetVersion
from civicml.evaluation.records import KINDS, FacetSpec, Scalar
from civicml.registry.schemas import ModelVersion
from civicml.training import TabularModel

__all__ = [
    "FACET_FORMS",
    "MISSING",
    "bounded",
    "check_kind",
    "engine_values",
    "evaluation_title",
    "facet_specs",
    "match_facet",
    "match_positives",
    "match_value",
    "plain",
    "require",
    "require_signature",
    "version_selector",
]

FACET_FORMS = (
    "Write 'sex', {'column': 'sex', 'values': ['female']} or {'column': 'age', 'threshold': 40}."
)
#: What :func:`match_value` returns when a column has no such value.
MISSING = object()


def version_selector(selector: Any, role: str, example: str) -> tuple[str, int | str]:
    """``(name, version)`` checked: a dataset or model version as the caller wrote it."""
    if (
        not isinstance(selector, tuple | list)
        or len(selector) != 2
        or not isinstance(selector[0], str)
        or not isinstance(selector[1], int | str)
        or isinstance(selector[1], bool)
    ):
        raise InvalidInputError(
            f"The {role} version {selector!r} is not ({role} name, version).",
            hint=f"Write e.g. {role}={example}.",
        )
    return selector[0], selector[1]


def evaluation_title(
    title: str | None, what: str, dv: DatasetVersion, mv: ModelVersion | None
) -> str:
    """The title given (1-256 characters), or ``"Bias: eligibility v2 on applications v1"``."""
    if title is None:
        on = f"{dv.name} v{dv.version}"
        return f"{what}: {on}" if mv is None else f"{what}: {mv.name} v{mv.version} on {on}"
    text = title.strip()
    if not text or len(text) > 256:
        raise InvalidInputError(
            f"Evaluation title {title[:40]!r} is not valid.", hint="Use 1-256 characters."
        )
    return text


def bounded(name: str, value: Any, low: int, high: int) -> int:
    """``value`` when it is a whole number from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInputError(
            f"{name} = {value!r} is out of range.",
            hint=f"Use a whole number from {low} to {high:,}.",
        )
    return value


def check_kind(kind: str | None) -> None:
    """Refuse an evaluation kind that does not exist (``None`` means any)."""
    if kind is not None and kind not in KINDS:
        raise InvalidInputError(
            f"Evaluation kind {kind!r} is not known.",
            hint=closest(kind, KINDS) or f"Use one of {', '.join(KINDS)}.",
        )


def require(column: str, names: list[str], role: str, where: str) -> None:
    """Refuse a column (the label, a facet, the group) that the dataset version lacks."""
    if not isinstance(column, str) or column not in names:
        raise InvalidInputError(
            f"Column {column!r} ({role}) is not in {where}.",
            hint=closest(str(column), names) or f"Its columns: {', '.join(names[:30])}.",
        )


def require_signature(fitted: TabularModel, mv: ModelVersion, names: list[str], where: str) -> None:
    """Refuse a dataset version that lacks a column of the model's signature."""
    missing = [c for c in fitted.feature_names if c not in names]
    if missing:
        raise InvalidInputError(
            f"Column {missing[0]!r} that model {mv.name} v{mv.version} needs is not in {where}"
            + (f" ({len(missing)} of its input columns are missing)." if len(missing) > 1 else "."),
            hint=closest(missing[0], names)
            or f"The model's input columns: {', '.join(fitted.feature_names[:30])}.",
        )


def facet_specs(facets: Any) -> list[FacetSpec]:
    """Facets as given (a name, a spec, its dict, or a list of them) as checked specs."""
    items = [facets] if isinstance(facets, str | FacetSpec | Mapping) else facets
    if not isinstance(items, Sequence) or not items:
        raise InvalidInputError(f"facets {facets!r} names no facet.", hint=FACET_FORMS)
    specs = []
    for item in items:
        if isinstance(item, FacetSpec):
            specs.append(item)
            continue
        raw = {"column": item} if isinstance(item, str) else item
        try:
            specs.append(FacetSpec.model_validate(raw))
        except ValidationError as err:
            problem = err.errors()[0]
            raise InvalidInputError(
                f"Facet {item!r} is not valid: {problem['msg']}.", hint=FACET_FORMS
            ) from err
    seen: set[str] = set()
    for spec in specs:
        if spec.column in seen:
            raise InvalidInputError(
                f"Facet {spec.column!r} is named twice.",
                hint="Name each column once; list several values in its 'values'.",
            )
        seen.add(spec.column)
    return specs


def match_value(value: Any, series: pd.Series) -> Any:
    """The value of ``series`` equal to ``value``, or whose text is (``"1"`` finds ``1``)."""
    present = pd.unique(series.dropna())
    number = _number(value)
    if number is not None:
        for candidate in present:
            if _number(candidate) == number:
                return candidate
    text = str(value).strip().lower()
    for candidate in present:
        if str(candidate).lower() == text:
            return candidate
    return MISSING


def _number(value: Any) -> float | None:
    """``value`` as a number when it is one (or text of one); booleans count as 0 and 1."""
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool | np.bool_ | int | float | np.integer | np.floating):
        return float(value)
    return None


def _present(series: pd.Series) -> str:
    shown = [str(v) for v in pd.unique(series.dropna())[:12]]
    more = ", ..." if series.nunique() > len(shown) else ""
    return f"Values present: {', '.join(shown)}{more}." if shown else "The column has no values."


def match_positives(positive_label: Any, series: pd.Series, label: str, where: str) -> list[Any]:
    """The label column's own values for ``positive_label`` (one value or several)."""
    values = (
        list(positive_label)
        if isinstance(positive_label, list | tuple | set | frozenset)
        else [positive_label]
    )
    if not values:
        raise InvalidInputError(
            "positive_label is empty.", hint="Name the favourable label value, e.g. 1 or 'yes'."
        )
    matched = []
    for value in values:
        found = match_value(value, series)
        if found is MISSING:
            raise InvalidInputError(
                f"Positive label {value!r} is not a value of label column {label!r} in {where}.",
                hint=_present(series),
            )
        matched.append(found)
    return matched


def match_facet(spec: FacetSpec, series: pd.Series, where: str) -> FacetSpec:
    """``spec`` with each of its values replaced by the facet column's own value."""
    if spec.values is None:
        return spec
    matched: list[Scalar | list[Scalar]] = []
    for entry in spec.values:
        group = entry if isinstance(entry, list) else [entry]
        found = []
        for value in group:
            hit = match_value(value, series)
            if hit is MISSING:
                raise InvalidInputError(
                    f"Facet value {value!r} is not in column {spec.column!r} of {where}.",
                    hint=closest(str(value), [str(v) for v in pd.unique(series.dropna())])
                    or _present(series),
                )
            found.append(plain(hit))
        matched.append(found if isinstance(entry, list) else found[0])
    return spec.model_copy(update={"values": matched})


def engine_values(spec: FacetSpec) -> list[Any]:
    """``spec.values`` as the bias engine takes them: a group of values as a tuple."""
    return [tuple(v) if isinstance(v, list) else v for v in spec.values or []]


def plain(value: Any) -> Any:
    """A NumPy scalar as the Python value JSON can hold."""
    return value.item() if isinstance(value, np.generic) else value
