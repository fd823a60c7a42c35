"""The API page at ``/docs``, rendered on the server from the OpenAPI schema.

FastAPI's own ``/docs`` (Swagger UI) and ``/redoc`` load their JavaScript and CSS from a CDN,
and no installed package ships those assets, so they would show a blank page offline. This
page is plain HTML with no script: every route, its form fields and its answers, read from
the same schema that ``/openapi.json`` serves.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 56rem; margin: 2rem auto; padding: 0 1rem;
  color: #1d2430; }
h2 { margin-top: 2rem; font-size: 1.1rem; }
code, .route { font-family: ui-monospace, monospace; }
.route { background: #eef2f7; padding: .4rem .6rem; border-radius: 6px; }
.method { font-weight: 700; color: #0b5cad; margin-right: .5rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
td, th { border-bottom: 1px solid #dde3ea; padding: .3rem .5rem; text-align: left;
  vertical-align: top; }
th { font-weight: 600; color: #56606e; }
"""


def _text(markdown: str) -> str:
    """A description as HTML: escaped, with its `code` spans (the only Markdown used) kept."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(markdown))


def _schema(ref_or_schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    ref = ref_or_schema.get("$ref")
    return components.get(ref.rsplit("/", 1)[-1], {}) if ref else ref_or_schema


def _kind(prop: dict[str, Any]) -> str:
    """A field's type in a word: ``file``, ``string``, ``integer`` ... (optional ones are
    ``anyOf [x, null]`` in the schema; files are binary strings, as OpenAPI 3.0 or 3.1 says)."""
    options = prop.get("anyOf", [prop])
    kinds = [
        "file" if o.get("format") == "binary" or "contentMediaType" in o else o.get("type", "")
        for o in options
    ]
    return " or ".join(k for k in kinds if k and k != "null") or "any"


def _fields(operation: dict[str, Any], components: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for param in operation.get("parameters", []):
        rows.append((param["name"], f"{param['in']} parameter", param.get("description", "")))
    content = operation.get("requestBody", {}).get("content", {})
    for media in content.values():
        body = _schema(media.get("schema", {}), components)
        required = set(body.get("required", []))
        for name, prop in body.get("properties", {}).items():
            kind = _kind(prop) + ("" if name in required else ", optional")
            rows.append((name, kind, prop.get("description", "")))
    return rows


def render(schema: dict[str, Any]) -> str:
    """The HTML page of ``schema`` (an OpenAPI 3 document as FastAPI makes it)."""
    components = schema.get("components", {}).get("schemas", {})
    info = schema.get("info", {})
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<link rel='icon' href='data:,'>",
        f"<title>{escape(info.get('title', 'API'))} API</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(info.get('title', 'API'))} API</h1>",
        f"<p>{escape(info.get('description', ''))}</p>",
        "<p>The machine-readable schema: <a href='/openapi.json'>/openapi.json</a>. "
        "The page: <a href='/'>/</a>.</p>",
    ]
    for path, methods in schema.get("paths", {}).items():
        for method, operation in methods.items():
            parts.append(f"<h2>{escape(operation.get('summary', path))}</h2>")
            parts.append(
                f"<p class='route'><span class='method'>{method.upper()}</span>{escape(path)}</p>"
            )
            parts.append(f"<p>{_text(operation.get('description', ''))}</p>")
            rows = _fields(operation, components)
            if rows:
                parts.append("<table><tr><th>field</th><th>type</th><th>meaning</th></tr>")
                parts += [
                    f"<tr><td><code>{escape(n)}</code></td><td>{escape(k)}</td>"
                    f"<td>{_text(d)}</td></tr>"
                    for n, k, d in rows
                ]
                parts.append("</table>")
            answers = operation.get("responses", {})
            if answers:
                parts.append("<table><tr><th>answer</th><th>meaning</th></tr>")
                parts += [
                    f"<tr><td>{escape(code)}</td><td>{escape(a.get('description', ''))}</td></tr>"
                    for code, a in answers.items()
                ]
                parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
