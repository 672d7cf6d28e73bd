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
CONDA_NAMES = {"duckdb": "python-duckdb", "redis": "redis-py", "arch": "arch-py", "jupyter-server": "jupyter_server",
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


@pytest.mark.parametrize(("value", "kwargs", "message"), [
    ("soon", {}, "QUANTLAB_X='soon' is not a number; set e.g. QUANTLAB_X=2 or unset it"),
    ("2.5", {"integer": True}, "QUANTLAB_X='2.5' is not a whole number"),
    ("0", {"positive": True}, "QUANTLAB_X='0' must be positive"),
    ("-1", {"minimum": 0}, "QUANTLAB_X='-1' must be at least 0"),
])
def test_numeric_settings_name_the_variable_and_a_good_value(
        monkeypatch: pytest.MonkeyPatch, value: str, kwargs: dict, message: str) -> None:
    from quantlab.errors import ConfigError
    from quantlab.settings import env_number

    monkeypatch.setenv("QUANTLAB_X", value)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as info:
        env_number("QUANTLAB_X", 2, **kwargs)
    assert info.value.field == "QUANTLAB_X"
    monkeypatch.setenv("QUANTLAB_X", " ")
    assert env_number("QUANTLAB_X", 2, **kwargs) == 2


def test_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from quantlab.errors import ConfigError
    from quantlab.settings import current, env_flag

    monkeypatch.setenv("QUANTLAB_QUEUE_MAX", "100")
    monkeypatch.setenv("QUANTLAB_MAX_DURATION", "90.5")
    assert (current().queue_max, current().max_duration) == (100, 90.5)
    monkeypatch.setenv("QUANTLAB_MAX_CONCURRENT", "-3")
    with pytest.raises(ConfigError, match="QUANTLAB_MAX_CONCURRENT='-3' must be at least 0"):
        current()
    monkeypatch.setenv("QUANTLAB_FLAG", "maybe")
    with pytest.raises(ConfigError, match="is not a yes/no value; set QUANTLAB_FLAG=1"):
        env_flag("QUANTLAB_FLAG", False)
