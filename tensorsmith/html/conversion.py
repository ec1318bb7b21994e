"""One conversion's page, from the report ``--json`` prints (``optimize``, ``convert``, ``build``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tensorsmith.html import svg
from tensorsmith.html.page import badge, cards, document, e, human_bytes, num, section, speedup, table

MAP_ROWS = 5000  # precision-map table rows shown (about 1.5 MB of HTML)


def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list:
    return x if isinstance(x, list) else []


def _f(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def conversion_body(report: dict, *, argv: str | None = None, versions: dict | None = None) -> str:
    """The sections of a conversion page (also used inside nothing else: one page per job)."""
    parts = [
        _nav(report),
        _summary(report, argv, versions),
        _graph(report),
        _passes(report),
        _verification(report),
        _precision(report),
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
    if r.get("target") == "trt" or r.get("lint"):
        links.append(("tensorrt", "TensorRT"))
    return '<nav class="toc">' + " ".join(f'<a href="#{k}">{e(v)}</a>' for k, v in links) + "</nav>"


def _exit_code(report: dict) -> Any:
    if "exit_code" in report:
        return report["exit_code"]
    return 0 if report.get("status") in ("ok", "prepared", "cached") else None


def _summary(r: dict, argv: str | None, versions: dict | None) -> str:
    prec = r.get("precision")
    prec_name = _d(prec).get("precision") if isinstance(prec, dict) else prec
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
    secs = _d(r.get("seconds"))
    total = secs.get("total", sum(v for v in secs.values() if isinstance(v, (int, float))))
    if secs:
        items.append(("time", e(f"{total:.2f} s")))
    out = [cards(items)]
    if r.get("error"):
        out.append(f'<p class="bad"><b>error:</b> {e(r["error"])}</p>')
    rows: list[tuple[str, str]] = [("input", e(r.get("input")))]
    rows.append(("output", e(r.get("output") or "none written")))
    for f in _l(r.get("files")):
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
    for note in _l(r.get("notes")):
        rows.append(("note", e(note)))
    if versions:
        listed = " · ".join(f"{k} {v if v is not None else 'not installed'}" for k, v in versions.items())
        rows.append(("tool versions", e(listed)))
    out.append(table(["", ""], rows, raw=True))
    return section("Summary", "".join(out), sid="summary")


def _graph(r: dict) -> str:
    before, after = _d(r.get("ops_before")), _d(r.get("ops_after"))
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
    passes = _l(r.get("passes"))
    if not passes:
        return ""
    rows = [
        svg.Row(
            str(p.get("name")),
            [_f(p.get("seconds")) or 0.0],
            text=f"{num(_f(p.get('seconds')) or 0.0)} s" + (" · changed" if p.get("modified") else ""),
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
                ", ".join(f"{k}: {v}" for k, v in _d(p.get("stats")).items()) or "",
                p.get("runs"),
                num(_f(p.get("seconds"))),
            )
            for p in passes
        ],
    )
    return section("Passes", chart + tab, sid="passes")


def _tolerance(v: dict, o: dict) -> float | None:
    rtol, atol, scale = _f(v.get("rtol")), _f(v.get("atol")), _f(o.get("scale"))
    if rtol is None or atol is None or scale is None:
        return None
    return atol + rtol * scale


def _verification(r: dict) -> str:
    v = _d(r.get("verification"))
    if not v:
        skipped = "not run" if r.get("verification") is None and not r.get("precision") else ""
        return (
            section("Verification", f"<p class='muted'>{e(skipped)}</p>", sid="verification")
            if skipped
            else ""
        )
    outs = _l(v.get("outputs"))
    rows = []
    trows = []
    for o in outs:
        tol = _tolerance(v, o)
        diff = _f(o.get("max_abs_diff"))
        rows.append(
            svg.Row(
                str(o.get("name")),
                [diff if diff is not None else None],
                mark=tol,
                state="ok" if o.get("passed") else "bad",
                text=f"{num(diff)} / {num(tol)}",
            )
        )
        trows.append(
            (
                o.get("name"),
                "x".join(str(d) for d in _l(o.get("shape"))),
                num(diff),
                num(_f(o.get("max_rel_diff"))),
                num(_f(o.get("scale"))),
                num(tol),
                "pass" if o.get("passed") else "FAIL",
                o.get("reason") or "",
            )
        )
    chart = svg.render(
        svg.Chart(
            rows,
            log=True,
            mark_label=f"tolerance atol {num(_f(v.get('atol')))} + rtol {num(_f(v.get('rtol')))} × scale",
            caption="largest absolute difference per output against its tolerance (log scale)",
            css_class="verify",
        )
    )
    tab = table(
        ["output", "shape", "max abs#", "max rel#", "scale#", "tolerance#", "result", "reason"], trows
    )
    shapes = _d(v.get("input_shapes"))
    used = [
        ("inputs", e(v.get("inputs"))),
        ("samples", e(v.get("samples"))),
    ] + [
        (e(f"shape of {k}"), e("x".join(map(str, s)) if isinstance(s, list) else s))
        for k, s in shapes.items()
    ]
    used += [("note", e(n)) for n in _l(v.get("notes"))]
    head = f"<p>{badge('ok' if v.get('passed') else 'failed')} against the source model</p>"
    return section(
        "Verification",
        head + chart + tab + "<h3>inputs used</h3>" + table(["", ""], used, raw=True),
        sid="verification",
    )


# ---------------------------------------------------------------------------
# precision


def _precision(r: dict) -> str:
    p = r.get("precision")
    if not isinstance(p, dict):
        return ""
    out = []
    lat, size = _d(p.get("latency")), _d(p.get("size"))
    name = str(p.get("precision") or "").upper() or "result"
    items = [("precision", e(p.get("precision"))), ("for", e(p.get("target")))]
    if p.get("layout"):
        items.append(("layout", e(p.get("layout"))))
    if lat.get("speedup") is not None:
        items.append(("speed-up vs FP32", e(f"{speedup(lat.get('speedup'))}")))
    if size.get("ratio") is not None:
        items.append(("size vs FP32", e(f"{num(_f(size.get('ratio')), 3)}x")))
    if p.get("compute_nodes") is not None and p.get("quantized_nodes") is not None:
        items.append(("quantized nodes", e(f"{p.get('quantized_nodes')} of {p.get('compute_nodes')}")))
    gate = _d(p.get("gate"))
    if gate:
        items.append(("gate", badge("ok" if gate.get("passed") else "failed")))
    out.append(cards(items))
    for w in _l(p.get("warnings")):
        out.append(f'<p class="bad">warning: {e(w)}</p>')

    # latency and size: FP32 against the result, and every INT8 layout timed
    if lat:
        rows = [svg.Row("FP32", [_f(lat.get("fp32_ms"))], text=f"{num(_f(lat.get('fp32_ms')))} ms")]
        for lay in _l(p.get("layouts")):
            chosen = lay.get("layout") == p.get("layout")
            rows.append(
                svg.Row(
                    f"{name} {lay.get('layout')}" + (" (chosen)" if chosen else ""),
                    [_f(lay.get("latency_ms"))],
                    state="ok" if lay.get("gate_passed") else "bad",
                    text=f"{num(_f(lay.get('latency_ms')))} ms, {speedup(lay.get('speedup'))}",
                )
            )
        rows.append(
            svg.Row(
                f"{name} result",
                [_f(lat.get("ms"))],
                state="ok",
                text=f"{num(_f(lat.get('ms')))} ms, {speedup(lat.get('speedup'))}",
            )
        )
        legend = [("ok", "passes the gate"), ("bad", "fails the gate")] if p.get("layouts") else []
        out.append("<h3>latency</h3>")
        out.append(
            svg.render(
                svg.Chart(
                    rows,
                    unit="ms",
                    caption=f"median latency, {lat.get('provider', '')}, {lat.get('threads', '?')} thread(s), "
                    f"{lat.get('runs', '?')} runs (lower is faster)",
                    css_class="latency",
                    extra_legend=legend,
                )
            )
        )
    if size:
        out.append("<h3>size</h3>")
        out.append(
            svg.render(
                svg.Chart(
                    [
                        svg.Row("FP32", [_f(size.get("fp32"))], text=human_bytes(size.get("fp32"))),
                        svg.Row(
                            name, [_f(size.get("lowered"))], state="ok", text=human_bytes(size.get("lowered"))
                        ),
                    ],
                    caption="model size",
                    css_class="size",
                    tick_format=human_bytes,
                )
            )
        )
    if p.get("table"):
        out.append(
            table(
                ["precision", "size#", "latency ms#", "speed-up#", "cosine#", "top-1#", "kept FP32#"],
                [
                    (
                        t.get("precision"),
                        human_bytes(t.get("size")),
                        num(_f(t.get("latency_ms"))),
                        num(_f(t.get("speedup")), 3),
                        num(_f(t.get("cosine")), 6),
                        num(_f(t.get("top1"))),
                        num(t.get("kept_fp32")),
                    )
                    for t in _l(p.get("table"))
                ],
            )
        )
    out.append(_gate(gate))
    out.append(_sensitivity(p))
    out.append(_precision_map(p))
    out.append(_fallback(p))
    out.append(_data_used(p))
    return section(f"Precision: {name}", "".join(out), sid="precision")


def _gate(gate: dict) -> str:
    if not gate:
        return ""
    th = _d(gate.get("thresholds"))
    min_cos = _f(th.get("min_cosine"))
    rows = []
    for o in _l(gate.get("outputs")):
        cos = _f(o.get("cosine"))
        rows.append(
            svg.Row(
                str(o.get("name")),
                [None if cos is None else max(0.0, 1.0 - cos)],
                mark=None if min_cos is None else 1.0 - min_cos,
                state="ok" if o.get("passed") else "bad",
                text=f"cosine {num(cos, 6)}",
            )
        )
    chart = svg.render(
        svg.Chart(
            rows,
            log=True,
            mark_label=f"allowed: 1 - min cosine {num(min_cos, 8)}",
            caption="accuracy gate per output: 1 - cosine against FP32 (log scale, shorter is closer)",
            css_class="gate",
        )
    )
    tab = table(
        ["output", "cosine#", "worst sample#", "max abs#", "max rel#", "top-1#", "result", "reason"],
        [
            (
                o.get("name"),
                num(_f(o.get("cosine")), 6),
                num(_f(o.get("cosine_min")), 6),
                num(_f(o.get("max_abs"))),
                num(_f(o.get("max_rel"))),
                num(_f(o.get("top1"))),
                "pass" if o.get("passed") else "FAIL",
                o.get("reason") or "",
            )
            for o in _l(gate.get("outputs"))
        ],
    )
    thr = ", ".join(f"{k} {num(v)}" for k, v in th.items() if v is not None)
    return f"<h3>accuracy gate per output ({e(gate.get('samples'))} samples; {e(thr)})</h3>{chart}{tab}"


def _sensitivity(p: dict) -> str:
    sens = _l(p.get("sensitivity"))
    if not sens:
        return ""
    rows = [
        svg.Row(
            f"{s.get('name')} ({s.get('op')})",
            [_f(s.get("error"))],
            text=num(_f(s.get("error"))),
            title=str(s.get("name")),
        )
        for s in sens[:40]
    ]
    more = f" (the worst 40 of {len(sens)})" if len(sens) > 40 else ""
    chart = svg.render(
        svg.Chart(
            rows,
            log=True,
            caption=f"per-layer sensitivity: output error with only this node quantized{more} (log scale)",
            css_class="sensitivity",
        )
    )
    return f"<h3>per-layer sensitivity</h3>{chart}"


def _precision_map(p: dict) -> str:
    pmap = _l(p.get("precision_map"))
    if pmap:
        counts: dict[str, int] = {}
        for n in pmap:
            counts[str(n.get("precision"))] = counts.get(str(n.get("precision")), 0) + 1
        summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        lowered = next((k for k in counts if k != "fp32"), "lowered")
        by_op: dict[str, list[int]] = {}
        for n in pmap:
            slot = by_op.setdefault(str(n.get("op")), [0, 0])
            slot[0 if n.get("precision") != "fp32" else 1] += 1
        chart = svg.render(
            svg.Chart(
                [
                    svg.Row(op, [c[0], c[1]], text=f"{c[0]} {lowered}, {c[1]} fp32")
                    for op, c in sorted(by_op.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
                ],
                series=(lowered, "fp32"),
                caption="precision map by op type: nodes lowered and nodes kept in FP32",
                css_class="pmap",
            )
        )
        body = table(
            ["node", "op", "precision", "why"],
            [
                (
                    e(n.get("name")),
                    e(n.get("op")),
                    f'<span class="badge {"ok" if n.get("precision") != "fp32" else ""}">{e(n.get("precision"))}</span>',
                    e(n.get("reason") or ""),
                )
                for n in pmap[:MAP_ROWS]
            ],
            raw=True,
            cls="pmap",
        )
        if len(pmap) > MAP_ROWS:  # keeps the page under 8 MB; --json has every node
            body += f"<p class='muted'>the first {MAP_ROWS} of {len(pmap)} nodes; --json lists every one</p>"
        return (
            f"<h3>precision map: {e(summary)}</h3>{chart}"
            f"<details{' open' if len(pmap) <= 40 else ''}><summary>every compute node, its precision and why "
            f"({len(pmap)})</summary>{body}</details>"
        )
    kept = _l(p.get("kept"))
    if not kept:
        return ""
    body = table(
        ["node", "op", "why kept in FP32", "error#"],
        [(k.get("name"), k.get("op"), k.get("reason"), num(_f(k.get("error")))) for k in kept],
    )
    return f"<h3>nodes kept in FP32 ({len(kept)})</h3>{body}"


def _fallback(p: dict) -> str:
    fb = _d(p.get("fallback"))
    rounds = _l(fb.get("rounds"))
    if not rounds:
        return ""
    rows = []
    for i, rd in enumerate(rounds):
        err = _f(rd.get("error"))
        accepted = rd.get("accepted", True)
        rows.append(
            svg.Row(
                f"round {i}: {rd.get('kept')} kept FP32",
                [err if err is not None and err > 0 else None],
                state="ok" if rd.get("passed") else ("bad" if not accepted else ""),
                text=(num(err) if err is not None else "failed")
                + (" pass" if rd.get("passed") else "")
                + ("" if accepted else " (undone)"),
                title=", ".join(map(str, _l(rd.get("nodes")))) or str(rd.get("failed") or ""),
            )
        )
    chart = svg.render(
        svg.Chart(
            rows,
            log=True,
            caption=f"fallback rounds: gate error after each round (budget {fb.get('budget')} node(s); log scale)",
            css_class="fallback",
            extra_legend=[("ok", "gate passes"), ("bad", "undone")],
        )
    )
    tab = table(
        ["round#", "kept FP32#", "error#", "passed", "accepted", "nodes added"],
        [
            (
                i,
                rd.get("kept"),
                num(_f(rd.get("error"))),
                "yes" if rd.get("passed") else "no",
                "yes" if rd.get("accepted", True) else "no",
                ", ".join(map(str, _l(rd.get("nodes")))) or rd.get("failed") or "",
            )
            for i, rd in enumerate(rounds)
        ],
    )
    return f"<h3>fallback rounds</h3>{chart}{tab}"


def _data_used(p: dict) -> str:
    rows = []
    for key in ("calibration", "validation"):
        d = _d(p.get(key))
        if d:
            rows.append((key, ", ".join(f"{k} {v}" for k, v in d.items() if v not in (None, ""))))
    st = _d(p.get("settings"))
    if st:
        rows.append(("settings", ", ".join(f"{k} {v}" for k, v in st.items())))
    if p.get("converter"):
        rows.append(("converter", p["converter"]))
    for rep in _l(p.get("repairs")):
        rows.append(("repair", rep if isinstance(rep, str) else str(rep)))
    for n in _l(p.get("notes")):
        rows.append(("note", n))
    return "<h3>data and settings</h3>" + table(["", ""], rows) if rows else ""


# ---------------------------------------------------------------------------
# TensorRT


def _tensorrt(r: dict) -> str:
    lint = _d(r.get("lint"))
    profiles = _d(r.get("profiles")) or _d(lint.get("profiles"))
    if r.get("target") != "trt" and not lint:
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
    findings = _l(lint.get("findings"))
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
    for n in _l(lint.get("notes")):
        out.append(f"<p class='muted'>lint note: {e(n)}</p>")
    if profiles:
        out.append("<h3>optimization profiles</h3>")
        out.append(
            table(
                ["input", "min", "opt", "max", "from"],
                [
                    (
                        name,
                        *("x".join(map(str, _l(_d(pr).get(k)))) for k in ("min", "opt", "max")),
                        _d(pr).get("source", ""),
                    )
                    for name, pr in profiles.items()
                ],
            )
        )
    errs = _l(r.get("parser_errors"))
    if errs:
        out.append("<h3>parser errors</h3>")
        out.append(
            table(
                ["node", "op", "code", "message"],
                [(x.get("node"), x.get("op"), x.get("code"), x.get("message")) for x in errs],
            )
        )
    return section("TensorRT", "".join(out), sid="tensorrt")
