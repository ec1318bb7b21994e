"""A recipe run's page, from the ``run --report-json`` object: the models x targets matrix."""

from __future__ import annotations

from typing import Any

from tensorsmith.html import svg
from tensorsmith.html.page import (
    as_dict,
    as_float,
    badge,
    cards,
    document,
    e,
    human_bytes,
    num,
    section,
    speedup,
    table,
)


def job_figures(job: dict) -> dict[str, Any]:
    """What a matrix cell shows, read from the job's record and its conversion report."""
    rep = as_dict(job.get("report"))
    prec = as_dict(rep.get("precision"))
    outputs: list = job["outputs"] if isinstance(job.get("outputs"), list) else []
    main = next((o for o in outputs if as_dict(o).get("path") == job.get("output")), None)
    size = as_dict(main).get("bytes") if main else rep.get("size_after")
    if size is None and outputs:
        size = as_dict(outputs[0]).get("bytes")
    gate = as_dict(prec.get("gate"))
    ver = as_dict(job.get("verification")) or as_dict(rep.get("verification"))
    where = job.get("where_ran") or job.get("host") or job.get("node")
    if not where and job.get("worker_pid"):
        where = f"local, worker pid {job['worker_pid']}"
    if not where and job.get("status") == "cached":
        where = "cache (not run)"
    return {
        "size": size,
        "size_before": rep.get("size_before"),
        "speedup": as_float(as_dict(prec.get("latency")).get("speedup")),
        "cosine": as_float(gate.get("worst_cosine")),
        "max_abs": as_float(ver.get("max_abs_diff")),
        "cached": job.get("status") == "cached",
        "where": where or "",
        "seconds": as_float(as_dict(job.get("seconds")).get("total")),
    }


def recipe_page(run: dict, *, links: dict[str, str] | None = None, embed: bool = True) -> str:
    """The page for a ``tensorsmith-run-report/1`` object. ``links``: job name -> href of its page."""
    links = links or {}
    jobs = [j for j in run.get("jobs", []) if isinstance(j, dict)]
    counts = as_dict(run.get("counts"))
    body = []
    items = [
        ("exit code", e(run.get("exit_code"))),
        *(
            (k, e(counts.get(k, 0)))
            for k in ("total", "ok", "cached", "failed", "would-run")
            if counts.get(k)
        ),
        ("workers", e(run.get("workers"))),
        ("time", e(f"{num(as_float(run.get('seconds')))} s")),
    ]
    body.append(cards(items))
    failed = [j for j in jobs if j.get("status") == "failed"]
    if failed:
        lis = "".join(
            f"<li>{_link(j, links)} <span class='muted'>(exit {e(j.get('exit_code'))})</span>: "
            f"{e(_one_line(j.get('error')))}</li>"
            for j in failed
        )
        body.append(f'<div class="failures" id="failures"><b>{len(failed)} failed</b><ul>{lis}</ul></div>')
    body.append(section("Models × targets", _matrix(jobs, links), sid="matrix"))
    body.append(section("Charts", _charts(jobs), sid="charts"))
    body.append(section("Jobs", _job_table(jobs, links), sid="jobs"))
    meta = [
        ("recipe", run.get("recipe")),
        ("output dir", run.get("output_dir")),
        ("manifest", run.get("manifest")),
        ("started", run.get("started")),
        ("finished", run.get("finished")),
        ("tensorsmith", run.get("tensorsmith")),
    ]
    if run.get("dry_run"):
        meta.append(("dry run", "yes: nothing ran"))
    body.append(section("Run", table(["", ""], [m for m in meta if m[1] is not None]), sid="run"))
    status = "failed" if failed else ("ok" if run.get("exit_code") == 0 else str(run.get("exit_code")))
    recipe = str(run.get("recipe") or "recipe")
    return document(
        f"tensorsmith run {recipe} ({status})",
        f"tensorsmith run {e(recipe)} {badge(status)}",
        "".join(body),
        data=run if embed else None,
        footer="generated from the same report as <code>--report-json</code> "
        + (
            "(embedded as <code>#report-data</code>)" if embed else "(not embedded: the page would pass 8 MB)"
        ),
    )


def _one_line(text: Any) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= 240 else s[:237] + "..."


