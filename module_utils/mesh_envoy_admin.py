"""Read a running Envoy's state from its admin interface (read-only endpoints only).

Standard library only: shipped to proxy hosts as Ansible module_utils.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from ansible.module_utils.mesh_envoy_binary import parse_version

# Host health flags Envoy sets in /clusters?format=json; any of them makes a host unhealthy.
_FAILED_FLAGS = ("failed_active_health_check", "failed_outlier_check", "failed_active_degraded_check",
                 "pending_dynamic_removal", "excluded_via_immediate_hc_fail", "active_hc_timeout")
_HEALTHY_EDS = ("HEALTHY", "UNKNOWN", "DEGRADED")


class EnvoyAdmin:
    def __init__(self, address: str, port: int, timeout: float = 5):
        host = f"[{address}]" if ":" in address else address
        self.base = f"http://{host}:{port}"
        self.timeout = timeout

    def get(self, path: str) -> tuple[int, str]:
        """(status, body); raises OSError when nothing answers."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=self.timeout) as response:
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


def proxy_info(admin: EnvoyAdmin, wait_timeout: float = 0) -> dict:
    """ready, version, uptime, clusters, unhealthy, rejected_updates; only `ready` (false) when
    nothing answers on the admin port."""
    ready = admin.wait_ready(wait_timeout) if wait_timeout > 0 else admin.ready()
    info = {"ready": ready, "version": None, "uptime": None, "clusters": {}, "unhealthy": [], "rejected_updates": None}
    try:
        server = admin.server_info()
    except OSError:
        return info
    clusters = admin.clusters()
    info.update(
        version=parse_version(server.get("version", "")),
        uptime=_seconds(server.get("uptime_current_epoch", "")),
        clusters=clusters,
        unhealthy=sorted(name for name, counts in clusters.items() if counts["total"] and not counts["healthy"]),
        rejected_updates=admin.rejected_updates(),
    )
    return info
