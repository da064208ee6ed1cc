"""Serving the self-contained HTML pages (reports, model cards) with their own strict policy:
nothing may load or run, and only the page's own ``<style>`` blocks apply (by hash)."""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import Response

__all__ = ["html_policy", "html_response"]

_STYLE = re.compile(r"<style>(.*?)</style>", re.DOTALL)


def html_policy(html: str) -> str:
    """The strictest policy that still renders ``html``: its ``<style>`` blocks by hash only."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m.encode()).digest()).decode() + "'"
        for m in _STYLE.findall(html)
    )
    style = f"style-src {hashes}; " if hashes else ""
    return f"default-src 'none'; {style}base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


def html_response(page: str | bytes) -> Response:
    """``page`` as ``text/html`` with its :func:`html_policy`."""
    text = page.decode() if isinstance(page, bytes) else page
    return Response(
        text,
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": html_policy(text)},
    )
