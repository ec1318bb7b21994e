"""The page shell: one HTML document with its CSS and a few lines of script inline.

Light and dark themes are CSS variables: ``prefers-color-scheme`` picks one, the
toggle button overrides it (``data-theme`` on ``<html>``, remembered in
``localStorage`` when the browser allows it). The page works without the script.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

CSS = """
:root{--bg:#ffffff;--fg:#1d2330;--muted:#5d6675;--card:#f5f7fa;--line:#d9dee6;--accent:#2f6fde;
--s0:#2f6fde;--s1:#e39b2d;--ok:#1f9d55;--bad:#d64545;--warn:#b7791f;--mark:#d64545;--code:#eef1f5;--badge-fg:#fff}
:root[data-theme=dark]{--bg:#14171c;--fg:#e4e8ee;--muted:#9aa3b0;--card:#1d2129;--line:#343a45;
--accent:#6ea2ff;--s0:#6ea2ff;--s1:#f0b35a;--ok:#4cc27f;--bad:#ff6b6b;--warn:#e0b04f;--mark:#ff6b6b;--code:#262b34;--badge-fg:#0d1015}
@media (prefers-color-scheme:dark){:root:not([data-theme=light]){--bg:#14171c;--fg:#e4e8ee;--muted:#9aa3b0;
--card:#1d2129;--line:#343a45;--accent:#6ea2ff;--s0:#6ea2ff;--s1:#f0b35a;--ok:#4cc27f;--bad:#ff6b6b;
--warn:#e0b04f;--mark:#ff6b6b;--code:#262b34;--badge-fg:#0d1015}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"DejaVu Sans",sans-serif}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
header{display:flex;align-items:center;gap:12px;flex-wrap:wrap;border-bottom:1px solid var(--line);padding-bottom:8px}
header h1{font-size:20px;margin:0;flex:1;overflow-wrap:anywhere}
h2{font-size:16px;margin:22px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:14px;margin:14px 0 6px;color:var(--muted)}
a{color:var(--accent)}
code,pre{font:12.5px/1.4 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;background:var(--code);
border-radius:4px}
code{padding:1px 4px;overflow-wrap:anywhere}
pre{padding:8px 10px;white-space:pre-wrap;word-break:break-all;margin:4px 0}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:3px 10px 3px 0;text-align:left;vertical-align:top}
th{color:var(--muted);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:8px 24px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px 12px;min-width:130px}
.card .k{color:var(--muted);font-size:12px}.card .v{font-size:17px;font-weight:600}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12px;font-weight:600;color:#fff;
background:var(--muted);color:var(--badge-fg)}
.badge.ok,.badge.prepared{background:var(--ok)}.badge.failed{background:var(--bad)}
.badge.cached{background:var(--accent)}.badge.would-run{background:var(--warn)}
.ok{color:var(--ok)}.bad{color:var(--bad)}.muted{color:var(--muted)}
.badge.ok,.badge.bad,.badge.failed,.badge.prepared,.badge.cached{color:var(--badge-fg)}
.failures{border:1px solid var(--bad);border-left:5px solid var(--bad);border-radius:6px;padding:6px 12px;
margin:12px 0;background:var(--card)}
.failures li{margin:2px 0}
figure.chart{margin:6px 0 12px;max-width:920px}
figure.chart figcaption{color:var(--muted);font-size:12px}
svg.bars text{fill:var(--fg);font-size:11px;font-family:inherit}
svg.bars text.label{text-anchor:end}
svg.bars text.tick{fill:var(--muted);font-size:10px;text-anchor:middle}
svg.bars text.legend{fill:var(--muted)}
svg.bars line.grid{stroke:var(--line);stroke-width:1}
svg.bars line.mark{stroke:var(--mark);stroke-width:2}
svg.bars rect.bar.s0{fill:var(--s0)}svg.bars rect.bar.s1{fill:var(--s1)}
svg.bars rect.bar.ok{fill:var(--ok)}svg.bars rect.bar.bad{fill:var(--bad)}
table.matrix td{min-width:150px;padding:6px 10px 6px 0}
table.matrix .cell{display:block;border:1px solid var(--line);border-radius:6px;padding:4px 8px;
text-decoration:none;color:var(--fg);background:var(--card)}
table.matrix .cell.failed{border-color:var(--bad)}
table.matrix .cell small{display:block;color:var(--muted)}
details{margin:6px 0}summary{cursor:pointer;color:var(--accent)}
button.theme{background:var(--card);color:var(--fg);border:1px solid var(--line);border-radius:6px;
padding:3px 10px;cursor:pointer;font:inherit}
nav.toc{margin:8px 0 0;display:flex;gap:14px;flex-wrap:wrap;font-size:13px}
footer{margin-top:28px;color:var(--muted);font-size:12px}
@media print{button.theme{display:none}}
"""

SCRIPT = """
(function(){var r=document.documentElement,k='tensorsmith-theme';
try{var t=localStorage.getItem(k);if(t)r.setAttribute('data-theme',t);}catch(e){}
var b=document.getElementById('theme');if(!b)return;b.hidden=false;
b.addEventListener('click',function(){var cur=r.getAttribute('data-theme')||
(matchMedia('(prefers-color-scheme: dark)').matches?'dark':'light');
var nxt=cur==='dark'?'light':'dark';r.setAttribute('data-theme',nxt);try{localStorage.setItem(k,nxt);}catch(e){}});})();
"""


def e(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return escape("" if value is None else str(value), quote=True)


def num(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == 0:
            return "0"
        if abs(v) >= 1e5 or abs(v) < 1e-3:
            return f"{v:.3g}"
        return f"{v:.{digits}g}"
    return str(v)


def human_bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return ""
    x = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(x) < 1024 or unit == "GB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} GB"


def speedup(v: Any) -> str:
    return f"{v:.2f}x" if isinstance(v, (int, float)) and not isinstance(v, bool) else "n/a"


def badge(status: Any) -> str:
    s = str(status or "unknown")
    cls = "failed" if "fail" in s else s
    return f'<span class="badge {e(cls)}">{e(s)}</span>'


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "", raw: bool = False) -> str:
    """A table; cells are escaped unless ``raw`` (cells then are markup built here).

    A header ending in ``#`` is a numeric column (right-aligned; the ``#`` is dropped).
    """
    numeric = [h.endswith("#") for h in headers]
    head = "".join(
        f'<th class="num">{e(h[:-1])}</th>' if n else f"<th>{e(h)}</th>"
        for h, n in zip(headers, numeric, strict=True)
    )
    body = []
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            text = str(c) if raw else e(c)
            n = numeric[i] if i < len(numeric) else False
            cells.append(f'<td class="num">{text}</td>' if n else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        return ""
    return f'<table class="{e(cls)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def cards(items: Iterable[tuple[str, str]]) -> str:
    """Key figures: (label, already-escaped value markup)."""
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="k">{e(k)}</div><div class="v">{v}</div></div>' for k, v in items
        )
        + "</div>"
    )


def section(title: str, body: str, *, sid: str = "") -> str:
    if not body:
        return ""
    anchor = f' id="{e(sid)}"' if sid else ""
    return f"<section{anchor}><h2>{e(title)}</h2>{body}</section>"


def document(title: str, heading: str, body: str, *, data: dict | None = None, footer: str = "") -> str:
    """The whole page. ``data``, when given, is embedded as JSON (the report the page shows)."""
    blob = ""
    if data is not None:
        text = json.dumps(data, default=str, allow_nan=False, separators=(",", ":"))
        # inside <script> no "<", ">" or "&" at all (JSON's \\u escapes parse back the same)
        for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            text = text.replace(ch, esc)
        blob = f'<script type="application/json" id="report-data">{text}</script>'
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>"
        f'<header><h1>{heading}</h1><button id="theme" class="theme" type="button" hidden>'
        "light / dark</button></header>"
        f"{body}<footer>{footer}</footer></main>{blob}<script>{SCRIPT}</script></body></html>\n"
    )


def as_dict(x: Any) -> dict:
    """``x`` when it is a dict, else an empty one (report fields may be missing or odd)."""
    return x if isinstance(x, dict) else {}


def as_list(x: Any) -> list:
    return x if isinstance(x, list) else []


def as_float(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None
