"""The docker-compose stack's files agree with each other: no Docker here (nor any registry to pull
its images from), so what can be checked without running it is checked: every mounted file
exists, Prometheus's own `promtool` accepts the config it gets, Prometheus scrapes the address
Switchboard listens on and loads the alert rules from where they are mounted, Grafana's
datasource points at the Prometheus service and its dashboard provider at the mounted dashboards,
and the Dockerfile's command line parses with the binary that test.sh built."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("SWITCHBOARD_BIN_DIR", ROOT / "target" / "debug"))
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def bind_mounts(service):
    """{container path: host path} of the service's bind mounts (named volumes left out)."""
    mounts = {}
    for volume in SERVICES[service].get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("./"):
            mounts[container] = ROOT / host
    return mounts


def option(args, name):
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"--{name}="))


def listen_port():
    command = SERVICES["switchboard"]["command"]
    return int(command[command.index("--listen") + 1].rsplit(":", 1)[1])


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_mounted_file_exists(service):
    for container, host in bind_mounts(service).items():
        assert host.exists(), f"{service}: {host} (mounted at {container}) is missing"


def test_prometheus_scrapes_switchboard_and_loads_the_alerts(tmp_path):
    mounts = bind_mounts("prometheus")
    config_path = option(SERVICES["prometheus"]["command"], "config.file")
    config = yaml.safe_load(mounts[config_path].read_text())

    targets = [t for job in config["scrape_configs"] for s in job["static_configs"]
               for t in s["targets"]]
    assert targets == [f"switchboard:{listen_port()}"]
    for rules in config["rule_files"]:
        assert mounts[rules] == ROOT / "dashboards" / "alerts.yml"

    # promtool reads the rule files too: point them at this checkout, as the mounts do.
    config["rule_files"] = [str(mounts[r]) for r in config["rule_files"]]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: ./test.sh installs Debian's prometheus")
    checked = subprocess.run(["promtool", "check", "config", local],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_grafana_reads_the_prometheus_service_and_every_dashboard():
    mounts = bind_mounts("grafana")
    provisioning = mounts["/etc/grafana/provisioning"]

    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    urls = [d["url"] for d in datasources["datasources"]]
    assert urls == ["http://prometheus:9090"]
    published = SERVICES["prometheus"]["ports"]
    assert any(p.endswith(":9090") for p in published)

    providers = yaml.safe_load((provisioning / "dashboards" / "switchboard.yml").read_text())
    folder = providers["providers"][0]["options"]["path"]
    mounted = {Path(c).name: h for c, h in mounts.items() if Path(c).parent == Path(folder)}
    shipped = {p.name: p for p in (ROOT / "dashboards").glob("*.json")}
    assert mounted == shipped, "every shipped dashboard is mounted where Grafana looks"
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).name in mounted


def test_every_port_is_published_on_loopback_only():
    # The default policy's demo key is public: nothing may listen on the host's other interfaces.
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert any(p.endswith(f":{listen_port()}") for p in SERVICES["switchboard"]["ports"])


def test_the_images_command_line_parses():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(\S+) ", dockerfile, re.MULTILINE):
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is missing"
    # The same arguments as the image's CMD and the compose command, with a policy that cannot
    # be read: an argument clap refuses exits with 2 before the policy is opened.
    command = SERVICES["switchboard"]["command"]
    cmd = re.search(r"^CMD (.*)$", dockerfile, re.MULTILINE).group(1)
    assert yaml.safe_load(cmd) == command, "the compose command is the image's default"
    done = subprocess.run([BIN / "switchboard", *command, "--config", "/nonexistent.yaml"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "/nonexistent.yaml" in done.stderr, done.stderr


FLEET = ROOT / "deploy" / "fleet"
FLEET_COMPOSE = yaml.safe_load((FLEET / "docker-compose.yml").read_text())


def test_the_fleet_example_agrees_with_itself_and_its_policy_is_valid():
    """deploy/fleet/ (never started here): its mounts exist, nginx and Prometheus name every
    replica, the replicas get the URLs the policy's `fleet:` reads, and the policy passes
    `switchboard policy check`."""
    services = FLEET_COMPOSE["services"]
    replicas = sorted(name for name in services if name.startswith("switchboard-"))
    assert len(replicas) == yaml.safe_load((FLEET / "policy.yaml").read_text())["fleet"]["replicas"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("."):
                assert (FLEET / host).resolve().exists(), f"{name} mounts {host}, which is missing"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    nginx = (FLEET / "nginx.conf").read_text()
    scraped = yaml.safe_load((FLEET / "prometheus.yml").read_text())["scrape_configs"][0]
    targets = scraped["static_configs"][0]["targets"]
    for name in replicas:
        assert f"server {name}:8080;" in nginx
        assert f"{name}:8080" in targets
        env = services[name]["environment"]
        assert env["SWITCHBOARD_REDIS_URL"].startswith("redis://redis:")
        assert "@postgres/" in env["SWITCHBOARD_POSTGRES_URL"]
    checked = subprocess.run([BIN / "switchboard", "policy", "check", FLEET / "policy.yaml"],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
