"""One self-contained `report.html`: plots embedded, tables, summaries and the config."""

from __future__ import annotations

import base64
import html

from jaxrobust import _io


def _img(path: str, title: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(title)}'>"
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return html.escape(str(v))


def _table(frame, *, collapse_over: int = 20, file: str | None = None) -> str:
    """A DataFrame as an HTML table (numbers to 3 significant digits); long ones folded,
    with a link to `file` (the same rows in full) when given."""
    body = ("<div class='wide'>" + frame.to_html(index=False, float_format=lambda v: f"{v:.3g}",
                                                  na_rep="–") + "</div>")
    if len(frame) > collapse_over:
        link = (f"<p>Every row at full precision: <a href='{html.escape(file)}'>"
                f"{html.escape(file)}</a>.</p>" if file else "")
        return (f"<details><summary>{len(frame)} rows (click to show)</summary>{body}"
                f"</details>{link}")
    return body


def write_report(path: str, *, title: str, figures: list, tables: list, summary: dict,
                 config: dict, notes: list[str] = (), overview: list | None = None,
                 results: list = (), flags: list[str] = (), footer: list | None = None,
                 summary_file: str | None = None) -> str:
    """Writes `path` (atomically): what was run first, then results, then details.

    Args:
        figures: `(png path, caption)` pairs, embedded as base64, or `(png path,
            caption, DataFrame)` with a table shown right under the figure.
        tables: `(heading, pandas DataFrame[, file])`, shown after the figures; a
            table over 20 rows is folded (`<details>`) and links to `file`, its CSV.
        summary: the run's summaries; shown as a link to `summary_file` when given,
            else as a short key list (never as a raw dump).
        config: the run's config (the sections that applied), shown as YAML.
        notes: paragraphs shown under the title.
        overview: `(label, value)` rows: what was run (data, task, models, time).
        results: `(heading, DataFrame)` pairs shown right after the overview: the
            results table (one row per model, or method) and its details.
        flags: sentences about likely problems (overfitting, chance level, ...).
        footer: `(label, value)` rows: versions, devices, protocol, seed, command.
    """
    import yaml

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em}",
        "img{max-width:100%}figure{margin:1em 0}figcaption{color:#555;font-size:90%}",
        "table{border-collapse:collapse;font-size:85%}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:right}pre{background:#f6f6f6;padding:1em;overflow:auto}",
        ".wide{overflow-x:auto}.flags li{color:#8a4b00}dl.kv{display:grid;"
        "grid-template-columns:max-content auto;gap:2px 1em}dl.kv dt{font-weight:600}"
        "dl.kv dd{margin:0}footer{margin-top:3em;color:#555;font-size:85%}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    if overview:
        parts.append("<h2>What was run</h2><dl class='kv'>")
        parts += [f"<dt>{html.escape(k)}</dt><dd>{_cell(v)}</dd>" for k, v in overview]
        parts.append("</dl>")
    for heading, frame in results:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(_table(frame))
    if flags:
        parts.append("<h2>Check these</h2><ul class='flags'>")
        parts += [f"<li>{html.escape(f)}</li>" for f in flags]
        parts.append("</ul>")
    parts.append("<h2>Figures</h2>")
    for fig in figures:
        parts.append(_img(fig[0], fig[1]))
        if len(fig) > 2 and fig[2] is not None:
            parts.append(_table(fig[2]))
    for heading, frame, *file in tables:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(_table(frame, file=file[0] if file else None))
    if summary_file:
        link = html.escape(summary_file)
        parts.append(f"<p>Every summary, at full precision: <a href='{link}'>{link}</a>.</p>")
    elif summary:
        parts.append("<p>Summaries: " + html.escape(", ".join(map(str, summary))) + ".</p>")
    parts.append("<h2>Config</h2><pre>" + html.escape(yaml.safe_dump(config, sort_keys=False))
                 + "</pre>")
    if footer:
        parts.append("<footer><dl class='kv'>")
        parts += [f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in footer]
        parts.append("</dl></footer>")
    parts.append("</body></html>")
    _io.write_text(path, "\n".join(parts))
    return path
