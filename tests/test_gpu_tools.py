"""make gpu-bundle / make gpu-check without a GPU or a network: the bundle's choice of wheels
(tools/gpu_bundle.py) on a recorded resolution, and gpu_check.py's answer where CUDA is absent."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bundle = load(ROOT / "tools" / "gpu_bundle.py")


def item(name, version="1.0", requires=()):
    return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)}}


# a pip --report's "install" list, trimmed to what the pruning reads
REPORT = [
    item("nbgrader", requires=["jupyter-server>=2", "jupyterlab>=4", "notebook>=7", "nbconvert",
                               "pytest; extra == 'dev'"]),
    item("jupyterlab", requires=["jupyter-server", "babel", "ipykernel"]),
    item("notebook", requires=["jupyterlab", "notebook-shim"]),
    item("notebook-shim", requires=["jupyter-server"]),
    item("babel"),
    item("jupyter-server", requires=["tornado", "prometheus-client"]),
    item("ipykernel", requires=["tornado", "debugpy", "appnope; sys_platform == 'darwin'"]),
    item("appnope"),
    item("debugpy"),
    item("tornado"),
    item("prometheus-client"),
    item("nbconvert", requires=["jinja2", "bleach[css]", "tomli; python_version < '3.11'"]),
    item("bleach", requires=["webencodings", "tinycss2; extra == 'css'"]),
    item("tinycss2"),
    item("webencodings"),
    item("tomli"),
    item("jinja2", requires=["MarkupSafe>=2"]),
    item("MarkupSafe"),
    item("segmentation_models_pytorch", requires=["torch>=2", "timm"]),
    item("timm", requires=["torch", "torchvision"]),
    item("torch", requires=["nvidia-cublas-cu12; platform_system == 'Linux'", "triton"]),
    item("torchvision", requires=["torch"]),
    item("nvidia-cublas-cu12"),
    item("triton"),
]


def test_the_bundle_keeps_what_grading_imports_and_drops_pytorch_and_front_ends():
    names = {bundle.canonical(i["metadata"]["name"]) for i in REPORT}
    never = {n for n in names if bundle.NEVER.match(n)}
    assert never == {"torch", "torchvision", "nvidia-cublas-cu12", "triton"}
    roots = ["nbgrader>=0.9.3", "segmentation-models-pytorch>=0.3.3", *bundle.EXTRA_ROOTS]
    keep = bundle.needed(REPORT, roots, never | bundle.FRONTENDS, "3.12")
    assert keep == {"nbgrader", "jupyter-server", "tornado", "prometheus-client", "nbconvert", "jinja2", "markupsafe",
                    "bleach", "tinycss2", "webencodings", "segmentation-models-pytorch", "timm", "ipykernel",
                    "debugpy"}  # not babel (JupyterLab's), appnope (macOS), tomli (Python < 3.11), pytest (an extra)
    assert "tomli" in bundle.needed(REPORT, roots, never, "3.10")
    full = bundle.needed(REPORT, roots, never, "3.12")
    assert {"jupyterlab", "notebook", "babel", "notebook-shim"} <= full


def test_the_image_list_and_the_projects_requirements():
    image = bundle.read_names(ROOT / "tools" / "gpu_image_packages.txt")
    assert {"numpy", "torch", "pytest", "timm", "scikit-image", "python-dateutil", "typing-extensions"} <= image
    assert "nbgrader" not in image and "papermill" not in image
    reqs = {bundle.canonical(r.split(">")[0].split("=")[0].split("<")[0]) for r in
            bundle.project_requirements(ROOT / "pyproject.toml")}
    assert {"nbgrader", "papermill", "segmentation-models-pytorch", "ipykernel", "torch"} <= reqs
    assert not reqs & {"ruff", "monai"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer where there is no GPU")
def test_gpu_check_without_a_gpu_says_so_and_succeeds(tmp_path):
    out = tmp_path / "gpu-check.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU here" in done.stdout
    assert "no CUDA GPU" in json.loads(out.read_text())["skipped"]


def test_gpu_check_script_without_nvidia_smi_succeeds(tmp_path):
    import shutil

    if not Path("/bin/bash").exists() or shutil.which("nvidia-smi", path="/usr/bin:/bin"):
        pytest.skip("needs bash and no nvidia-smi in /usr/bin:/bin")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(["/bin/bash", str(ROOT / "tools" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0 and "no nvidia-smi" in done.stdout, done.stdout + done.stderr
