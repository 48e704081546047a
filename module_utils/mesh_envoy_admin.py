"""Read a running Envoy's state from its admin interface (read-only endpoints only).

Standard library only: shipped to proxy hosts as Ansible module_utils.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse

from ansible.module_utils.mesh_envoy_binary import parse_version
from ansible.module_utils.urls import open_url

# Host health flags Envoy sets in /clusters?format=json; any of them makes a host unhealthy.
_FAILED_FLAGS = ("failed_active_health_check", "failed_outlier_check", "failed_active_degraded_check",
                 "pending_dynamic_removal", "excluded_via_immediate_hc_fail", "active_hc_timeout")
_HEALTHY_EDS = ("HEALTHY", "UNKNOWN", "DEGRADED")
# HTTP connection managers that serve no mesh traffic: the admin interface and the bootstrap's
# health (15021) and stats (15090) listeners, which probes and scrapers call.
_PROBE_MANAGERS = ("admin", "health", "stats")


class EnvoyAdmin:
    def __init__(self, address: str, port: int, timeout: float = 5):
        host = f"[{address}]" if ":" in address else address
        self.base = f"http://{host}:{port}"
        self.timeout = timeout

    def get(self, path: str) -> tuple[int, str]:
        """(status, body); raises OSError when nothing answers."""
        try:
            # Ansible's HTTP client, never through a proxy: the admin interface is on loopback.
            with open_url(self.base + path, timeout=self.timeout, use_proxy=False) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def ready(self) -> bool:
        """True when /ready says LIVE (the server finished initializing and is not draining)."""
        try:
            status, body = self.get("/ready")
        except OSError:
            return False
        return status == 200 and body.strip() == "LIVE"

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self.ready():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def server_info(self) -> dict:
        return json.loads(self.get("/server_info")[1])

    def clusters(self) -> dict:
        """{cluster name: {healthy, total}} over the cluster's hosts."""
        out = {}
        for cluster in json.loads(self.get("/clusters?format=json")[1]).get("cluster_statuses", []):
            hosts = cluster.get("host_statuses", [])
            healthy = sum(1 for host in hosts if is_healthy(host.get("health_status", {})))
            out[cluster["name"]] = {"healthy": healthy, "total": len(hosts)}
        return out

    def request_counts(self) -> tuple[int, int]:
        """(requests completed, of which 5xx) over the proxy's HTTP connection managers, as its
        downstream_rq_completed and downstream_rq_5xx stats count them (probe listeners left out)."""
        query = urllib.parse.urlencode({"format": "json", "filter": r"^http\..*\.downstream_rq_(completed|5xx)$"})
        stats = json.loads(self.get("/stats?" + query)[1]).get("stats", [])
        completed = failed = 0
        for stat in stats:
            name, value = stat.get("name", ""), stat.get("value")
            if not name.startswith("http.") or value is None or name.split(".")[1] in _PROBE_MANAGERS:
                continue
            if name.endswith(".downstream_rq_completed"):
                completed += int(value)
            elif name.endswith(".downstream_rq_5xx"):
                failed += int(value)
        return completed, failed

    def rejected_updates(self) -> int:
        """Config updates Envoy rejected (listeners, clusters, routes, endpoints), summed."""
        stats = json.loads(self.get("/stats?format=json&filter=update_rejected$")[1]).get("stats", [])
        return sum(int(stat["value"]) for stat in stats if stat.get("name", "").endswith(".update_rejected") and "value" in stat)


def is_healthy(health: dict) -> bool:
    return health.get("eds_health_status", "UNKNOWN") in _HEALTHY_EDS and not any(health.get(flag) for flag in _FAILED_FLAGS)


def _seconds(duration) -> int | None:
    """A protobuf Duration in JSON ("12s", "0.5s") -> whole seconds."""
    try:
        return int(float(str(duration).rstrip("s")))
    except ValueError:
        return None


def _epoch(server: dict) -> int | None:
    try:
        return int(server.get("command_line_options", {}).get("restart_epoch", 0))
    except (TypeError, ValueError):
        return None


def wait_for_server(admin: EnvoyAdmin, timeout: float, version: str | None = None, restart_epoch: int | None = None) -> bool:
    """Until the Envoy answering is LIVE and, when asked, runs `version` and has at least
    `restart_epoch` (after a hot restart the new process takes the admin port over from the old
    one, so this is how a caller knows the new one serves). False after the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            server = admin.server_info()
            if (server.get("state") == "LIVE" and (version is None or parse_version(server.get("version", "")) == version)
                    and (restart_epoch is None or (_epoch(server) or 0) >= restart_epoch)):
                return True
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def request_window(admin: EnvoyAdmin, seconds: float) -> dict:
    """Requests the proxy completed over the next `seconds`, and how many of them were 5xx:
    {seconds, total, failed, success_rate} (success_rate null when there were none)."""
    completed, failed = admin.request_counts()
    time.sleep(seconds)
    completed_after, failed_after = admin.request_counts()
    # A hot restart in the window restarts the counters; Envoy hands the old process's over,
    # but never count below zero.
    total, bad = max(0, completed_after - completed), max(0, failed_after - failed)
    return {"seconds": seconds, "total": total, "failed": bad, "success_rate": round(1 - bad / total, 6) if total else None}


def proxy_info(admin: EnvoyAdmin, wait_timeout: float = 0, version: str | None = None, restart_epoch: int | None = None,
               window: float = 0) -> dict:
    """ready, version, restart_epoch, state, uptime, clusters, unhealthy, rejected_updates and,
    with a window, requests; only `ready` (false) when nothing answers on the admin port."""
    if wait_timeout > 0 and (version or restart_epoch is not None):
        wait_for_server(admin, wait_timeout, version, restart_epoch)
    ready = admin.wait_ready(wait_timeout) if wait_timeout > 0 else admin.ready()
    info = {"ready": ready, "version": None, "restart_epoch": None, "hot_restart_version": None, "state": None, "uptime": None, "clusters": {},
            "unhealthy": [], "rejected_updates": None, "requests": None}
    try:
        server = admin.server_info()
    except OSError:
        return info
    clusters = admin.clusters()
    info.update(
        version=parse_version(server.get("version", "")),
        restart_epoch=_epoch(server),
        hot_restart_version=server.get("hot_restart_version"),
        state=server.get("state"),
        uptime=_seconds(server.get("uptime_current_epoch", "")),
        clusters=clusters,
        unhealthy=sorted(name for name, counts in clusters.items() if counts["total"] and not counts["healthy"]),
        rejected_updates=admin.rejected_updates(),
    )
    if window > 0:
        info["requests"] = request_window(admin, window)
    return info
