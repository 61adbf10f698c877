"""The repository stays small and clean: what notebook runs leave behind is never tracked.

Running a notebook of ``solutions/`` or ``notebooks/`` writes checkpoints
(``submission_model.pt``), probe files (``probes_*.npz``), figures and data next to it;
``.gitignore`` keeps them out, and these tests fail when one is tracked anyway (``git add -f``,
or tracked before the ignore rule). Sizes are those git stores (the index), not the
working tree's.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

COURSE_FOLDERS = ("solutions/", "notebooks/")
ASSETS: dict[str, str] = {
    "solutions/04_segmentation_assignment/calibration.json":
        "the graded mIoU thresholds and how they were calibrated: the grader and the tests read it, the notebook shows it",
    "notebooks/04_segmentation_assignment/calibration.json": "the released copy of it, which the student's notebook shows",
}
"""Files besides notebooks that solutions/ and notebooks/ may track: declare each here, with why."""

MAX_BYTES = 2 * 10**6
LARGE_ALLOWED: dict[str, str] = {
    "examples/": "example submissions (notebooks, zips) graded by make demo",
}
"""Paths (a trailing '/' means a folder) allowed past :data:`MAX_BYTES`, with why."""


def tracked() -> dict[str, int]:
    """Tracked path -> size in bytes of its blob in the index."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listing = subprocess.run(["git", "ls-files", "-s", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    entries = []
    for record in listing.decode().split("\0"):
        if record:
            meta, path = record.split("\t", 1)
            mode, sha, _stage = meta.split()
            if mode != "160000":  # a submodule's commit, not a blob
                entries.append((path, sha))
    sizes = subprocess.run(["git", "cat-file", "--batch-check=%(objectsize)"], cwd=ROOT, check=True,
                           input="".join(sha + "\n" for _, sha in entries).encode(), capture_output=True).stdout
    return {path: int(size) for (path, _), size in zip(entries, sizes.decode().split())}


def allowed(path: str, table: dict[str, str]) -> bool:
    return any(path == key or (key.endswith("/") and path.startswith(key)) for key in table)


def _is_declaration(path: str) -> bool:
    """An assignment's declaration and grader code beside its source notebook (autograder/course.py)."""
    parts = path.split("/")
    return len(parts) == 3 and parts[0] == "solutions" and parts[2] in ("assignment.toml", "grading.py")


def test_course_folders_track_only_notebooks_and_declared_assets():
    files = tracked()
    stray = sorted(p for p in files if p.startswith(COURSE_FOLDERS) and not p.endswith(".ipynb") and p not in ASSETS
                   and not _is_declaration(p))
    assert not stray, (f"tracked files in {' and '.join(COURSE_FOLDERS)} that are neither notebooks nor declared "
                       f"assets (tests/test_repository.py ASSETS): {stray}; if a notebook run left them, "
                       f"`git rm --cached` them (.gitignore covers them)")
    assert all(p in files for p in ASSETS), "a declared asset is no longer tracked: update ASSETS"


def test_no_large_files_are_tracked():
    big = {p: n for p, n in tracked().items() if n > MAX_BYTES and not allowed(p, LARGE_ALLOWED)}
    assert not big, (f"tracked files over {MAX_BYTES / 1e6:g} MB (the repository travels to GPU hosts and CI): "
                     + ", ".join(f"{p} ({n / 1e6:.1f} MB)" for p, n in sorted(big.items()))
                     + "; untrack them or add them to LARGE_ALLOWED with a reason")


def test_notebook_outputs_are_ignored():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    leftovers = ["solutions/04_segmentation_assignment/submission_model.pt",
                 "notebooks/04_segmentation_assignment/submission_model.pt",
                 "solutions/01_pyramids_vs_fpn/probes_out_fpn.npz", "notebooks/03_dice_iou/figure.png",
                 ".gpu-bundle/nbgrader-0.9.6-py3-none-any.whl", ".venv-gpu/bin/python"]
    out = subprocess.run(["git", "check-ignore", "--no-index", *leftovers], cwd=ROOT, capture_output=True,
                         text=True).stdout.split()
    assert sorted(out) == sorted(leftovers), f"not ignored: {sorted(set(leftovers) - set(out))}"
    notebook = "solutions/04_segmentation_assignment/segmentation_assignment.ipynb"
    assert subprocess.run(["git", "check-ignore", "-q", "--no-index", notebook], cwd=ROOT).returncode == 1


def test_the_readmes_images_are_tracked():
    import re

    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())
    assert images, "the README shows JupyterLab (a screenshot from tests/test_browser.py)"
    files = tracked()
    assert [p for p in images if p not in files] == []
