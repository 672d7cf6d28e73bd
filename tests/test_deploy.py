"""The deployment files stay consistent with the code: compose runs commands and options the
CLI has and sets the settings QuantLab reads; binder installs what the quickstart needs."""

from __future__ import annotations

import re
from pathlib import Path

import click
import yaml

from quantlab.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())


def test_compose_runs_lab_workers_redis_and_mongo_with_team_settings() -> None:
    services = compose()["services"]
    assert {"redis", "mongo", "lab", "worker", "prometheus"} <= set(services)
    for name in ("lab", "worker"):
        env = services[name]["environment"]
        assert env["QUANTLAB_REDIS_URL"].startswith("redis://redis:")
        assert env["QUANTLAB_MONGO_URL"].startswith("mongodb://mongo:")
    worker_cmd = services["worker"]["command"]
    assert worker_cmd[:2] == ["quantlab", "worker"]


def test_the_worker_command_of_compose_and_the_image_is_a_valid_cli_call() -> None:
    for cmd in (compose()["services"]["worker"]["command"],
                yaml.safe_load(re.search(r"^CMD (.*)$", (ROOT / "deploy" / "Dockerfile")
                                         .read_text(), re.M).group(1))):
        assert cmd[:2] == ["quantlab", "worker"]
        command = cli.get_command(click.Context(cli), "worker")
        assert command is not None
        ctx = command.make_context("worker", list(cmd[2:]))  # parses and checks every option
        assert ctx.params["workers"] == 2 and ctx.params["metrics_port"] == 9100
        # the Prometheus container scrapes over the compose network (the default is loopback)
        assert ctx.params["metrics_address"] == "0.0.0.0"


def test_prometheus_scrapes_the_worker_metrics_port_and_loads_the_alerts() -> None:
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    worker_cmd = compose()["services"]["worker"]["command"]
    port = int(worker_cmd[worker_cmd.index("--metrics-port") + 1])
    assert prom["scrape_configs"][0]["dns_sd_configs"][0]["port"] == port
    assert prom["rule_files"] == ["/etc/prometheus/alerts.yml"]
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert "./alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def test_binder_installs_quantlab_builds_the_extension_and_the_sample_data() -> None:
    post = (ROOT / "binder" / "postBuild").read_text()
    assert 'pip install --no-cache-dir -e ".[mongo]"' in post
    assert "scripts/build-extension.sh" in post
    assert "quantlab data sample" in post
    env = yaml.safe_load((ROOT / "binder" / "environment.yml").read_text())
    assert any(str(d).startswith("nodejs") for d in env["dependencies"])
    assert (ROOT / "notebooks" / "quickstart.ipynb").exists()


def test_workers_run_as_an_unprivileged_account() -> None:
    """Whoever submits runs code on the workers (docs/operations.md, "Trust model"): the image's
    last stage and the compose workers run as the unprivileged user the image creates."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    runtime = dockerfile.split("\nFROM ")[-1]  # the last stage is what runs
    created = re.search(r"useradd [^\n]*--uid (\d+) (\w+)", runtime)
    assert created is not None, "the runtime stage creates no user"
    uid, name = int(created.group(1)), created.group(2)
    users = re.findall(r"^USER (\S+)$", runtime, re.M)
    assert users and users[-1] in (name, str(uid)) and uid != 0
    assert runtime.index("useradd") < runtime.rindex("\nUSER ") < runtime.index("\nCMD ")
    worker = compose()["services"]["worker"]
    assert str(worker["user"]).split(":")[0] == str(uid)
    assert worker["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in worker["security_opt"]
