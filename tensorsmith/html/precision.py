"""The Precision section of a conversion page: gate, sensitivity, precision map, fallback, data used."""

from __future__ import annotations

from collections import Counter

from tensorsmith.html import svg
from tensorsmith.html.page import (
    as_dict,
    as_float,
    as_list,
    badge,
    cards,
    e,
    human_bytes,
    num,
    section,
    speedup,
    table,
)

MAP_ROWS = 5000  # precision-map table rows shown (about 1.5 MB of HTML)


def precision_section(r: dict) -> str:
    p = r.get("precision")
    if not isinstance(p, dict):
        return ""
    out = []
    lat, size = as_dict(p.get("latency")), as_dict(p.get("size"))
    name = str(p.get("precision") or "").upper() or "result"
    items = [("precision", e(p.get("precision"))), ("for", e(p.get("target")))]
    if p.get("layout"):
        items.append(("layout", e(p.get("layout"))))
    if lat.get("speedup") is not None:
        items.append(("speed-up vs FP32", e(f"{speedup(lat.get('speedup'))}")))
    if size.get("ratio") is not None:
        items.append(("size vs FP32", e(f"{num(as_float(size.get('ratio')), 3)}x")))
    if p.get("compute_nodes") is not None and p.get("quantized_nodes") is not None:
        items.append(("quantized nodes", e(f"{p.get('quantized_nodes')} of {p.get('compute_nodes')}")))
    gate = as_dict(p.get("gate"))
    if gate:
        items.append(("gate", badge("ok" if gate.get("passed") else "failed")))
    out.append(cards(items))
    for w in as_list(p.get("warnings")):
        out.append(f'<p class="bad">warning: {e(w)}</p>')

    # latency and size: FP32 against the result, and every INT8 layout timed
    if lat:
        rows = [
            svg.Row("FP32", [as_float(lat.get("fp32_ms"))], text=f"{num(as_float(lat.get('fp32_ms')))} ms")
        ]
        for lay in as_list(p.get("layouts")):
            chosen = lay.get("layout") == p.get("layout")
            rows.append(
                svg.Row(
                    f"{name} {lay.get('layout')}" + (" (chosen)" if chosen else ""),
                    [as_float(lay.get("latency_ms"))],
                    state="ok" if lay.get("gate_passed") else "bad",
                    text=f"{num(as_float(lay.get('latency_ms')))} ms, {speedup(lay.get('speedup'))}",
                )
            )
        rows.append(
            svg.Row(
                f"{name} result",
                [as_float(lat.get("ms"))],
                state="ok",
                text=f"{num(as_float(lat.get('ms')))} ms, {speedup(lat.get('speedup'))}",
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
                        svg.Row("FP32", [as_float(size.get("fp32"))], text=human_bytes(size.get("fp32"))),
                        svg.Row(
                            name,
                            [as_float(size.get("lowered"))],
                            state="ok",
                            text=human_bytes(size.get("lowered")),
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
                        num(as_float(t.get("latency_ms"))),
                        num(as_float(t.get("speedup")), 3),
                        num(as_float(t.get("cosine")), 6),
                        num(as_float(t.get("top1"))),
                        num(t.get("kept_fp32")),
                    )
                    for t in as_list(p.get("table"))
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
    th = as_dict(gate.get("thresholds"))
    min_cos = as_float(th.get("min_cosine"))
    rows = []
    for o in as_list(gate.get("outputs")):
        cos = as_float(o.get("cosine"))
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
                num(as_float(o.get("cosine")), 6),
                num(as_float(o.get("cosine_min")), 6),
                num(as_float(o.get("max_abs"))),
                num(as_float(o.get("max_rel"))),
                num(as_float(o.get("top1"))),
                "pass" if o.get("passed") else "FAIL",
                o.get("reason") or "",
            )
            for o in as_list(gate.get("outputs"))
        ],
    )
    thr = ", ".join(f"{k} {num(v)}" for k, v in th.items() if v is not None)
    return f"<h3>accuracy gate per output ({e(gate.get('samples'))} samples; {e(thr)})</h3>{chart}{tab}"


