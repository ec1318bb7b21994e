"""One conversion's page, from the report ``--json`` prints (``optimize``, ``convert``, ``build``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tensorsmith.html import svg
from tensorsmith.html.page import (
    as_dict,
    as_float,
    as_list,
    badge,
    cards,
    document,
    e,
    human_bytes,
    num,
    section,
    table,
)
from tensorsmith.html.precision import precision_section


def conversion_body(report: dict, *, argv: str | None = None, versions: dict | None = None) -> str:
    """The sections of a conversion page (also used inside nothing else: one page per job)."""
    parts = [
        _nav(report),
        _summary(report, argv, versions),
        _graph(report),
        _passes(report),
        _verification(report),
        precision_section(report),
        _tensorrt(report),
    ]
    return "".join(p for p in parts if p)


def conversion_page(
    report: dict, *, argv: str | None = None, versions: dict | None = None, embed: bool = True
) -> str:
    """The whole page for one conversion report (a ``to_dict()`` / ``--json`` object).

    ``embed``: carry the report itself in the page (``#report-data``)."""
    src = str(report.get("input") or "?")
    target = str(report.get("target") or "?")
    status = report.get("status")
    heading = f"{e(Path(src).name or src)} &rarr; {e(target)} {badge(status)}"
    from tensorsmith import __version__

    footer = (
        f"tensorsmith {e(__version__)} &middot; generated from the same report as <code>--json</code> "
        + (
            "(embedded below as <code>#report-data</code>)"
            if embed
            else "(not embedded: the page would pass 8 MB; use --json)"
        )
    )
    return document(
        f"tensorsmith: {src} -> {target} ({status})",
        heading,
        conversion_body(report, argv=argv, versions=versions),
        data=report if embed else None,
        footer=footer,
    )


# ---------------------------------------------------------------------------


def _builds_engine(r: dict) -> bool:
    """The report's target builds a TensorRT engine (asked of the target registry)."""
    from tensorsmith.convert.targets import TARGETS, get_target

    target = r.get("target")
    return isinstance(target, str) and target in TARGETS and get_target(target).builds_engine


def _nav(r: dict) -> str:
    links = [("summary", "Summary")]
    if r.get("ops_before") or r.get("ops_after"):
        links.append(("graph", "Graph"))
    if r.get("passes"):
        links.append(("passes", "Passes"))
    if r.get("verification"):
        links.append(("verification", "Verification"))
    if isinstance(r.get("precision"), dict):
        links.append(("precision", "Precision"))
    if _builds_engine(r) or r.get("lint"):
        links.append(("tensorrt", "TensorRT"))
    return '<nav class="toc">' + " ".join(f'<a href="#{k}">{e(v)}</a>' for k, v in links) + "</nav>"


def _exit_code(report: dict) -> Any:
    if "exit_code" in report:
        return report["exit_code"]
    return 0 if report.get("status") in ("ok", "prepared", "cached") else None


def _summary(r: dict, argv: str | None, versions: dict | None) -> str:
    prec = r.get("precision")
    prec_name = as_dict(prec).get("precision") if isinstance(prec, dict) else prec
    items = [
        ("status", badge(r.get("status"))),
        ("exit code", e(_exit_code(r))),
        ("source", e(r.get("source_format") or "")),
        ("target", e(r.get("target") or "")),
        ("precision", e(prec_name or "fp32")),
    ]
    if r.get("nodes_before") is not None:
        items.append(("nodes", f"{e(r.get('nodes_before'))} &rarr; {e(r.get('nodes_after'))}"))
    if r.get("size_before") is not None and r.get("size_after"):
        items.append(
            ("size", f"{e(human_bytes(r.get('size_before')))} &rarr; {e(human_bytes(r.get('size_after')))}")
        )
    if r.get("plan_bytes"):
        items.append(("engine", e(human_bytes(r.get("plan_bytes")))))
    secs = as_dict(r.get("seconds"))
    total = secs.get("total", sum(v for v in secs.values() if isinstance(v, (int, float))))
    if secs:
        items.append(("time", e(f"{total:.2f} s")))
    out = [cards(items)]
    if r.get("error"):
        out.append(f'<p class="bad"><b>error:</b> {e(r["error"])}</p>')
    rows: list[tuple[str, str]] = [("input", e(r.get("input")))]
    rows.append(("output", e(r.get("output") or "none written")))
    for f in as_list(r.get("files")):
        if f != r.get("output"):
            rows.append(("file", e(f)))
    if argv:
        rows.append(("command", f"<pre>{e(argv)}</pre>"))
    if r.get("build_command"):
        rows.append(("build it with", f"<pre>{e(r['build_command'])}</pre>"))
    if secs:
        rows.append(("seconds", e(", ".join(f"{k} {num(v)}" for k, v in secs.items()))))
    if r.get("iterations") is not None:
        rows.append(("pass iterations", e(r.get("iterations"))))
    for note in as_list(r.get("notes")):
        rows.append(("note", e(note)))
    if versions:
        listed = " · ".join(f"{k} {v if v is not None else 'not installed'}" for k, v in versions.items())
        rows.append(("tool versions", e(listed)))
    out.append(table(["", ""], rows, raw=True))
    return section("Summary", "".join(out), sid="summary")


def _graph(r: dict) -> str:
    before, after = as_dict(r.get("ops_before")), as_dict(r.get("ops_after"))
    if not before and not after:
        return ""
    ops = sorted(set(before) | set(after), key=lambda o: (-abs(after.get(o, 0) - before.get(o, 0)), o))
    rows = []
    for op in ops:
        b, a = before.get(op, 0), after.get(op, 0)
        delta = a - b
        rows.append(
            svg.Row(
                op, [b, a], text=f"{b} → {a}" + (f" ({delta:+d})" if delta else ""), title=f"{op}: {b} → {a}"
            )
        )
    chart = svg.render(
        svg.Chart(
            rows,
            series=("before", "after"),
            caption=f"op counts before and after: {r.get('nodes_before')} → {r.get('nodes_after')} nodes",
            css_class="ops",
        )
    )
    return section("Graph before and after", chart, sid="graph")


def _passes(r: dict) -> str:
    passes = as_list(r.get("passes"))
    if not passes:
        return ""
    rows = [
        svg.Row(
            str(p.get("name")),
            [as_float(p.get("seconds")) or 0.0],
            text=f"{num(as_float(p.get('seconds')) or 0.0)} s" + (" · changed" if p.get("modified") else ""),
            state="ok" if p.get("modified") else "",
        )
        for p in passes
    ]
    chart = svg.render(
        svg.Chart(
            rows,
            unit="s",
            caption="time per pass (green: the pass changed the graph)",
            css_class="passes",
            extra_legend=[("ok", "changed the graph")],
        )
    )
    tab = table(
        ["pass", "changed", "what it changed", "runs#", "seconds#"],
        [
            (
                p.get("name"),
                "yes" if p.get("modified") else "no",
                ", ".join(f"{k}: {v}" for k, v in as_dict(p.get("stats")).items()) or "",
                p.get("runs"),
                num(as_float(p.get("seconds"))),
            )
            for p in passes
        ],
    )
    return section("Passes", chart + tab, sid="passes")


def _tolerance(v: dict, o: dict) -> float | None:
    rtol, atol, scale = as_float(v.get("rtol")), as_float(v.get("atol")), as_float(o.get("scale"))
    if rtol is None or atol is None or scale is None:
        return None
    return atol + rtol * scale


def _verification(r: dict) -> str:
    v = as_dict(r.get("verification"))
    if not v:
        skipped = "not run" if r.get("verification") is None and not r.get("precision") else ""
        return (
            section("Verification", f"<p class='muted'>{e(skipped)}</p>", sid="verification")
            if skipped
            else ""
        )
    outs = as_list(v.get("outputs"))
    # the noise floor (measured when an output was over its tolerance): a second bar per output
    noisy = any(as_float(as_dict(o).get("noise_floor")) is not None for o in outs)
    rows = []
    trows = []
    for o in outs:
        tol = _tolerance(v, o)
        diff = as_float(o.get("max_abs_diff"))
        noise = as_float(o.get("noise_floor"))
        rows.append(
            svg.Row(
                str(o.get("name")),
                [diff, noise] if noisy else [diff],
                mark=tol,
                state="ok" if o.get("passed") else "bad",
                text=f"{num(diff)} / {num(tol)}",
            )
        )
        cells = [
            o.get("name"),
            "x".join(str(d) for d in as_list(o.get("shape"))),
            num(diff),
            num(as_float(o.get("max_rel_diff"))),
            num(as_float(o.get("scale"))),
            num(tol),
            *([num(noise)] if noisy else []),
            "pass" if o.get("passed") else "FAIL",
            o.get("reason") or "",
        ]
        trows.append(tuple(cells))
    chart = svg.render(
        svg.Chart(
            rows,
            series=("max abs diff", "noise floor") if noisy else ("value",),
            log=True,
            mark_label=f"tolerance atol {num(as_float(v.get('atol')))} + rtol {num(as_float(v.get('rtol')))} × scale",
            caption="largest absolute difference per output against its tolerance"
            + (" and its noise floor (onnxruntime with vs without graph optimizations)" if noisy else "")
            + " (log scale)",
            css_class="verify",
        )
    )
    columns = ["output", "shape", "max abs#", "max rel#", "scale#", "tolerance#"]
    tab = table([*columns, *(["noise floor#"] if noisy else []), "result", "reason"], trows)
    shapes = as_dict(v.get("input_shapes"))
    used = [
        ("inputs", e(v.get("inputs"))),
        ("samples", e(v.get("samples"))),
    ] + [
        (e(f"shape of {k}"), e("x".join(map(str, s)) if isinstance(s, list) else s))
        for k, s in shapes.items()
    ]
    used += [("note", e(n)) for n in as_list(v.get("notes"))]
    head = f"<p>{badge('ok' if v.get('passed') else 'failed')} against the source model</p>"
    return section(
        "Verification",
        head + chart + tab + "<h3>inputs used</h3>" + table(["", ""], used, raw=True),
        sid="verification",
    )


# TensorRT


def _tensorrt(r: dict) -> str:
    lint = as_dict(r.get("lint"))
    profiles = as_dict(r.get("profiles")) or as_dict(lint.get("profiles"))
    if not _builds_engine(r) and not lint:
        return ""
    out = []
    items = []
    if r.get("tensorrt_version"):
        items.append(("TensorRT", e(r.get("tensorrt_version"))))
    if lint:
        items.append(("lint", badge("ok" if lint.get("status") == "clean" else lint.get("status"))))
        items.append(("lint errors", e(lint.get("errors"))))
        items.append(("lint warnings", e(lint.get("warnings"))))
        if lint.get("target_version"):
            items.append(("checked for", e(f"TensorRT {lint.get('target_version')}")))
    if r.get("typing"):
        items.append(("network", e(f"{r.get('typing')} typed")))
    if items:
        out.append(cards(items))
    if r.get("build_command"):
        out.append(f"<h3>build command (on a GPU machine)</h3><pre>{e(r['build_command'])}</pre>")
    findings = as_list(lint.get("findings"))
    if findings:
        out.append("<h3>lint findings</h3>")
        out.append(
            table(
                ["severity", "rule", "node", "op", "message"],
                [
                    (
                        f.get("severity", ""),
                        f.get("rule", f.get("code", "")),
                        f.get("node", f.get("name", "")),
                        f.get("op", ""),
                        f.get("message", ""),
                    )
                    for f in findings
                ],
            )
        )
    elif lint:
        out.append("<p class='ok'>lint: no findings</p>")
    for n in as_list(lint.get("notes")):
        out.append(f"<p class='muted'>lint note: {e(n)}</p>")
    if profiles:
        out.append("<h3>optimization profiles</h3>")
        out.append(
            table(
                ["input", "min", "opt", "max", "from"],
                [
                    (
                        name,
                        *("x".join(map(str, as_list(as_dict(pr).get(k)))) for k in ("min", "opt", "max")),
                        as_dict(pr).get("source", ""),
                    )
                    for name, pr in profiles.items()
                ],
            )
        )
    errs = as_list(r.get("parser_errors"))
    if errs:
        out.append("<h3>parser errors</h3>")
        out.append(
            table(
                ["node", "op", "code", "message"],
                [(x.get("node"), x.get("op"), x.get("code"), x.get("message")) for x in errs],
            )
        )
    return section("TensorRT", "".join(out), sid="tensorrt")
