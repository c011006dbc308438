"""Live monitoring of a sweep (``raykd monitor``): a real Prometheus scraping every Ray node, and raykd's Grafana
dashboard beside Ray's own.

Ray exports its series and raykd's (:mod:`raykd.telemetry`) on each node's metrics port, and its dashboard lists
those ports in a Prometheus file-discovery file, ``<temp dir>/prom_metrics_service_discovery.json``, a link that
always points into the newest session. Nothing scrapes them until a Prometheus runs: the dashboard's Metrics page
queries the one at ``RAY_PROMETHEUS_HOST`` (``http://localhost:9090`` by default) and embeds the Grafana at
``RAY_GRAFANA_HOST`` (``http://localhost:3000``), both read when Ray starts. ``ray metrics launch-prometheus``
downloads a Prometheus of its own; :func:`monitor` runs the one on ``PATH`` (Debian's ``apt-get install
prometheus``) with a config written here, and copies raykd's dashboard into the session's Grafana folder, from which
a Grafana started with Ray's config provisions Ray's dashboards.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from raykd.console import UserError

__all__ = ["monitor", "prometheus_config", "install_dashboard", "DASHBOARD", "DASHBOARD_UID", "DISCOVERY_FILE"]

DASHBOARD = Path(__file__).with_name("grafana_raykd.json")
DASHBOARD_UID = "raykd"  # the dashboard's uid in that file: Grafana serves it at <grafana>/d/raykd
DISCOVERY_FILE = "prom_metrics_service_discovery.json"
DEFAULT_GRAFANA_HOST = "http://localhost:3000"  # Ray's default for RAY_GRAFANA_HOST
CHECK_S = 2.0  # how often a new session's Grafana folder is looked for


def prometheus_config(discovery_file: Path, scrape_interval: str) -> str:
    """``prometheus.yml`` (as JSON, which is YAML) scraping every target of Ray's discovery file. The file is also
    re-read every ``scrape_interval``, not only when Prometheus sees it change: it is a link into the session
    directory, and a change there is invisible to Prometheus's watch on the link's own folder, so without the
    refresh a node that joins (or a new session) would wait for the default five minutes."""
    config = {"global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
              "scrape_configs": [{"job_name": "ray", "file_sd_configs": [
                  {"files": [str(discovery_file)], "refresh_interval": scrape_interval}]}]}
    return json.dumps(config, indent=2) + "\n"


def install_dashboard(temp_dir: Path) -> Path | None:
    """Copy raykd's dashboard beside Ray's in the newest session's Grafana dashboards folder (which Ray's dashboard
    writes afresh in every session); returns the copy, or ``None`` while no session has written that folder."""
    folder = temp_dir / "session_latest" / "metrics" / "grafana" / "dashboards"
    if not folder.is_dir():
        return None
    target = folder.resolve() / DASHBOARD.name
    if not target.exists():
        shutil.copyfile(DASHBOARD, target)
    return target


def monitor(temp_dir: Path, data_dir: Path, port: int, scrape_interval: str) -> int:
    """Run Prometheus on ``127.0.0.1:port`` (its config, data and log under ``data_dir``) until Ctrl-C, putting raykd's
    dashboard into each new Ray session under ``temp_dir`` as it appears, and saying where to look."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise UserError("monitor: no prometheus on PATH; install it (apt-get install -y prometheus, or a release "
                        "from https://prometheus.io/download) or let Ray download one: ray metrics launch-prometheus")
    data_dir.mkdir(parents=True, exist_ok=True)
    config, log = data_dir / "prometheus.yml", data_dir / "prometheus.log"
    config.write_text(prometheus_config(temp_dir / DISCOVERY_FILE, scrape_interval))
    with log.open("ab") as log_file:
        process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir / 'data'}",
                                    f"--web.listen-address=127.0.0.1:{port}"], stdout=log_file, stderr=log_file)
    url = f"http://127.0.0.1:{port}"
    print(f"prometheus: {url} scrapes the Ray nodes listed in {temp_dir / DISCOVERY_FILE} every {scrape_interval} "
          f"(config {config}, log {log})", flush=True)
    if os.environ.get("RAY_PROMETHEUS_HOST", "http://localhost:9090") not in (url, f"http://localhost:{port}"):
        print(f"ray dashboard: its Metrics page queries $RAY_PROMETHEUS_HOST (http://localhost:9090 unless set): "
              f"start Ray with RAY_PROMETHEUS_HOST={url} to have it use this one", flush=True)
    grafana = os.environ.get("RAY_GRAFANA_HOST", DEFAULT_GRAFANA_HOST)
    installed = None
    try:
        while process.poll() is None:
            dashboard = install_dashboard(temp_dir)
            if dashboard is not None and dashboard != installed:
                installed = dashboard
                print(f"grafana: raykd's dashboard is in {dashboard.parent}, beside Ray's; start Grafana with Ray's "
                      f"config (grafana-server --homepath /usr/share/grafana --config "
                      f"{temp_dir / 'session_latest' / 'metrics' / 'grafana' / 'grafana.ini'} web) and open "
                      f"{grafana}/d/{DASHBOARD_UID}", flush=True)
            time.sleep(CHECK_S)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how the monitor ends; Prometheus ends with it (below)
    finally:
        process.terminate()
        process.wait()
    lines = log.read_text(errors="replace").strip().splitlines()
    raise UserError(f"monitor: prometheus exited with status {process.returncode}: "
                    f"{lines[-1] if lines else 'no log'} (whole log: {log})")
