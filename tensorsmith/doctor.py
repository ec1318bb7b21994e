"""``tensorsmith doctor``: what this machine has (``machine.py`` probes it), and which targets it
can produce, at which precisions, and if not, why (each target answers for itself).
"""

from __future__ import annotations

import platform

from tensorsmith import machine


def collect() -> dict:
    from tensorsmith import __version__

    info = {
        "tensorsmith": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "packages": {
            "onnx": machine.package_version("onnx"),
            "onnx_ir": machine.package_version("onnx-ir", "onnx_ir"),
            "onnxscript": machine.package_version("onnxscript"),
            "tf2onnx": machine.package_version("tf2onnx"),
            "cuda-python": machine.package_version("cuda-python", "cuda-bindings"),
        },
        "onnxruntime": machine.onnxruntime_info(),
        "torch": machine.torch_info(),
        "tensorflow": machine.tensorflow_info(),
        "tensorrt": machine.tensorrt_info(),
        "gpus": machine.gpus(),
    }
    info["targets"] = capabilities(info)
    return info


def capabilities(info: dict) -> dict:
    """For each ``--to`` target: can this machine produce it, at which precisions, and if not, why
    (each target says it: ``Target.capabilities``)."""
    from tensorsmith.convert.targets import TARGETS, get_target

    targets: dict = {}
    for name in TARGETS:
        targets.update(get_target(name).capabilities(info))
    return targets


def render(info: dict, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="versions", title_justify="left", header_style="bold")
    t.add_column("component")
    t.add_column("version")
    t.add_column("details")
    t.add_row("tensorsmith", info["tensorsmith"], f"Python {info['python']}, {info['platform']}")
    for name, v in info["packages"].items():
        t.add_row(name, v or "-", "")
    ort = info["onnxruntime"]
    t.add_row(
        "onnxruntime", ort.get("version") or "-", "providers: " + (", ".join(ort.get("providers", [])) or "-")
    )
    tor = info["torch"]
    t.add_row(
        "torch",
        tor.get("version") or "-",
        ""
        if not tor.get("version")
        else f"CUDA {tor.get('cuda') or 'none'}" + (", GPU available" if tor.get("cuda_available") else ""),
    )
    tf = info["tensorflow"]
    trt_flag = {True: "built with TensorRT", False: "built without TensorRT", None: ""}[
        tf.get("tensorrt_build")
    ]
    t.add_row("tensorflow", tf.get("version") or "-", trt_flag)
    trt = info["tensorrt"]
    t.add_row("tensorrt", trt.get("version") or "-", escape(trt.get("error", "")))
    console.print(t)

    g = Table(title="GPUs", title_justify="left", header_style="bold")
    g.add_column("#")
    g.add_column("name")
    g.add_column("compute capability")
    g.add_column("memory")
    g.add_column("driver")
    for gpu in info["gpus"].get("gpus", []):
        mem = f"{gpu['memory_mib']} MiB" if gpu.get("memory_mib") else "-"
        g.add_row(
            str(gpu["index"]),
            escape(gpu["name"]),
            gpu.get("compute_capability") or "?",
            mem,
            gpu.get("driver") or "",
        )
    if info["gpus"].get("gpus"):
        console.print(g)
    else:
        console.print(f"GPUs: none ({escape(info['gpus'].get('note', 'nvidia-smi lists none'))})")

    tt = Table(title="targets (--to)", title_justify="left", header_style="bold")
    tt.add_column("target")
    tt.add_column("available")
    tt.add_column("precisions")
    tt.add_column("why not / notes")
    for name, cap in info["targets"].items():
        notes = [cap["why_not"]] if cap["why_not"] else []
        notes += [f"{p}: {w}" for p, w in cap["precisions_unavailable"].items()] if cap["available"] else []
        if cap.get("note"):
            notes.append(cap["note"])
        tt.add_row(
            name,
            "[green]yes[/green]" if cap["available"] else "[red]no[/red]",
            ", ".join(cap["precisions"]) or "-",
            escape("; ".join(notes)),
        )
    console.print(tt)


__all__ = ["capabilities", "collect", "render"]
