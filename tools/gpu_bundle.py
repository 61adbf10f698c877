"""``make gpu-bundle``: the wheels ``make gpu-check`` installs on an air-gapped GPU host.

Run on a machine with the package index in reach. It resolves the project's dependencies for
the GPU host's Python and platform (default: the lent GPU machine's, CPython 3.12 on x86_64
manylinux), then downloads into ``.gpu-bundle/`` (git-ignored):

* the wheels of what the GPU check needs, **except** PyTorch itself (torch, torchvision,
  torchaudio, triton, ``nvidia-*``, ``cuda-*``: the host's PyTorch with CUDA is reused), the
  packages the host's image already holds (``tools/gpu_image_packages.txt``) and, unless
  ``--full``, what only the Jupyter front ends need (JupyterLab, Notebook and what nothing else
  pulls in): grading runs nbgrader's command-line apps and kernels only;
* Debian's ``bubblewrap`` package (``apt-get download``), unpacked there if ``bwrap`` is missing;
* ``requirements.txt`` (what was kept, pinned) and ``manifest.json`` (what was left out, why).

It prints the bundle's size and the repository's (the files that travel to the GPU machine:
tracked and untracked-not-ignored) and fails when both together exceed ``--max-mib``.

    python tools/gpu_bundle.py [--out .gpu-bundle] [--python-version 3.12]
                               [--platform manylinux_2_28_x86_64 ...] [--image-packages FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    from packaging.markers import Marker  # noqa: F401
    from packaging.requirements import Requirement
except ImportError:  # pip always vendors it
    from pip._vendor.packaging.requirements import Requirement

try:
    import tomllib
except ImportError:  # Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ImportError:
        tomllib = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parents[1]
# The device machine's recipe (/work/.library/device/README.md): pip matches manylinux_2_N exactly.
DEFAULT_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                     "manylinux2014_x86_64", "manylinux1_x86_64", "manylinux_2_34_x86_64",
                     "manylinux_2_31_x86_64", "manylinux_2_24_x86_64", "linux_x86_64")
# The host's PyTorch is reused: never bundle a second one (multi-GB, and it would shadow CUDA's).
NEVER = re.compile(r"^(torch|torchvision|torchaudio|triton|pytorch-triton|nvidia-.*|cuda-.*)$")
# Development tools the GPU check does not run; monai is only for the CPU benchmark of losses.
NOT_NEEDED = {"ruff", "monai"}
# Needed at grading time but, among our requirements, only JupyterLab pulls it in: the kernel.
EXTRA_ROOTS = ["ipykernel"]
# Only the Jupyter front ends (JupyterLab, Notebook) need these; nbgrader's autograde, papermill and the
# kernels do not import them (nbgrader's own __init__ does import jupyter_server, which stays).
# Left out unless --full, pruned with what only they pull in.
FRONTENDS = {"jupyterlab", "notebook", "jupyterlab-server", "jupyter-lsp", "notebook-shim", "jupyter-builder",
             "jupyterlab-widgets", "widgetsnbextension"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(pyproject: Path) -> list[str]:
    """The project's dependencies and its dev extra, without the development-only tools."""
    if tomllib is None:
        raise SystemExit("gpu-bundle needs Python >= 3.11 (tomllib) or the 'tomli' package to read pyproject.toml")
    data = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(data["dependencies"]) + list(data.get("optional-dependencies", {}).get("dev", []))
    return [r for r in reqs if canonical(Requirement(r).name) not in NOT_NEEDED] + EXTRA_ROOTS


def read_names(path: Path | None) -> set[str]:
    if path is None or not path.is_file():
        return set()
    names = set()
    for line in path.read_text().splitlines():
        names.update(canonical(n) for n in line.split("#", 1)[0].split())
    return names


def platform_args(python_version: str, platforms: list[str]) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for p in platforms:
        args += ["--platform", p]
    return args


def resolve(requirements: list[str], python_version: str, platforms: list[str]) -> list[dict]:
    """pip's resolution for the target (metadata only: nothing is installed, big wheels are not fetched)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--disable-pip-version-check", "--report", str(report), "--target", str(Path(tmp) / "target"),
               *platform_args(python_version, platforms), *requirements]
        subprocess.run(cmd, check=True)
        return json.loads(report.read_text())["install"]


def target_environment(python_version: str) -> dict[str, str]:
    return {"python_version": python_version, "python_full_version": python_version + ".0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "platform_machine": "x86_64", "extra": ""}


def needed(items: list[dict], roots: list[str], drop: set[str], python_version: str) -> set[str]:
    """Names reachable from ``roots`` through dependencies on the target, never through ``drop``."""
    by_name = {canonical(it["metadata"]["name"]): it for it in items}
    env = target_environment(python_version)
    seen: set[tuple[str, str]] = set()
    keep: set[str] = set()
    todo = [(canonical(Requirement(r).name), tuple(sorted(Requirement(r).extras))) for r in roots]
    while todo:
        name, extras = todo.pop()
        if name in drop or name not in by_name:
            continue
        keep.add(name)
        for extra in ("", *extras):
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            for text in by_name[name]["metadata"].get("requires_dist", []):
                req = Requirement(text)
                if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
                    continue
                if req.marker is None and extra:
                    continue  # an unconditional requirement was followed with extra ""
                todo.append((canonical(req.name), tuple(sorted(req.extras))))
    return keep


def download(pins: list[str], out: Path, python_version: str, platforms: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
           "--dest", str(out), *platform_args(python_version, platforms), *pins]
    subprocess.run(cmd, check=True)


def download_bubblewrap(out: Path) -> str | None:
    """Debian's bubblewrap package into ``out``; its file name, or None where apt-get is missing."""
    if shutil.which("apt-get") is None:
        print("gpu-bundle: no apt-get here: bubblewrap is not bundled (the GPU host must have bwrap)", file=sys.stderr)
        return None
    before = set(out.glob("*.deb"))
    subprocess.run(["apt-get", "download", "-qq", "bubblewrap"], cwd=out, check=True)
    new = sorted(set(out.glob("*.deb")) - before) or sorted(out.glob("bubblewrap_*.deb"))
    return new[-1].name if new else None


