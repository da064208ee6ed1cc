"""One look for every self-contained HTML report (drift, bias, explanations).

Reports are single files that load nothing: the page skeleton and the shared CSS live here, and
each report's template extends ``page.html`` with its own ``style`` and ``body`` blocks::

    {% extends "page.html" %}
    {% block style %}.verdict { font-weight: 600; }{% endblock %}
    {% block body %}<main><h1>{{ title }}</h1>...</main>{% endblock %}

Everything is autoescaped; the server serves these pages with a Content-Security-Policy that
allows only their own ``<style>`` blocks (by hash).
"""

from __future__ import annotations

from jinja2 import DictLoader, Environment, Template, select_autoescape

__all__ = ["report_template"]

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  padding: 1rem; color: #1a1a1a; background: #fff; line-height: 1.4; }
main { max-width: 72rem; margin: 0 auto; }
h1 { font-size: 1.5rem; margin: 0 0 .5rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { border-bottom: 1px solid #ddd; padding: .35rem .5rem; text-align: left;
  vertical-align: top; }
th { background: #f3f4f6; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(20rem, 1fr));
  gap: 1rem; }
figure { margin: 0; border: 1px solid #ddd; border-radius: .5rem; padding: .75rem; }
figcaption { font-size: .9rem; margin-bottom: .5rem; }
{% block style %}{% endblock %}
</style>
</head>
<body>
{% block body %}{% endblock %}
</body>
</html>
"""

_ENV = Environment(
    loader=DictLoader({"page.html": _PAGE}),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def report_template(source: str) -> Template:
    """Compile a report template that extends ``page.html``."""
    return _ENV.from_string(source)
