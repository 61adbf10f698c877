"""pyproject.toml and environment.yml describe the same environment; tools/install.py installs it."""

import importlib.util
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name


def _split(requirement: str) -> tuple[str, str]:
    requirement = requirement.split(";")[0]  # an environment marker: conda installs it everywhere
    requirement = re.sub(r"\[[^\]]*\]", "", requirement)  # extras (psycopg[binary]): conda's package has them
    name, spec = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", requirement).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return dict(_split(r) for r in reqs)


def _conda_requirements() -> dict[str, str]:
    deps, inside = {}, False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            inside = True
            continue
        m = re.match(r"\s+-\s+([^#\s][^#]*)", line) if inside else None
        if m and not m.group(1).strip().endswith(":"):
            name, spec = _split(m.group(1).strip())
            deps[name] = spec
    return deps


def test_environment_yml_and_pyproject_list_the_same_packages_and_versions():
    conda = _conda_requirements()
    pypi = {CONDA_NAMES.get(name, name): spec for name, spec in _pyproject_requirements().items()}
    assert conda.pop("python", None) is not None
    assert conda.pop("pip", None) is not None
    assert conda == pypi


def test_torch_is_capped_at_the_versions_the_course_machines_serve():
    reqs = _pyproject_requirements()
    assert "<=2.14.1" in reqs["torch"]
    assert "<=0.29.1" in reqs["torchvision"]


def test_ci_runs_the_readme_test_command():
    readme_commands = re.findall(r"^\s*(make \w+)\s*$", (ROOT / "README.md").read_text(), flags=re.M)[:2]
    assert readme_commands == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_the_installer_hands_pips_settings_to_uv_or_leaves_the_install_to_pip():
    """tools/install.py: uv gets the indexes, links, constraints and certificate pip has,
    the environment's values over the files'; a setting without an equivalent means pip."""
    spec = importlib.util.spec_from_file_location("install", ROOT / "tools" / "install.py")
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    Unsupported, pip_settings, uv_arguments = install.Unsupported, install.pip_settings, install.uv_arguments

    listing = ("global.extra-index-url='file:///a/simple file:///b/simple'\n"
               "global.constraint='/etc/pip/constraints.txt'\n"
               "global.find-links='/from/file'\n"
               ":env:.find-links='/opt/wheels'\n"
               "global.cert='/etc/ssl/ca.crt'\n"
               ":env:.disable-pip-version-check='1'\n")
    settings = pip_settings(listing)
    assert settings["find-links"] == "/opt/wheels"  # PIP_FIND_LINKS wins over the file
    args, env = uv_arguments(settings)
    assert args[:2] == ["--index-strategy", "unsafe-best-match"]
    pairs = list(zip(args[2::2], args[3::2]))
    assert ("--extra-index-url", "file:///a/simple") in pairs and ("--extra-index-url", "file:///b/simple") in pairs
    assert ("--constraint", "/etc/pip/constraints.txt") in pairs and ("--find-links", "/opt/wheels") in pairs
    assert env == {"SSL_CERT_FILE": "/etc/ssl/ca.crt"}
    with pytest.raises(Unsupported, match="pre"):
        uv_arguments(pip_settings("global.pre='true'\n"))
