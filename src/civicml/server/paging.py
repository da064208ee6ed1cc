"""Bounded pages for list routes that answer a JSON array.

Every such route takes ``limit`` (1 to :data:`MAX_LIMIT`, default :data:`DEFAULT_LIMIT`) and
``offset``, answers at most ``limit`` items, and when more remain sends an RFC 8288 ``Link``
header with ``rel="next"`` (as GitHub's API does) plus ``X-Total-Count``. The body stays an
array, so existing clients keep working; the remote SDK follows ``next`` links, so an SDK list
is still complete. Routes whose lists can grow without bound have their own cursors (runs,
metric history, audit events).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, TypeVar

from fastapi import Depends, Query, Request, Response
from pydantic import BaseModel

from civicml.core.types import INT64_MAX

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Page", "PageParams", "page"]

DEFAULT_LIMIT = 1_000
MAX_LIMIT = 10_000

T = TypeVar("T")


class PageParams(BaseModel):
    limit: int
    offset: int


def _params(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page (at most {MAX_LIMIT:,}).")
    ] = DEFAULT_LIMIT,
    offset: Annotated[
        int, Query(ge=0, le=INT64_MAX, description="Items to skip (from a `next` link).")
    ] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


#: The ``limit``/``offset`` query parameters of a list route.
Page = Annotated[PageParams, Depends(_params)]


def page(items: Sequence[T], params: PageParams, request: Request, response: Response) -> list[T]:
    """The requested slice of ``items``; sets ``Link: <…>; rel="next"`` when more remain."""
    end = params.offset + params.limit
    response.headers["X-Total-Count"] = str(len(items))
    if end < len(items):
        url = request.url.include_query_params(limit=params.limit, offset=end)
        response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    return list(items[params.offset : end])
