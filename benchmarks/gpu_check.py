"""``make gpu-check``: what only a CUDA GPU can show, in one run of a few minutes.

    python benchmarks/gpu_check.py [--out build/gpu-check.json] [--budget 470] [--workers N]
                                   [--parts bench,tests,grade]

Parts, each in a child process with its own share of ``--budget`` seconds, each failing
soft (its error goes into the JSON; the others still run):

* ``bench``: train-step throughput of our FPN against segmentation_models_pytorch's on
  CUDA, interleaved as in ``benchmarks/bench_models.py`` (its functions), and the ratios;
* ``tests``: the tests marked ``gpu`` (``pytest -m gpu``);
* ``grade``: the final assignment's example submissions graded by the harness on the GPU,
  in the sandbox, with the course's small parameters (``autograder.demo.run``, as ``make
  demo`` grades them), each example's status checked against what it must get, and the
  seconds per graded submission. Where no submission could be graded in the sandbox, the
  batch is repeated unsandboxed (``AUTOGRADER_SANDBOX=off``, recorded as such) so that the
  timing figure still comes, if the budget allows.

Also recorded: the host (torch, GPU, capability, the dtype fit trains in, bubblewrap) and
what :mod:`autograder.gpus` makes of its GPUs (ids to pin, device nodes per id). Where torch
sees no CUDA GPU it says so, writes that into the JSON and exits 0. The JSON is rewritten
after every part, so a run stopped midway keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "04_segmentation_assignment"
MARK = "GPU_CHECK_RESULT "
PARTS = ("bench", "tests", "grade")
SHARES = {"bench": 0.17, "tests": 0.23}  # of the budget; grading gets the rest


# ----------------------------------------------------------------------- child processes
def child_bench(args) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from bench_models import VARIANTS, time_models

    from course_lib.train import mixed_precision_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # cpu: --allow-cpu only
    bench_args = argparse.Namespace(batch=args.bench_batch, size=args.bench_size, warmup=3, repeats=args.bench_repeats)
    started = time.perf_counter()
    speed = time_models(bench_args, device)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "batch": bench_args.batch, "size": bench_args.size,
        "repeats": bench_args.repeats, "variants": {k: {"library": v[0], "amp": v[1]} for k, v in VARIANTS.items()},
        "mixed_precision": str(mixed_precision_dtype(device)), "images_per_s": speed,
        "fpn_vs_smp_speed_ratio": speed["ours"] / speed["smp"],
        "fpn_vs_smp_speed_ratio_fp32": speed["ours_fp32"] / speed["smp"],
        "seconds": time.perf_counter() - started,
    }


def child_grade(args) -> dict:
    from autograder import demo, grading

    out = Path(args.grade_out).resolve()
    started = time.perf_counter()
    rows = demo.run(out, args.workers, [args.assignment], progress=False)
    wall = time.perf_counter() - started
    graded = [float(r["seconds"]) for r in rows if r["status"] == "graded" and r.get("seconds")]
    return {
        "assignment": args.assignment, "out": str(out), "sandbox": os.environ.get("AUTOGRADER_SANDBOX", "on"),
        "workers": args.workers,
        "devices": sorted({r.get("device") or "" for r in rows}),
        "submissions": len(rows), "wall_seconds": wall,
        "seconds_per_submission": wall / len(rows) if rows else None,
        "mean_seconds_per_graded_submission": sum(graded) / len(graded) if graded else None,
        "rows": [{k: r.get(k) for k in ("student", "status", "reason", "auto_score", "auto_max_score", "seconds",
                                        "device", "enforcement")} for r in rows],
        "unexpected": demo.check_expectations(rows),
        "table": grading.summary_table(rows),
    }


def run_child(part: str, args, timeout: float, env: dict[str, str] | None = None) -> dict:
    """``part`` in a child process (its own session: a timeout kills its kernels too)."""
    cmd = [sys.executable, __file__, "--child", part, "--grade-out", args.grade_out, "--assignment", args.assignment,
           "--bench-size", str(args.bench_size), "--bench-batch", str(args.bench_batch),
           "--bench-repeats", str(args.bench_repeats)]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    return run_process(cmd, timeout, env, result=True)


def run_process(cmd: list[str], timeout: float, env: dict[str, str] | None = None, result: bool = False) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return {"error": f"timed out after {timeout:.0f} s", "seconds": time.perf_counter() - started,
                "output_tail": output[-4000:]}
    record: dict = {"returncode": proc.returncode, "seconds": time.perf_counter() - started}
    if result:
        lines = [line for line in output.splitlines() if line.startswith(MARK)]
        if lines:
            record.update(json.loads(lines[-1][len(MARK):]))
        else:
            record["error"] = f"exited {proc.returncode} without a result"
            record["output_tail"] = output[-4000:]
    else:
        record["output_tail"] = output[-4000:]
    return record


# ------------------------------------------------------------------------------ parts
def host_info() -> dict:
    info: dict = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
                  "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_available"] = torch.cuda.is_available()
        if info["cuda_available"]:
            from course_lib.train import mixed_precision_dtype

            info["cuda"] = torch.version.cuda
            info["devices"] = [{"name": torch.cuda.get_device_name(i),
                                "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
                                "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
                                "uuid": str(torch.cuda.get_device_properties(i).uuid)}
                               for i in range(torch.cuda.device_count())]
            info["fit_dtype"] = str(mixed_precision_dtype(torch.device("cuda")))
            info["is_bf16_supported"] = torch.cuda.is_bf16_supported()
    except Exception as err:  # noqa: BLE001 - recorded, not raised
        info["torch_error"] = f"{type(err).__name__}: {err}"
    info["bwrap"] = shutil.which("bwrap")
    try:
        from autograder import sandbox

        info["sandbox_probe"] = {"ok": True, "bwrap": sandbox.check_bwrap()}
    except Exception as err:  # noqa: BLE001
        info["sandbox_probe"] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    return info


def gpu_mapping() -> dict:
    from autograder import gpus

    found = gpus.list_gpus()
    ids = gpus.pinning_ids("auto", found)
    return {"gpus": [dataclasses.asdict(g) for g in found], "pinning_ids": ids,
            "device_nodes": {i: gpus.device_nodes(i, found) for i in ids},
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def part_tests(timeout: float) -> dict:
    junit = ROOT / "build" / "gpu-check" / "gpu-tests.xml"
    junit.parent.mkdir(parents=True, exist_ok=True)
    # only the modules that mark tests gpu: the others may need what the GPU host lacks (monai)
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py") if "mark.gpu" in p.read_text())
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rfEs",
           f"--junitxml={junit}", *files]
    record = run_process(cmd, timeout)
    record["files"] = files
    try:
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        record.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
        record["passed"] = record["tests"] - record["failures"] - record["errors"] - record["skipped"]
        record["not_passed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                                if c.find("failure") is not None or c.find("error") is not None]
    except (OSError, ET.ParseError) as err:
        record.setdefault("error", f"no test report: {err}")
    if record.get("returncode") not in (0, None) and "error" not in record:
        record["error"] = f"pytest exited {record['returncode']}"
    return record


def part_grade(args, deadline: float) -> dict:
    record = run_child("grade", args, deadline - time.monotonic() - 5)
    graded = [r for r in record.get("rows", []) if r["status"] == "graded"]
    if not graded and deadline - time.monotonic() > 150:
        record["unsandboxed"] = run_child("grade", args, deadline - time.monotonic() - 5,
                                          env={"AUTOGRADER_SANDBOX": "off"})
    if record.get("unexpected") and not record.get("error"):
        record["error"] = f"{len(record['unexpected'])} example(s) not graded as expected: {record['unexpected']}"
    elif "rows" in record and not graded and not record.get("error"):
        record["error"] = "no submission was graded"
    return record


# ------------------------------------------------------------------------------- main
def summary(result: dict) -> str:
    lines = []
    host = result.get("host", {})
    for d in host.get("devices", []):
        lines.append(f"GPU: {d['name']} (capability {d['capability']}, {d['memory_gib']} GiB); fit trains in "
                     f"{host.get('fit_dtype')}; torch {host.get('torch')} (CUDA {host.get('cuda')})")
    probe = host.get("sandbox_probe", {})
    lines.append(f"sandbox: {'bwrap works (' + str(probe.get('bwrap')) + ')' if probe.get('ok') else probe.get('error')}")
    mapping = result.get("gpu_mapping", {})
    if "error" in mapping:
        lines.append(f"gpu mapping: ERROR {mapping['error']}")
    elif mapping:
        lines.append(f"gpu mapping: pin {mapping['pinning_ids']}; nodes {mapping['device_nodes']}")
    bench = result.get("bench")
    if bench:
        if "fpn_vs_smp_speed_ratio" in bench:
            ips = bench["images_per_s"]
            lines.append(f"bench: train step ours {ips['ours']:.0f} img/s ({bench['mixed_precision']}), ours fp32 "
                         f"{ips['ours_fp32']:.0f}, smp fp32 {ips['smp']:.0f}: ratio {bench['fpn_vs_smp_speed_ratio']:.2f} "
                         f"(fp32 {bench['fpn_vs_smp_speed_ratio_fp32']:.2f}) at batch {bench['batch']}, "
                         f"{bench['size']} px")
        else:
            lines.append(f"bench: ERROR {bench.get('error')}")
    tests = result.get("tests")
    if tests:
        if "tests" in tests:
            lines.append(f"gpu tests: {tests['passed']} passed, {tests['failures']} failed, {tests['errors']} errors, "
                         f"{tests['skipped']} skipped in {tests['seconds']:.0f} s"
                         + (f"; not passed: {tests['not_passed']}" if tests["not_passed"] else ""))
        else:
            lines.append(f"gpu tests: ERROR {tests.get('error')}")
    grade = result.get("grade")
    if grade:
        for label, g in (("grade", grade), ("grade (unsandboxed)", grade.get("unsandboxed"))):
            if not g:
                continue
            if "rows" in g:
                per = g["mean_seconds_per_graded_submission"]
                lines.append(f"{label}: {g['submissions']} submissions of {g['assignment']} in {g['wall_seconds']:.0f} s "
                             f"({g['seconds_per_submission']:.1f} s each, "
                             f"{'n/a' if per is None else f'{per:.1f}'} s per graded one), "
                             f"sandbox {g['sandbox']}; "
                             + ("every example as expected" if not g["unexpected"] else f"UNEXPECTED: {g['unexpected']}"))
            else:
                lines.append(f"{label}: ERROR {g.get('error')}")
    lines.append(f"errors: {result['errors'] or 'none'}; {result['seconds']:.0f} s in all")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-check.json")
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for all parts (default 470)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--workers", type=int, default=None, help="grading workers (default: one per GPU)")
    parser.add_argument("--grade-out", default=str(ROOT / "build" / "gpu-check" / "grade"))
    parser.add_argument("--assignment", default=ASSIGNMENT, help=f"whose examples to grade (default {ASSIGNMENT})")
    parser.add_argument("--bench-size", type=int, default=256)
    parser.add_argument("--bench-batch", type=int, default=16)
    parser.add_argument("--bench-repeats", type=int, default=10)
    parser.add_argument("--allow-cpu", action="store_true", help="run the parts without a GPU (tests this script)")
    parser.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = {"bench": child_bench, "grade": child_grade}[args.child](args)
        print(MARK + json.dumps(result, default=str), flush=True)
        return 0

    started, deadline = time.monotonic(), time.monotonic() + args.budget
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    result: dict = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "errors": {}, "seconds": 0.0}

    def save() -> None:
        result["seconds"] = time.monotonic() - started
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    result["host"] = host_info()
    if not result["host"].get("cuda_available") and not args.allow_cpu:
        why = result["host"].get("torch_error") or "torch.cuda.is_available() is False"
        result["skipped"] = f"no CUDA GPU here ({why})"
        save()
        print(f"gpu-check: {result['skipped']}: nothing to check; wrote {args.out}")
        return 0
    try:
        result["gpu_mapping"] = gpu_mapping()
    except Exception as err:  # noqa: BLE001
        result["gpu_mapping"] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]}
        result["errors"]["gpu_mapping"] = result["gpu_mapping"]["error"]
    save()
    for part in parts:
        left = deadline - time.monotonic()
        print(f"gpu-check: {part} ({left:.0f} s left) ...", flush=True)
        try:
            if part == "bench":
                record = run_child("bench", args, min(left, args.budget * SHARES["bench"]))
            elif part == "tests":
                record = part_tests(min(left, args.budget * SHARES["tests"]))
            elif part == "grade":
                record = part_grade(args, deadline)
            else:
                record = {"error": f"unknown part {part!r}"}
        except Exception as err:  # noqa: BLE001 - one part's fault must not hide the others
            record = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]}
        result[part] = record
        if record.get("error"):
            result["errors"][part] = record["error"]
        save()
    print(summary(result))
    print(f"gpu-check: wrote {args.out}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
