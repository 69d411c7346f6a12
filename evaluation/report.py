"""The nightly report: one self-contained HTML file (tables and inline PNG plots), JSON for
machines, and a short markdown summary."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from evaluation.history import load_history
from evaluation.runner import SuiteResult

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330}
h1{margin-bottom:.2rem} .meta{color:#5b6475;margin-top:0}
.verdict{padding:1rem 1.2rem;border-radius:8px;font-size:1.2rem;font-weight:600;margin:1rem 0}
.pass{background:#e3f6e8;color:#155d2b} .fail{background:#fde5e5;color:#8a1c1c}
table{border-collapse:collapse;margin:.6rem 0 1.6rem;width:100%;font-size:.85rem}
th,td{border:1px solid #d5d9e2;padding:.35rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f2f4f8}
td.leak{background:#fde5e5;font-weight:700} .plots img{max-width:100%;border:1px solid #e3e6ec}
ul.failures li{color:#8a1c1c} ul.notes li{color:#5b6475}
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.length > 0 && imgs.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-rendered', ok ? 'ok' : 'broken');
  document.body.setAttribute('data-tables', String(document.querySelectorAll('table').length));
});
"""


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _plots(result: SuiteResult, history: list[dict[str, Any]]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for mode in result.modes:
        points = sorted(
            (p.selectivity, p.metrics["nDCG@10"]) for p in mode.personas if "nDCG@10" in p.metrics
        )
        if points:
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=mode.mode)
    ax.set_xlabel("share of the corpus the persona may read (ACL selectivity)")
    ax.set_ylabel("nDCG@10 on what it may read")
    ax.set_xlim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Quality by ACL selectivity")
    plots.append(("Quality by ACL selectivity", _png(fig)))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.6))
    keys = sorted({k for h in history for k in h.get("headline", {}) if k.endswith("nDCG@10")})
    for key in keys:
        values = [h["headline"].get(key) for h in history]
        ax.plot(range(1, len(values) + 1), values, marker="o", label=key)
    ax.set_xticks(range(1, len(history) + 1))
    ax.set_xlabel("run")
    ax.set_ylabel("nDCG@10 (persona 'all')")
    ax.grid(alpha=0.3)
    if keys:
        ax.legend()
    ax.set_title(f"Trend across the last {len(history)} runs")
    plots.append(("Trend across past runs", _png(fig)))
    plt.close(fig)
    return plots


def _table(
    headers: list[str], rows: list[list[str]], classes: list[list[str]] | None = None
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            cls = classes[i][j] if classes else ""
            cells.append(f'<td class="{cls}">{html.escape(cell)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_html(result: SuiteResult, history: list[dict[str, Any]]) -> str:
    verdict = "PASS" if result.passed else "FAIL"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(result.suite)}: {verdict}</title><style>{_CSS}</style>",
        f"<script>{_SCRIPT}</script></head><body>",
        f"<h1>Retrieval evaluation: {html.escape(result.suite)}</h1>",
        f"<p class='meta'>{html.escape(result.started_at)} · {result.documents:,} documents · "
        f"{result.queries} queries · {result.seconds:.0f} s</p>",
        f"<div class='verdict {verdict.lower()}'>{verdict}: {result.leaks} leaks, "
        f"{len(result.failures)} failed checks</div>",
    ]
    if result.failures:
        parts.append(
            "<ul class='failures'>"
            + "".join(f"<li>{html.escape(f)}</li>" for f in result.failures)
            + "</ul>"
        )
    headline = result.headline()
    previous = (result.previous or {}).get("headline", {})
    parts.append("<h2>Summary (persona 'all': unfiltered quality)</h2>")
    parts.append(
        _table(
            ["measure", "this run", "last run", "change"],
            [
                [
                    k,
                    _fmt(v),
                    _fmt(previous.get(k)),
                    "-" if previous.get(k) is None else f"{v - previous[k]:+.4f}",
                ]
                for k, v in sorted(headline.items())
            ],
        )
    )
    for mode in result.modes:
        parts.append(f"<h2>Mode: {html.escape(mode.mode)}, per persona</h2>")
        names = sorted({k for p in mode.personas for k in p.metrics})
        rows, classes = [], []
        for p in mode.personas:
            rows.append(
                [
                    p.persona,
                    f"{p.selectivity:.1%}",
                    str(p.queries),
                    str(p.leaks),
                    *[_fmt(p.metrics.get(n)) for n in names],
                ]
            )
            classes.append(["", "", "", "leak" if p.leaks else "", *[""] * len(names)])
        parts.append(_table(["persona", "may read", "queries", "leaks", *names], rows, classes))
    parts.append("<h2>User feedback (helpful rate per source and mode)</h2>")
    if result.feedback:
        parts.append(
            _table(
                ["source", "mode", "votes", "helpful", "helpful rate"],
                [
                    [
                        str(f["source"]),
                        str(f["mode"]),
                        str(f["votes"]),
                        str(f["helpful"]),
                        f"{f['rate']:.1%}",
                    ]
                    for f in result.feedback
                ],
            )
        )
    else:
        parts.append("<p class='meta'>No feedback recorded in this period.</p>")
    parts.append("<h2>Plots</h2><div class='plots'>")
    for title, data in _plots(result, history):
        parts.append(
            f"<h3>{html.escape(title)}</h3>"
            f"<img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
        )
    parts.append("</div>")
    if result.notes:
        parts.append(
            "<h2>Notes</h2><ul class='notes'>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
            + "</ul>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(result: SuiteResult) -> str:
    lines = [
        f"# {result.suite}: {'PASS' if result.passed else 'FAIL'}",
        "",
        f"{result.documents:,} documents, {result.queries} queries, {result.leaks} leaks.",
        "",
    ]
    lines += ["| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in sorted(result.headline().items())]
    if result.feedback:
        lines += ["", "| source | mode | votes | helpful rate |", "|---|---|---|---|"]
        lines += [
            f"| {f['source']} | {f['mode']} | {f['votes']} | {f['rate']:.1%} |"
            for f in result.feedback
        ]
    if result.failures:
        lines += ["", "Failures:", *[f"- {f}" for f in result.failures]]
    return "\n".join(lines) + "\n"


def write_report(result: SuiteResult, out_dir: Path) -> Path:
    """Write report.html, report.json and summary.md under ``out_dir/<suite>/``."""
    target = out_dir / result.suite
    target.mkdir(parents=True, exist_ok=True)
    history = load_history(out_dir, result.suite)
    (target / "report.html").write_text(render_html(result, history), "utf-8")
    (target / "report.json").write_text(json.dumps(result.to_json(), indent=2), "utf-8")
    (target / "summary.md").write_text(render_markdown(result), "utf-8")
    return target / "report.html"
