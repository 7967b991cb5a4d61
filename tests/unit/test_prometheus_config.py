"""deploy/prometheus.yml: scrapes every stage's metrics port, and Prometheus's own checker accepts it.

promtool comes from Debian's `prometheus` package, unpacked (not installed) by deploy/tools/promtool.sh;
where it cannot be fetched the promtool test skips and the structural checks below still run.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from services.common import settings as stack_settings
from tests.unit import deploy_support as ds

PROMTOOL_SCRIPT = ds.ROOT / "deploy" / "tools" / "promtool.sh"


@pytest.fixture(scope="module")
def config() -> dict:
    return ds.load_yaml(ds.PROMETHEUS)


@pytest.fixture(scope="module")
def promtool() -> str:
    result = subprocess.run(["bash", str(PROMTOOL_SCRIPT)], capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        pytest.skip(f"promtool unavailable: {result.stderr.strip()[-300:]}")
    return result.stdout.strip()


def _targets(config: dict, job: str) -> dict[str, dict]:
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert job in jobs, f"no scrape job {job!r}"
    return {t: group.get("labels", {}) for group in jobs[job]["static_configs"] for t in group["targets"]}


def test_scrapes_exactly_every_stage_metrics_port(config):
    up = ds.up_settings()
    expected = {f"{s}:{up.stage(s).server.metrics_port}": {"compose_service": s} for s in stack_settings.STAGE_ORDER
                if up.stage(s).server.metrics_port}
    assert _targets(config, "voxpipe") == expected


def test_target_labels_do_not_clash_with_metric_labels(config):
    import importlib

    from prometheus_client.metrics import MetricWrapperBase

    metric_labels: set[str] = set()
    for name in ("engines.metrics", "services.common.interceptor", "orchestrator.metrics"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                metric_labels |= set(value._labelnames)
    assert "stage" in metric_labels
    for labels in _targets(config, "voxpipe").values():
        assert not set(labels) & metric_labels, labels


def test_scrape_targets_are_compose_services(config):
    services = ds.base_model()["services"]
    for target in _targets(config, "voxpipe"):
        host, port = target.split(":")
        assert host in services, target
        assert any(p.target == int(port) for p in ds.ports_of(services[host])), target


def test_structure_is_what_prometheus_expects(config):
    # The subset of the config schema we use (checked even where promtool cannot be fetched).
    assert set(config) <= {"global", "scrape_configs", "rule_files", "alerting"}
    duration = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
    for key in ("scrape_interval", "evaluation_interval"):
        assert duration.match(config["global"][key]), key
    names = [j["job_name"] for j in config["scrape_configs"]]
    assert len(names) == len(set(names)), "job names must be unique"
    for job in config["scrape_configs"]:
        assert set(job) <= {"job_name", "metrics_path", "scrape_interval", "static_configs"}, job
        assert job.get("metrics_path", "/metrics").startswith("/")
        for group in job["static_configs"]:
            assert set(group) <= {"targets", "labels"}
            for target in group["targets"]:
                assert re.fullmatch(r"[a-z0-9.-]+:\d{1,5}", target), target


def test_promtool_accepts_the_config(promtool):
    result = subprocess.run([promtool, "check", "config", str(ds.PROMETHEUS)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_config(promtool, tmp_path):
    broken = ds.load_yaml(ds.PROMETHEUS)
    broken["global"]["scrape_interval"] = "five seconds"
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode != 0
