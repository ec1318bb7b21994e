"""The precision part of a job's table: per precision size, latency, accuracy, nodes kept FP32."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from rich.console import JustifyMethod


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def render_precision(p: dict, console) -> None:
    from tensorsmith.units import human_bytes

    lat = p.get("latency") or {}
    title = f"precision: {p['precision']} for {p.get('target', 'ort')}"
    if p.get("layout"):
        title += f", layout {p['layout']}"
    t = Table(title=title, title_justify="left", header_style="bold")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("precision", "left"),
        ("file size", "right"),
        ("ORT CPU latency", "right"),
        ("speed-up", "right"),
        ("cosine (worst output)", "right"),
        ("top-1 agreement", "right"),
        ("out of INT8" if p.get("precision") == "int8" else "kept FP32", "right"),
    )
    for col, just in columns:
        t.add_column(col, justify=just)
    for row in p.get("table", []):
        t.add_row(
            row["precision"],
            human_bytes(row["size"]),
            _fmt(row.get("latency_ms"), ".3f") + (" ms" if row.get("latency_ms") is not None else ""),
            _fmt(row.get("speedup"), ".2f") + ("x" if row.get("speedup") is not None else ""),
            _fmt(row.get("cosine"), ".5f"),
            _fmt(row.get("top1"), ".1%"),
            _fmt(row.get("kept_fp32"), "d"),
        )
    console.print(t)
    gate = p.get("gate") or {}
    if gate:
        th = gate.get("thresholds", {})
        rules = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in th.items() if v is not None)
        g = Table(
            title=f"accuracy gate on {gate.get('samples')} validation sample(s) ({rules or 'no thresholds'})",
            title_justify="left",
            header_style="bold",
        )
        for col in ("output", "cosine", "worst sample", "max abs err", "max rel err", "top-1", "result"):
            g.add_column(col, justify="left" if col in ("output", "result") else "right")
        for o in gate.get("outputs", []):
            if o.get("exact") is not None:
                g.add_row(
                    escape(o["name"]),
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "[green]pass[/green] (exact)"
                    if o["passed"]
                    else f"[red]FAIL[/red] {escape(o['reason'])}",
                )
                continue
            g.add_row(
                escape(o["name"]),
                f"{o['cosine']:.5f}",
                f"{o['cosine_min']:.5f}",
                f"{o['max_abs']:.3g}",
                f"{o['max_rel']:.3g}",
                _fmt(o.get("top1"), ".1%"),
                "[green]pass[/green]" if o["passed"] else f"[red]FAIL[/red] {escape(o['reason'])}",
            )
        console.print(g)
    layouts = p.get("layouts") or []
    if len(layouts) > 1:
        lt = Table(
            title="INT8 layouts timed against FP32 (the fastest that passes the gate is kept)",
            title_justify="left",
            header_style="bold",
        )
        for col in ("layout", "speed-up", "cosine", "gate", "kept FP32"):
            lt.add_column(col, justify="left" if col in ("layout", "gate") else "right")
        for row in layouts:
            mark = " *" if row["layout"] == p.get("layout") else ""
            lt.add_row(
                escape(row["layout"]) + mark,
                _fmt(row.get("speedup"), ".2f") + "x",
                _fmt(row.get("cosine"), ".5f"),
                "pass" if row.get("gate_passed") else "fail",
                _fmt(row.get("kept_fp32"), "d"),
            )
        console.print(lt)
    kept = p.get("kept") or []
    if kept:
        n16 = sum(1 for n in kept if n.get("precision") == "fp16")
        title = f"nodes kept out of INT8 ({len(kept)}: {n16} FP16, {len(kept) - n16} FP32)" if n16 else ""
        k = Table(
            title=title or f"nodes kept in FP32 ({len(kept)})", title_justify="left", header_style="bold"
        )
        k.add_column("node")
        k.add_column("op")
        if n16:
            k.add_column("precision")
        k.add_column("added error", justify="right")
        k.add_column("why")
        half = {n["name"] for n in kept if n.get("precision") == "fp16"}  # fallback nodes: one row each
        for name, op, err, why in kept_rows(kept):
            prec = ["fp16" if name in half else "fp32"] if n16 else []
            k.add_row(escape(name), op, *prec, _fmt(err, ".3g"), escape(why))
        console.print(k)
    render_ladder(p, console)
    cal = p.get("calibration")
    if cal:
        console.print(
            f"  [dim]calibration: {cal['samples']} sample(s) from {escape(str(cal['source']))}, {cal.get('method')}[/dim]"
        )
    val = p.get("validation")
    if val:
        console.print(
            f"  [dim]validation: {val['samples']} sample(s) from {escape(str(val['source']))}[/dim]"
        )
    if lat:
        console.print(
            f"  [dim]latency: onnxruntime CPU, 1 thread, batch of the first sample, median of {lat.get('runs')} round-robin runs[/dim]"
        )
    for w in p.get("warnings", []):
        console.print(f"  [yellow]warning: {escape(w)}[/yellow]")
    for n in p.get("notes", []):
        console.print(f"  [dim]{escape(n)}[/dim]")


GROUP_OVER = 12  # more kept nodes than this: one row per (op, reason), the fallback's nodes one each


def kept_rows(kept: list[dict]) -> list[tuple[str, str, float | None, str]]:
    """Rows of the kept-FP32 table: ``(node(s), op, error, why)``."""
    if len(kept) <= GROUP_OVER:
        return [(n["name"], n.get("op", "?"), n.get("error"), n.get("reason", "")) for n in kept]
    rows: list[tuple[str, str, float | None, str]] = []
    groups: dict[tuple[str, str], list[str]] = {}
    for n in kept:
        if n.get("error") is not None:  # the fallback's nodes, with their own error
            rows.append((n["name"], n.get("op", "?"), n["error"], n.get("reason", "")))
            continue
        why = n.get("reason", "")
        if why.startswith("measured:"):
            why = "measured slower in int8 here (kernel + Q/DQ + broken fusions >= FP32 kernel)"
        groups.setdefault((n.get("op", "?"), why), []).append(n["name"])
    for (op, why), names in groups.items():
        label = (
            names[0]
            if len(names) == 1
            else f"{len(names)} nodes: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
        )
        rows.append((label, op, None, why))
    return rows


def render_ladder(p: dict, console) -> None:
    """One line of counts per precision and the INT8 weight fraction; with
    ``--precision-report`` (``settings.precision_report``) the sensitivity ranking."""
    lad = p.get("ladder")
    if not lad:
        return
    c = lad.get("counts", {})
    cc = lad.get("compute_counts", {})
    w = lad.get("int8_weights") or {}
    frac = w.get("fraction")
    console.print(
        f"  precision ladder ({' -> '.join(r.upper() for r in lad.get('rungs', []))}): "
        f"{c.get('int8', 0)} INT8, {c.get('fp16', 0)} FP16, {c.get('fp32', 0)} FP32 nodes "
        f"(Conv/ConvTranspose/MatMul/Gemm: {cc.get('int8', 0)} INT8, {cc.get('fp16', 0)} FP16, "
        f"{cc.get('fp32', 0)} FP32); {w.get('int8_weights', 0)} of {w.get('compute_nodes', 0)} read INT8 "
        f"weights in the written graph" + (f" ({frac:.1%})" if frac is not None else "")
    )
    causes = lad.get("causes") or {}
    if causes:
        console.print("  [dim]why: " + ", ".join(f"{k} {v}" for k, v in sorted(causes.items())) + "[/dim]")
    if lad.get("restored"):
        console.print(
            f"  [dim]pre-step weights restored on {len(lad['restored'])} node(s) kept out of INT8[/dim]"
        )
    console.print(f"  [dim]{escape(lad.get('note', ''))}[/dim]")
    if not (p.get("settings") or {}).get("precision_report"):
        return
    sens = p.get("sensitivity") or []
    if not sens:
        console.print("  [dim]precision report: no quantized layer to rank[/dim]")
        return
    why = {e["name"]: e.get("reason", "") for e in p.get("precision_map", [])}
    t = Table(
        title=f"precision report: {len(sens)} layer(s) by sensitivity (output error with only that layer in INT8)",
        title_justify="left",
        header_style="bold",
    )
    for col in ("#", "node", "op", "output error", "precision", "why"):
        t.add_column(col, justify="right" if col in ("#", "output error") else "left")
    for i, s in enumerate(sens, 1):
        t.add_row(
            str(i),
            escape(s["name"]),
            s.get("op", "?"),
            _fmt(s.get("error"), ".3g"),
            s.get("precision") or "-",
            escape(why.get(s["name"], "")),
        )
    console.print(t)
