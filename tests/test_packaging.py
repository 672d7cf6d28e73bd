"""The package's metadata stays coherent: environment.yml mirrors pyproject.toml, the console
script and py.typed ship, optional extras give an install hint."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import quantlab
from quantlab.errors import MissingDependency, require

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"duckdb": "python-duckdb", "redis": "redis-py", "jupyter-server": "jupyter_server",
               "prometheus-client": "prometheus_client"}


def _requirement(spec: str) -> tuple[str, str]:
    match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", spec.strip())
    assert match, spec
    return match.group(1).lower(), match.group(2).replace(" ", "")


def test_environment_yml_mirrors_pyproject_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = dict(_requirement(d) for d in env["dependencies"] if isinstance(d, str))
    wanted = [*project["dependencies"], *project["optional-dependencies"]["mongo"]]
    for spec in wanted:
        name, bounds = _requirement(spec)
        conda_name = CONDA_NAMES.get(name, name)
        assert conda_name in conda, f"{name} is in pyproject.toml but not in environment.yml"
        assert conda[conda_name] == bounds, f"{name}: pyproject {bounds} != environment.yml {conda[conda_name]}"
    assert any(isinstance(d, dict) and "-e ." in d.get("pip", []) for d in env["dependencies"])


def test_typed_package_and_console_script() -> None:
    assert (ROOT / "quantlab" / "py.typed").exists()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["quantlab"] == "quantlab.cli:main"


def test_public_api_names_resolve() -> None:
    missing = [name for name in quantlab.__all__ if not hasattr(quantlab, name)]
    assert missing == []


def test_import_is_light() -> None:
    # `import quantlab` must not pull in Numba, pandas or Huey: the magics and the CLI load fast.
    code = "import sys, quantlab; print(sorted(m for m in ('numba', 'pandas', 'huey') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_extra_names_the_install_command() -> None:
    with pytest.raises(MissingDependency) as info:
        require("quantlab_no_such_module", "mongo", "the MongoDB registry")
    assert "pip install 'quantlab[mongo]'" in str(info.value)
    assert info.value.extra == "mongo"


def test_every_lazy_name_is_public() -> None:
    assert set(quantlab._LAZY) | quantlab._SUBMODULES <= set(quantlab.__all__)
