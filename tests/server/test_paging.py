"""List routes answer bounded pages: ``limit``/``offset``, a ``Link: rel="next"`` header while
more remain, ``X-Total-Count``; the remote SDK follows the links, so its lists stay complete."""

from __future__ import annotations

import httpx
import pytest

from civicml.sdk.remote import RemoteBackend
from civicml.server.paging import MAX_LIMIT
from tests.server.helpers import API, Server, assert_error


def _models(api: httpx.Client, project: str, n: int) -> list[str]:
    names = [f"model-{i}" for i in range(n)]
    for name in names:
        created = api.post(f"{API}/projects/{project}/models", json={"name": name})
        assert created.status_code == 201, created.text
    return names


def test_a_list_comes_in_pages_linked_by_next(api: httpx.Client, project: str) -> None:
    names = _models(api, project, 5)
    url: str | None = f"{API}/projects/{project}/models?limit=2"
    seen: list[str] = []
    pages = 0
    while url is not None:
        response = api.get(url)
        assert response.status_code == 200, response.text
        assert response.headers["x-total-count"] == "5"
        body = response.json()
        assert len(body) <= 2
        seen.extend(m["name"] for m in body)
        following = response.links.get("next")
        url = None if following is None else following["url"]
        pages += 1
    assert pages == 3
    assert sorted(seen) == names  # every model once, none twice


def test_the_whole_list_in_one_page_has_no_next_link(api: httpx.Client, project: str) -> None:
    _models(api, project, 3)
    response = api.get(f"{API}/projects/{project}/models")
    assert len(response.json()) == 3
    assert "link" not in response.headers
    past_the_end = api.get(f"{API}/projects/{project}/models", params={"offset": 10})
    assert past_the_end.json() == [] and "link" not in past_the_end.headers


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": MAX_LIMIT + 1}, {"limit": "true"}, {"offset": -1}, {"offset": 2**63}],
)
def test_page_bounds_are_checked(
    api: httpx.Client, project: str, params: dict[str, object]
) -> None:
    response = api.get(f"{API}/projects/{project}/models", params=params)
    assert_error(response, 422, "InvalidInputError", "Invalid input at query.")


@pytest.mark.parametrize(
    "path",
    [
        "/projects",
        "/projects/{p}/models",
        "/projects/{p}/datasets",
        "/projects/{p}/endpoints",
        "/projects/{p}/evaluations",
        "/projects/{p}/reports",
    ],
)
def test_every_array_list_route_takes_a_page_size(
    api: httpx.Client, project: str, path: str
) -> None:
    response = api.get(API + path.format(p=project), params={"limit": MAX_LIMIT + 1})
    assert response.status_code == 422, response.text


def test_the_remote_sdk_follows_next_links(server: Server, api: httpx.Client, project: str) -> None:
    names = _models(api, project, 5)
    backend = RemoteBackend(server.url, settings=server.settings)
    try:
        whole = backend._json("GET", f"{API}/projects/{project}/models", params={"limit": 2})
    finally:
        backend.close()
    assert sorted(m["name"] for m in whole) == names