def travelling_files(root: Path) -> list[Path]:
    """What goes to the GPU machine: tracked files and untracked ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, check=True).stdout.decode()
    return [root / p for p in out.split("\0") if p and (root / p).is_file()]


def mib(n: int) -> float:
    return n / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu-bundle")
    parser.add_argument("--python-version", default="3.12", help="the GPU host's Python (default 3.12)")
    parser.add_argument("--platform", action="append", default=None,
                        help=f"wheel platform tags, repeatable (default: {' '.join(DEFAULT_PLATFORMS)})")
    parser.add_argument("--image-packages", type=Path, default=ROOT / "tools" / "gpu_image_packages.txt",
                        help="names the GPU host already has, one or more a line; '' bundles them too")
    parser.add_argument("--full", action="store_true", help="also bundle JupyterLab and Notebook")
    parser.add_argument("--no-bubblewrap", action="store_true", help="do not bundle Debian's bubblewrap")
    parser.add_argument("--max-mib", type=float, default=60.0, help="limit for repository + bundle (default 60)")
    args = parser.parse_args(argv)
    platforms = args.platform or list(DEFAULT_PLATFORMS)
    image = read_names(args.image_packages if str(args.image_packages) else None)

    requirements = project_requirements(ROOT / "pyproject.toml")
    print(f"gpu-bundle: resolving {len(requirements)} requirements for CPython {args.python_version} "
          f"on {platforms[0]} ...", flush=True)
    items = resolve(requirements, args.python_version, platforms)
    resolved = {canonical(it["metadata"]["name"]): it["metadata"]["version"] for it in items}
    never = {n for n in resolved if NEVER.match(n)}
    drop = set() if args.full else FRONTENDS
    reachable = needed(items, requirements, never | drop, args.python_version)
    skipped = {
        "pytorch (the host's is reused)": sorted(never),
        "front ends only (--full bundles them)": sorted(set(resolved) - reachable - never),
        "already in the GPU image": sorted(reachable & image),
    }
    keep = sorted(reachable - image - never)
    pins = [f"{n}=={resolved[n]}" for n in keep]

    args.out.mkdir(parents=True, exist_ok=True)
    for old in [*args.out.glob("*.whl"), *args.out.glob("*.deb")]:
        old.unlink()
    print(f"gpu-bundle: downloading {len(pins)} wheels into {args.out} (leaving out {len(never)} of PyTorch, "
          f"{len(skipped['already in the GPU image'])} in the image, "
          f"{len(skipped['front ends only (--full bundles them)'])} for the front ends only)", flush=True)
    download(pins, args.out, args.python_version, platforms)
    deb = None if args.no_bubblewrap else download_bubblewrap(args.out)
    (args.out / "requirements.txt").write_text("".join(p + "\n" for p in pins))
    manifest = {"python_version": args.python_version, "platforms": platforms, "wheels": pins,
                "bubblewrap_deb": deb, "left_out": skipped}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    bundle = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    try:
        inside = args.out.resolve().relative_to(ROOT)
    except ValueError:
        inside = None
    repo_files = [p for p in travelling_files(ROOT) if inside is None or inside not in p.relative_to(ROOT).parents]
    repo = sum(p.stat().st_size for p in repo_files)
    biggest = sorted(args.out.glob("*.whl"), key=lambda p: p.stat().st_size, reverse=True)[:5]
    print("gpu-bundle: largest wheels: " + ", ".join(f"{p.name.split('-')[0]} {mib(p.stat().st_size):.1f}"
                                                     for p in biggest) + " MiB")
    print(f"gpu-bundle: bundle {mib(bundle):.1f} MiB ({len(pins)} wheels{', bubblewrap' if deb else ''}), "
          f"repository {mib(repo):.1f} MiB ({len(repo_files)} files), together {mib(bundle + repo):.1f} MiB "
          f"(limit {args.max_mib:g} MiB)")
    if mib(bundle + repo) > args.max_mib:
        print(f"gpu-bundle: over the {args.max_mib:g} MiB limit: untrack large files (git rm --cached) or "
              "bundle less", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
