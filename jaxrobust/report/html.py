"""One self-contained `report.html`: plots embedded, tables, summaries and the config."""

from __future__ import annotations

import base64
import html
import json
import os


def _img(path: str, title: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(title)}'>"
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def write_report(path: str, *, title: str, figures: list[tuple[str, str]], tables: list,
                 summary: dict, config: dict, notes: list[str] = ()) -> str:
    """Writes `path` (atomically).

    Args:
        figures: `(png path, caption)` pairs, embedded as base64, or `(png path,
            caption, DataFrame)` with a table shown right under the figure.
        tables: `(heading, pandas DataFrame)` pairs.
        summary: JSON-able summaries, shown as a list.
        config: the run's config, shown as JSON.
        notes: paragraphs shown under the title.
    """
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}",
        "img{max-width:100%}figure{margin:1em 0}figcaption{color:#555;font-size:90%}",
        "table{border-collapse:collapse;font-size:85%}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:right}pre{background:#f6f6f6;padding:1em;overflow:auto}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    parts.append("<h2>Figures</h2>")
    for fig in figures:
        parts.append(_img(fig[0], fig[1]))
        if len(fig) > 2 and fig[2] is not None:
            parts.append(fig[2].to_html(index=False, float_format=lambda v: f"{v:.4g}"))
    parts.append("<h2>Summary</h2><pre>" + html.escape(json.dumps(summary, indent=2)) + "</pre>")
    for heading, frame in tables:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(frame.to_html(index=False, float_format=lambda v: f"{v:.4g}"))
    parts.append("<h2>Config</h2><pre>" + html.escape(json.dumps(config, indent=2)) + "</pre>")
    parts.append("</body></html>")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(parts))
    os.replace(tmp, path)
    return path