def _sensitivity(p: dict) -> str:
    sens = as_list(p.get("sensitivity"))
    if not sens:
        return ""
    rows = [
        svg.Row(
            f"{s.get('name')} ({s.get('op')})",
            [as_float(s.get("error"))],
            text=num(as_float(s.get("error"))),
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
    pmap = as_list(p.get("precision_map"))
    if pmap:
        counts: dict[str, int] = {}
        for n in pmap:
            counts[str(n.get("precision"))] = counts.get(str(n.get("precision")), 0) + 1
        summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        # two bars per op (lowered: INT8 and FP16 together, and FP32); the text gives each precision
        order = {"int8": 0, "fp16": 1, "bf16": 2, "fp32": 9}
        present = sorted(counts, key=lambda k: (order.get(k, 5), k))
        lowered = "+".join(k for k in present if k != "fp32") or "lowered"
        by_op: dict[str, Counter] = {}
        for n in pmap:
            by_op.setdefault(str(n.get("op")), Counter())[str(n.get("precision"))] += 1
        chart = svg.render(
            svg.Chart(
                [
                    svg.Row(
                        op,
                        [sum(v for k, v in c.items() if k != "fp32"), c["fp32"]],
                        text=", ".join(f"{c[k]} {k}" for k in present if c[k]),
                    )
                    for op, c in sorted(by_op.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
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
    kept = as_list(p.get("kept"))
    if not kept:
        return ""
    body = table(
        ["node", "op", "precision", "why kept", "error#"],
        [
            (
                k.get("name"),
                k.get("op"),
                k.get("precision") or "fp32",
                k.get("reason"),
                num(as_float(k.get("error"))),
            )
            for k in kept
        ],
    )
    return f"<h3>nodes kept out of the lowered precision ({len(kept)})</h3>{body}"


def _fallback(p: dict) -> str:
    fb = as_dict(p.get("fallback"))
    rounds = as_list(fb.get("rounds"))
    if not rounds:
        return ""
    rows = []
    for i, rd in enumerate(rounds):
        err = as_float(rd.get("error"))
        accepted = rd.get("accepted", True)
        rows.append(
            svg.Row(
                f"round {i}: {rd.get('kept')} kept FP32",
                [err if err is not None and err > 0 else None],
                state="ok" if rd.get("passed") else ("bad" if not accepted else ""),
                text=(num(err) if err is not None else "failed")
                + (" pass" if rd.get("passed") else "")
                + ("" if accepted else " (undone)"),
                title=", ".join(map(str, as_list(rd.get("nodes")))) or str(rd.get("failed") or ""),
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
                num(as_float(rd.get("error"))),
                "yes" if rd.get("passed") else "no",
                "yes" if rd.get("accepted", True) else "no",
                ", ".join(map(str, as_list(rd.get("nodes")))) or rd.get("failed") or "",
            )
            for i, rd in enumerate(rounds)
        ],
    )
    return f"<h3>fallback rounds</h3>{chart}{tab}"


def _data_used(p: dict) -> str:
    rows = []
    for key in ("calibration", "validation"):
        d = as_dict(p.get(key))
        if d:
            rows.append((key, ", ".join(f"{k} {v}" for k, v in d.items() if v not in (None, ""))))
    st = as_dict(p.get("settings"))
    if st:
        rows.append(("settings", ", ".join(f"{k} {v}" for k, v in st.items())))
    if p.get("converter"):
        rows.append(("converter", p["converter"]))
    for rep in as_list(p.get("repairs")):
        rows.append(("repair", rep if isinstance(rep, str) else str(rep)))
    for n in as_list(p.get("notes")):
        rows.append(("note", n))
    return "<h3>data and settings</h3>" + table(["", ""], rows) if rows else ""


# ---------------------------------------------------------------------------


__all__ = ["MAP_ROWS", "precision_section"]
