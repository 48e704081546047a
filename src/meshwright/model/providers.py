"""The MeshConfig's telemetry providers, typed: Istio's `extensionProviders` and
`defaultProviders`, with Istio's two built-in providers:

- `prometheus`: metrics (each proxy's stats port, /stats/prometheus, with Istio's labels);
- `envoy`: an access log to the MeshConfig's `accessLogFile` (/dev/stdout when it is empty)
  in its `accessLogEncoding`.

A provider defined in extensionProviders under a built-in name replaces the built-in one.
Without `defaultProviders`, Istio's defaults apply: metrics by `prometheus`, access logs by
`envoy` when `accessLogFile` is set, no tracing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ZIPKIN, OPENTELEMETRY, FILE_ACCESS_LOG, PROMETHEUS = "zipkin", "opentelemetry", "envoyFileAccessLog", "prometheus"
# External authorizers (AuthorizationPolicy CUSTOM), no telemetry signal's.
EXT_AUTHZ_HTTP, EXT_AUTHZ_GRPC = "envoyExtAuthzHttp", "envoyExtAuthzGrpc"
PROVIDER_TYPES = (ZIPKIN, OPENTELEMETRY, FILE_ACCESS_LOG, PROMETHEUS, EXT_AUTHZ_HTTP, EXT_AUTHZ_GRPC)

# The Telemetry API's three signals (also defaultProviders' keys), and the provider types
# that serve each.
ACCESS_LOGGING, TRACING, METRICS = "accessLogging", "tracing", "metrics"
SIGNAL_TYPES = {ACCESS_LOGGING: (FILE_ACCESS_LOG,), TRACING: (ZIPKIN, OPENTELEMETRY), METRICS: (PROMETHEUS,)}

ZIPKIN_PATH = "/api/v2/spans"

# Where Envoy may write access logs. Envoy opens the path as its own user (root where no
# proxy user is set), so a mesh config must not name any other file (/etc/cron.d/...):
# the standard streams, or a file under the proxy's log folder on real hosts (the role's
# <prefix>/var/log/meshwright with prefix "/"). No segment may start with "." (no "..").
ACCESS_LOG_STREAMS = ("/dev/stdout", "/dev/stderr")
ACCESS_LOG_DIR = "/var/log/meshwright"
_ACCESS_LOG_FILE = re.compile(re.escape(ACCESS_LOG_DIR) + r"(/[A-Za-z0-9_][A-Za-z0-9._-]*)+")
ACCESS_LOG_PATH_HELP = f"/dev/stdout, /dev/stderr or a file under {ACCESS_LOG_DIR}/ (letters, digits, '.', '_', '-'; no '..')"


def is_access_log_path(path: object) -> bool:
    return isinstance(path, str) and (path in ACCESS_LOG_STREAMS or _ACCESS_LOG_FILE.fullmatch(path) is not None)


BUILTIN_PROMETHEUS, BUILTIN_ENVOY = "prometheus", "envoy"


@dataclass(frozen=True)
class Provider:
    name: str
    type: str  # one of PROVIDER_TYPES
    service: str = ""  # zipkin, opentelemetry: the collector, "[namespace/]host" or an IP
    port: int = 0
    path: str = ""  # zipkin: the collector's path; envoyFileAccessLog: the file
    encoding: str = "TEXT"  # envoyFileAccessLog: TEXT (a format string) or JSON (one object a line)
    text: str = ""  # the TEXT format ("": Istio's default)
    labels: tuple[tuple[str, str], ...] = ()  # the JSON fields (empty: Istio's default fields)

    @property
    def host(self) -> str:
        """The collector's host, without the optional "namespace/" of `service`."""
        return self.service.split("/", 1)[-1]


@dataclass(frozen=True)
class TelemetryProviders:
    providers: tuple[Provider, ...]
    defaults: tuple[tuple[str, tuple[str, ...]], ...]  # (signal, provider names)

    def get(self, name: str) -> Provider | None:
        return next((p for p in self.providers if p.name == name), None)

    def default(self, signal: str) -> tuple[str, ...]:
        return dict(self.defaults)[signal]


def provider_from_spec(spec: dict) -> Provider:
    name = spec["name"]
    if ZIPKIN in spec:
        return Provider(name, ZIPKIN, service=spec[ZIPKIN]["service"], port=spec[ZIPKIN]["port"], path=spec[ZIPKIN].get("path", ZIPKIN_PATH))
    if OPENTELEMETRY in spec:
        return Provider(name, OPENTELEMETRY, service=spec[OPENTELEMETRY]["service"], port=spec[OPENTELEMETRY]["port"])
    if FILE_ACCESS_LOG in spec:
        log = spec[FILE_ACCESS_LOG]
        log_format = log.get("logFormat") or {}
        if "labels" in log_format:
            return Provider(name, FILE_ACCESS_LOG, path=log["path"], encoding="JSON", labels=tuple(log_format["labels"].items()))
        return Provider(name, FILE_ACCESS_LOG, path=log["path"], encoding="TEXT", text=log_format.get("text", ""))
    for kind in (EXT_AUTHZ_HTTP, EXT_AUTHZ_GRPC):
        if kind in spec:
            return Provider(name, kind, service=spec[kind]["service"], port=int(spec[kind]["port"]))
    return Provider(name, PROMETHEUS)


def providers_from_spec(spec: dict) -> TelemetryProviders:
    """The providers and default providers a MeshConfig spec defines, built-ins included."""
    access_log_file = spec.get("accessLogFile", "")
    builtins = (
        Provider(BUILTIN_PROMETHEUS, PROMETHEUS),
        Provider(BUILTIN_ENVOY, FILE_ACCESS_LOG, path=access_log_file or "/dev/stdout", encoding=spec.get("accessLogEncoding", "JSON")),
    )
    defined = tuple(provider_from_spec(p) for p in spec.get("extensionProviders") or [])
    names = {p.name for p in defined}
    providers = defined + tuple(p for p in builtins if p.name not in names)
    given = spec.get("defaultProviders") or {}
    defaults = (
        (ACCESS_LOGGING, tuple(given.get(ACCESS_LOGGING, [BUILTIN_ENVOY] if access_log_file else []))),
        (METRICS, tuple(given.get(METRICS, [BUILTIN_PROMETHEUS]))),
        (TRACING, tuple(given.get(TRACING, []))),
    )
    return TelemetryProviders(providers, defaults)