def _link(job: dict, links: dict[str, str]) -> str:
    name = str(job.get("name"))
    href = links.get(name)
    return f'<a href="{e(href)}">{e(name)}</a>' if href else f"<b>{e(name)}</b>"


def _matrix(jobs: list[dict], links: dict[str, str]) -> str:
    models: list[str] = []
    targets: list[str] = []
    cell: dict[tuple[str, str], dict] = {}
    for j in jobs:
        m, t = str(j.get("model")), str(j.get("target"))
        if m not in models:
            models.append(m)
        if t not in targets:
            targets.append(t)
        cell[(m, t)] = j
    rows = []
    for m in models:
        tds = [f"<th>{e(m)}</th>"]
        for t in targets:
            found = cell.get((m, t))
            if found is None:
                tds.append("<td class='muted'>–</td>")
                continue
            j = found
            fig = job_figures(j)
            lines = [f"{badge(j.get('status'))} <b>{e(j.get('name'))}</b>"]
            facts = []
            if fig["size"]:
                facts.append(human_bytes(fig["size"]))
            if fig["speedup"] is not None:
                facts.append(f"{speedup(fig['speedup'])} FP32")
            if fig["cosine"] is not None:
                facts.append(f"cos {num(fig['cosine'], 6)}")
            elif fig["max_abs"] is not None:
                facts.append(f"max diff {num(fig['max_abs'])}")
            if facts:
                lines.append(f"<small>{e(' · '.join(facts))}</small>")
            lines.append(f"<small>{'cached' if fig['cached'] else 'ran'}: {e(fig['where'])}</small>")
            if j.get("status") == "failed":
                lines.append(f"<small class='bad'>{e(_one_line(j.get('error'))[:90])}</small>")
            inner = "".join(lines)
            href = links.get(str(j.get("name")))
            status_cls = e(j.get("status"))
            if href:
                tds.append(f'<td><a class="cell {status_cls}" href="{e(href)}">{inner}</a></td>')
            else:
                tds.append(f'<td><div class="cell {status_cls}">{inner}</div></td>')
        rows.append("<tr>" + "".join(tds) + "</tr>")
    head = "<tr><th>model \\ target</th>" + "".join(f"<th>{e(t)}</th>" for t in targets) + "</tr>"
    return f'<table class="matrix"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _charts(jobs: list[dict]) -> str:
    out = []
    speed = []
    size = []
    for j in jobs:
        fig = job_figures(j)
        state = "bad" if j.get("status") == "failed" else "ok"
        if fig["speedup"] is not None:
            speed.append(
                svg.Row(
                    str(j.get("name")),
                    [fig["speedup"]],
                    mark=1.0,
                    state=state,
                    text=speedup(fig["speedup"]),
                )
            )
        if fig["size"]:
            before = as_float(fig["size_before"])
            size.append(
                svg.Row(
                    str(j.get("name")),
                    [before, as_float(fig["size"])],
                    text=f"{human_bytes(before)} → {human_bytes(fig['size'])}"
                    if before
                    else human_bytes(fig["size"]),
                )
            )
    if speed:
        out.append(
            svg.render(
                svg.Chart(
                    speed,
                    mark_label="FP32 (1x)",
                    caption="speed-up over FP32 (onnxruntime CPU, jobs with a precision step)",
                    css_class="speedup",
                )
            )
        )
    if size:
        out.append(
            svg.render(
                svg.Chart(size, series=("source", "output"), caption="model size per job", css_class="sizes")
            )
        )
    return "".join(out)


def _job_table(jobs: list[dict], links: dict[str, str]) -> str:
    rows = []
    for j in jobs:
        fig = job_figures(j)
        rows.append(
            (
                _link(j, links),
                badge(j.get("status")),
                e(j.get("exit_code")),
                e(j.get("to")) + (f" {e(j.get('precision'))}" if j.get("precision") else ""),
                e(human_bytes(fig["size"])),
                e(num(fig["seconds"])),
                e(j.get("why") or ""),
                f"<code>{e(j.get('command') or '')}</code>",
            )
        )
    return table(
        ["job", "status", "exit#", "to", "size#", "seconds#", "why it ran", "command"], rows, raw=True
    )
