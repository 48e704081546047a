"""meshwright command line: validate mesh config, render a proxy's Envoy config."""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import gc
import hashlib
import ipaddress
import json
import logging
import os
import signal
import ssl
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request

import yaml
from cryptography import x509

from meshwright import names
from meshwright.agent import Agent, AgentError
from meshwright.check.cel_expressions import check_cel_expressions
from meshwright.check.envoy_binary import DEFAULT_TIMEOUT, EnvoyBinaryError, check_envoy_binary, envoy_validate, find_envoy
from meshwright.check.envoy_sample import ShapeCache
from meshwright.check.pipeline import validate_mesh, validate_mesh_with
from meshwright.collector import cyclic_collector_paused
from meshwright.compile.build import shared_config
from meshwright.compile.prometheus import TARGETS_FILE, prometheus_files, scrape_targets, workload_platforms
from meshwright.compile.proxy import UnknownProxy, find_proxy, list_proxies
from meshwright.compile.xds_bootstrap import XdsServer
from meshwright.deliver.bundle import RenderError, bundle_proxy
from meshwright.deliver.file_set import write_atomic, write_files
from meshwright.deliver.identity import proxy_spiffe_id
from meshwright.deliver.marathon_inject import InjectError, SidecarSettings, inject
from meshwright.marathon_sidecar import SidecarError, SidecarOptions, run as run_sidecar
from meshwright.deliver.kube_inject import InjectionSettings, NotInjectable, injected_object
from meshwright.deliver.validation_bootstrap import sampled_validation_bootstrap
from meshwright.forked import available_workers
from meshwright.mesh import config_dir_problem
from meshwright.model.load import load_paths
from meshwright.pki.ca import certificate_pem, load_authority
from meshwright.pki.csr import key_matches_certificate
from meshwright import names
from meshwright.problems import Problems
from meshwright.serve import admission
from meshwright.serve import server as xds_server
from meshwright.serve import graph_page
from meshwright.serve.graph import FORMATS as GRAPH_FORMATS, GraphError, build_graph
from meshwright.serve.join_tokens import issue_token
from meshwright.serve.marathon import MarathonRegistry, auth_from_files
from meshwright.serve.bootstrap import xds_bootstrap_text
from meshwright.serve.proxy_config_view import config_diff, config_dump, envoy_resources, summary_table
from meshwright.serve.source import load_valid
from meshwright.serve.status import Unreachable, fetch, merged_status, status_table
from meshwright.serve.webhook_certificate import IssuedWebhookCertificate, server_context
from meshwright.validate.crds import custom_resource_definitions

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
EXIT_INTERNAL = 3


class UsageError(Exception):
    """An argument that cannot be used (exit 2)."""


INJECTION_CSR_HELP = ("the CSR service's address (--csr-listen) as injected pods reach it; "
                      "their first certificate comes from the next port (--join-listen's default)")


def _print_problems(problems) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found; nothing was written.", file=sys.stderr)


def _print_warnings(mesh) -> None:
    """Warnings do not fail validation, but are always shown."""
    for warning in mesh.warnings:
        print(warning, file=sys.stderr)


def _envoy_for(args) -> str | None:
    if args.envoy == "none":
        return None
    if args.envoy:
        problem = check_envoy_binary(args.envoy)
        if problem:
            raise UsageError(f"--envoy: {problem} (give an Envoy binary, or 'none' to skip envoy --mode validate)")
        return args.envoy
    return find_envoy()


def _check_with_envoy(envoy: str, validation_bootstrap: str, timeout: float) -> str | None:
    with tempfile.TemporaryDirectory(prefix="meshwright-validate-") as scratch:
        bootstrap_path = os.path.join(scratch, "validate.yaml")
        with open(bootstrap_path, "w", encoding="utf-8") as handle:
            handle.write(validation_bootstrap)
        try:
            return envoy_validate(envoy, bootstrap_path, timeout)
        except EnvoyBinaryError as error:
            raise UsageError(f"--envoy: {error}") from None


class _EnvoySamples:
    """check_envoy's per-class step (check/pipeline.py validate_mesh_with): each class's
    config as Envoy is shown it (check/envoy_sample.py: one cluster and virtual host of each
    shape), computed where validation compiles the class."""

    def __init__(self):
        self.shapes = ShapeCache()
        self.config_dir = os.path.join(tempfile.gettempdir(), "meshwright-validate")  # a name only: nothing is written there

    def __call__(self, mesh, config, proxies) -> tuple[list[str], str, str]:
        text = sampled_validation_bootstrap(mesh, config, self.config_dir, self.shapes)
        return [proxy.id for proxy in proxies], hashlib.sha256(text.encode()).hexdigest(), text


def _envoy_rejection(samples: list[tuple[list[str], str, str]], envoy: str, timeout: float) -> tuple[list[str], str] | None:
    """The first config Envoy rejects, with every proxy that shares it; None when it accepts
    them all. Envoy runs once per distinct sample, as many at once as there are cores; the
    same bytes get the same verdict."""
    texts = {digest: text for dummy, digest, text in samples}
    with concurrent.futures.ThreadPoolExecutor(available_workers()) as pool:
        verdicts = dict(zip(texts, pool.map(lambda text: _check_with_envoy(envoy, text, timeout), texts.values())))
    rejected = next((digest for dummy, digest, dummy_text in samples if verdicts[digest]), None)
    if rejected is None:
        return None
    return [proxy for proxies, digest, dummy in samples if digest == rejected for proxy in proxies], verdicts[rejected]


def cmd_validate(args) -> int:
    envoy = _envoy_for(args)
    mesh, problems, samples = validate_mesh_with(load_paths(args.paths), _EnvoySamples() if envoy else None)
    if problems:
        _print_problems(problems)
        return EXIT_INVALID
    _print_warnings(mesh)
    if envoy:
        cel = Problems()
        check_cel_expressions(mesh, envoy, args.envoy_timeout, cel)
        if cel.items:
            _print_problems(cel.items)
            return EXIT_INVALID
        rejection = _envoy_rejection(samples, envoy, args.envoy_timeout)
        if rejection:
            proxy_ids, error = rejection  # pylint: disable=unpacking-non-sequence  # not None here
            who = f"proxy {proxy_ids[0]}: envoy --mode validate rejects its config" if len(proxy_ids) == 1 else (
                f"proxies {', '.join(proxy_ids)}: envoy --mode validate rejects the config they share")
            print(f"{who}:\n{error}", file=sys.stderr)
            return EXIT_INVALID
    count = len(mesh.resources)
    print(f"{count} resource{'s' if count != 1 else ''} valid" + ("" if envoy else " (no Envoy binary found: skipped envoy --mode validate)"))
    return EXIT_OK


def _out_dir(args) -> str:
    """--out as an absolute path; UsageError when it names something that is not a folder."""
    out_dir = os.path.abspath(args.out)
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"--out {args.out}: not a directory")
    if args.config_dir is not None:
        problem = config_dir_problem(args.config_dir)
        if problem:
            raise UsageError(f"--config-dir: {problem}")
    return out_dir


def cmd_render(args) -> int:
    out_dir = _out_dir(args)
    envoy = _envoy_for(args)
    mesh, problems = validate_mesh(load_paths(args.mesh), keep=args.proxy)
    if problems:
        _print_problems(problems)
        return EXIT_INVALID
    _print_warnings(mesh)
    try:
        proxy = find_proxy(mesh, args.proxy)
    except UnknownProxy as error:
        raise UsageError(str(error)) from None
    try:
        bundle = bundle_proxy(mesh, proxy.id, args.config_dir or out_dir, args.format)
    except RenderError as error:
        print(f"error: {error}; nothing was written.", file=sys.stderr)
        return EXIT_INVALID
    if envoy:
        text = sampled_validation_bootstrap(mesh, shared_config(mesh, proxy), args.config_dir or out_dir, ShapeCache())
        error = _check_with_envoy(envoy, text, args.envoy_timeout)
        if error:
            print(f"proxy {proxy.id}: envoy --mode validate rejects its config; nothing was written:\n{error}", file=sys.stderr)
            return EXIT_INVALID
    try:
        changed = write_files(out_dir, bundle.files)
    except OSError as error:
        raise UsageError(f"--out {args.out}: cannot write there: {error.strerror or error}") from None
    print(f"{proxy.id}: {len(bundle.files)} files in {out_dir}, {len(changed)} changed")
    return EXIT_OK


def cmd_prometheus(args) -> int:
    """Prometheus' configuration and scrape targets for the mesh (docs/telemetry.md)."""
    mesh, problems = validate_mesh(load_paths(args.mesh))
    if problems:
        _print_problems(problems)
        return EXIT_INVALID
    addresses = dict(args.address or ())
    # A host the inventory still lists after its proxy left the mesh: said, not fatal.
    for proxy_id in sorted(set(addresses) - {proxy.id for proxy in list_proxies(mesh)}):
        print(f"--address {proxy_id}: no proxy of that name in the mesh; ignored", file=sys.stderr)
    files = prometheus_files(mesh, args.scrape_interval, args.envoy_stats, tuple(f"{h}:{p}" for h, p in args.scrape or ()), addresses)
    if args.targets_only:
        files = {TARGETS_FILE: files[TARGETS_FILE]}
    out_dir = os.path.abspath(args.out)
    changed = []
    try:
        for name, text in files.items():
            path = os.path.join(out_dir, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if _text_of(path) != text:
                write_atomic(path, text)
                changed.append(name)
    except OSError as error:
        raise UsageError(f"--out {args.out}: cannot write there: {error.strerror or error}") from None
    groups, unaddressed = scrape_targets(mesh, addresses)
    for proxy_id in unaddressed:
        print(f"{proxy_id}: not scraped, its address is not in the mesh (give --address {proxy_id}=HOST)", file=sys.stderr)
    print(f"{len(groups)} proxies to scrape; {len(changed)} of {len(files)} files changed in {out_dir}")
    return EXIT_OK


def cmd_graph(args) -> int:
    """The service graph from Prometheus (serve/graph.py); an unreachable Prometheus is an
    error, never an empty graph."""
    try:
        graph = build_graph(args.prometheus, args.window, args.timeout)
    except GraphError as error:
        print(f"error: {error}; nothing was written.", file=sys.stderr)
        return EXIT_INVALID
    text = GRAPH_FORMATS[args.format](graph)
    if args.out in (None, "-"):
        sys.stdout.write(text)
        return EXIT_OK
    try:
        write_atomic(os.path.abspath(args.out), text)
    except OSError as error:
        raise UsageError(f"--out {args.out}: cannot write there: {error.strerror or error}") from None
    print(f"{len(graph.nodes)} nodes, {len(graph.edges)} edges in {args.out}")
    return EXIT_OK


def _text_of(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def _proxy_address(text: str) -> tuple[str, str]:
    proxy, dummy, host = text.partition("=")
    if not proxy or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not PROXY=HOST")
    return proxy, host


def _host_port(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) -> (host, port)."""
    host, dummy, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _read_pem(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot read it: {error.strerror or error}") from None


def _server_tls(args) -> xds_server.ServerTls | None:
    """--tls-cert/--tls-key/--ca, or None with --plaintext-loopback (UsageError when neither is whole)."""
    given = {"--tls-cert": args.tls_cert, "--tls-key": args.tls_key, "--ca": args.ca}
    if args.plaintext_loopback:
        if any(given.values()):
            raise UsageError("--plaintext-loopback serves without TLS: drop " + ", ".join(k for k, v in given.items() if v))
        if not xds_server.is_loopback(args.listen[0]):
            raise UsageError(f"--plaintext-loopback listens on loopback only, not {args.listen[0]}")
        return None
    missing = [option for option, value in given.items() if not value]
    if missing:
        raise UsageError(f"give {', '.join(missing)} (the control plane's certificate from the mesh CA, its key, and the roots "
                         "proxies' certificates chain to), or --plaintext-loopback for development on this machine")
    return xds_server.ServerTls(_read_pem("--tls-cert", args.tls_cert), _read_pem("--tls-key", args.tls_key), _read_pem("--ca", args.ca))


def _duration(text: str) -> datetime.timedelta:
    """"90", "90s", "10m", "24h", "7d" -> a positive timedelta."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        seconds = 0
    if not seconds > 0:  # pylint: disable=unnecessary-negation  # also refuses NaN
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (a positive number with s, m, h or d: 30s, 10m, 24h)")
    return datetime.timedelta(seconds=seconds)


def _next_port(listen: tuple[str, int]) -> tuple[str, int]:
    return listen[0], listen[1] + 1 if listen[1] else 0


def _signing_authority(args):
    """The intermediate the CSR service signs with (--signing-cert: it, then the CAs above it; --signing-key)."""
    chain, key = _read_pem("--signing-cert", args.signing_cert), _read_pem("--signing-key", args.signing_key)
    try:
        first, *parents = _pem_certificates(chain)
        if not key_matches_certificate(key, chain):
            raise ValueError("the key is not the key of the first certificate")
        return load_authority(first, key, b"".join(parents))
    except ValueError as error:
        raise UsageError(f"--signing-cert {args.signing_cert} / --signing-key {args.signing_key}: {error}") from None


def _pem_certificates(chain: bytes) -> list[bytes]:
    """The PEM certificates of a chain, each as PEM bytes (ValueError when there is none)."""
    certificates = x509.load_pem_x509_certificates(chain)
    return [certificate_pem(c) for c in certificates]


def _csr_settings(args, tls) -> xds_server.CsrSettings | None:
    given = {"--signing-cert": args.signing_cert, "--signing-key": args.signing_key}
    if not any(given.values()):
        if args.join_tokens:
            raise UsageError("--join-tokens needs --signing-cert and --signing-key (the intermediate the CSR service signs with)")
        return None
    missing = [option for option, value in given.items() if not value]
    if missing:
        raise UsageError(f"give {', '.join(missing)} too: the CSR service signs with the intermediate's certificate chain and key")
    if tls is None:
        raise UsageError("the CSR service needs mTLS: not with --plaintext-loopback")
    join_listen = args.join_listen or _next_port(args.csr_listen)
    return xds_server.CsrSettings(_signing_authority(args), args.csr_listen, join_listen, args.join_tokens, args.cert_lifetime)


def _registries(args) -> list:
    """The registries serve follows: one Marathon (its URLs: an HA Marathon's instances)."""
    if not args.marathon:
        if args.marathon_credentials or args.marathon_token_file:
            raise UsageError("--marathon-credentials/--marathon-token-file need --marathon URL")
        return []
    if args.marathon_credentials and args.marathon_token_file:
        raise UsageError("--marathon-credentials or --marathon-token-file, not both")
    if not names.is_label(args.marathon_name):
        raise UsageError(f"--marathon-name {args.marathon_name!r}: expected {names.LABEL_HELP}")
    try:
        authorization = auth_from_files(args.marathon_credentials, args.marathon_token_file)
        return [MarathonRegistry(args.marathon, f"marathon/{args.marathon_name}", authorization)]
    except OSError as error:
        raise UsageError(f"--marathon-credentials/--marathon-token-file: {error.filename}: {error.strerror}") from None
    except ValueError as error:
        raise UsageError(str(error)) from None


def _kubernetes_registry(value: str):
    """--kubeconfig [NAME=]PATH: a registry of that cluster, named kubernetes/NAME (by default
    the cluster of the kubeconfig's current context)."""
    # Imported here, not above: the Kubernetes client takes about a second to import, which
    # every other command (validate, render, agent) would pay.
    from meshwright.serve.kubernetes import KubeconfigError, KubernetesRegistry, cluster_configuration, current_cluster_name, read_kubeconfig

    name, dummy, path = value.rpartition("=")
    try:
        kubeconfig = read_kubeconfig(path)
        name = name or current_cluster_name(kubeconfig)
        configuration = cluster_configuration(kubeconfig)
    except (OSError, ValueError, KubeconfigError) as error:
        raise UsageError(f"--kubeconfig {value}: {error}") from None
    if not names.is_label(name):
        raise UsageError(f"--kubeconfig {value}: the cluster's name {name!r} is not {names.LABEL_HELP} (give one: NAME=PATH)")
    return KubernetesRegistry(f"kubernetes/{name}", configuration)


def _in_cluster_registry(name: str):
    """--in-cluster NAME: the cluster serve runs in, as the registry kubernetes/NAME."""
    from meshwright.serve.kubernetes import KubeconfigError, KubernetesRegistry, cluster_configuration  # the client's import cost, as above

    if not names.is_label(name):
        raise UsageError(f"--in-cluster {name!r}: expected {names.LABEL_HELP}")
    try:
        configuration = cluster_configuration(None)
    except KubeconfigError as error:
        raise UsageError(f"--in-cluster {name}: not running in a Kubernetes pod ({error}): use --kubeconfig") from None
    return KubernetesRegistry(f"kubernetes/{name}", configuration)


def _root_cert_publishers(args, registries) -> list:
    """The mesh's roots (--ca) as the ConfigMap istio-ca-root-cert in every namespace of each
    watched cluster, as istiod publishes them (injected pods mount it)."""
    clusters = [registry for registry in registries if registry.name.startswith("kubernetes/")]
    if not clusters or not args.ca:
        return []
    from meshwright.serve.root_cert_publisher import RootCertPublisher  # the Kubernetes client: imported only when a cluster is watched

    def read_roots() -> str:
        with open(args.ca, encoding="ascii") as roots:
            return roots.read()

    publishers = [RootCertPublisher(cluster.name, cluster.configuration, read_roots) for cluster in clusters]
    for publisher in publishers:
        publisher.start()
    return publishers


def cmd_serve(args) -> int:
    tls = _server_tls(args)
    csr = _csr_settings(args, tls)
    webhook_context = _webhook_context(args, csr) if args.webhook_listen else None
    registries = _registries(args) + [_kubernetes_registry(value) for value in args.kubeconfig or []]
    if args.in_cluster is not None:
        registries.append(_in_cluster_registry(args.in_cluster))
    mesh, problems = load_valid(args.mesh)
    if problems:
        _print_problems(problems)
        return EXIT_INVALID
    _print_warnings(mesh)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    gc.enable()  # a long-running server: cycles that libraries make must be collected
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *dummy: stop.set())
    webhook = _admission_webhook(args, registries, webhook_context)
    publishers = _root_cert_publishers(args, registries)
    try:
        running = xds_server.start(mesh, args.mesh, args.listen, tls, args.status_listen, csr=csr, registries=registries,
                                   max_streams=args.max_streams)
    except (ValueError, RuntimeError) as error:
        raise UsageError(f"--listen/--status-listen/--csr-listen/--join-listen: {error}") from None
    page = _start_graph_page(args, running)
    stop.wait()
    for publisher in publishers:
        publisher.stop()
    if page is not None:
        page.shutdown()
        page.server_close()
    if webhook is not None:
        webhook.shutdown()
        webhook.server_close()
    running.stop()
    return EXIT_OK


def _host_ports(text: str) -> list[tuple[str, int]]:
    """HOST:PORT[,HOST:PORT...] -> [(host, port), ...]."""
    return [_host_port(part) for part in text.split(",") if part]


def _servers(given: list[list[tuple[str, int]]] | None) -> list[tuple[str, int]]:
    """--server's instances (repeatable, each a comma-separated list), in order, once each."""
    servers = [server for group in (given or [[("127.0.0.1", 15014)]]) for server in group]
    return list(dict.fromkeys(servers))


def _read_definition(path: str):
    """A Marathon app or pod definition (JSON) from path, "-" for stdin."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"-f {path}: cannot read it: {getattr(error, 'strerror', None) or error}") from None
    return json.loads(text)


def cmd_marathon_inject(args) -> int:
    settings = SidecarSettings(f"{args.xds[0]}:{args.xds[1]}", f"{args.csr[0]}:{args.csr[1]}", args.sidecar_image,
                               ca=args.ca, trust_domain=args.trust_domain)
    try:
        definition = _read_definition(args.file)
    except json.JSONDecodeError as error:
        print(f"{args.file}:{error.lineno}:{error.colno}: not JSON: {error.msg}", file=sys.stderr)
        return EXIT_INVALID
    try:
        injected = inject(definition, settings)
    except InjectError as error:
        print(f"{args.file}: {definition.get('id', '?') if isinstance(definition, dict) else '?'}: {error}", file=sys.stderr)
        return EXIT_INVALID
    print(json.dumps(injected, indent=2))
    return EXIT_OK


def cmd_marathon_sidecar(args) -> int:
    """The injected sidecar container's process (marathon_sidecar.py): certificate, bootstrap, Envoy."""
    task_id = args.task_id or os.environ.get("MESOS_TASK_ID", "")
    if not task_id:
        raise UsageError("no task id: run in a Marathon task ($MESOS_TASK_ID) or give --task-id")
    if not os.path.isabs(args.certs_dir):
        raise UsageError(f"--certs-dir {args.certs_dir}: give an absolute path")
    envoy = args.envoy or find_envoy()
    if not envoy:
        raise UsageError("no Envoy binary beside this Python or on PATH (give --envoy)")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    csr = [server for group in args.csr for server in group]
    join = [server for group in args.join for server in group] if args.join else [_next_port(s) for s in csr]
    options = SidecarOptions(args.proxy, task_id, args.identity, [s for group in args.xds for s in group], csr, join, args.certs_dir,
                             _read_pem("--ca", args.ca), args.health, envoy, args.config_dir or os.path.join(os.path.dirname(args.certs_dir), "envoy"))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *dummy: stop.set())
    try:
        return run_sidecar(options, stop)
    except SidecarError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID


def _start_graph_page(args, running):
    """The service graph page beside the control plane (--graph-listen), or None."""
    if args.graph_listen is None:
        return None

    def platforms():  # the live mesh's, registries included
        return workload_platforms(running.plane.estate.mesh)

    try:
        return graph_page.start(graph_page.GraphPage(args.prometheus, platforms=platforms), args.graph_listen)
    except OSError as error:
        running.stop()
        raise UsageError(f"--graph-listen {args.graph_listen[0]}:{args.graph_listen[1]}: {error.strerror or error}") from None


def _webhook_names(args) -> list[str]:
    """--webhook-name (DNS names or IP addresses), by default --webhook-listen's address when it is one host's."""
    host = args.webhook_listen[0]
    given = args.webhook_name or ([] if host in ("0.0.0.0", "::", "") else [host])
    if not given:
        raise UsageError(f"--webhook-listen {host}:{args.webhook_listen[1]} listens on every address: give --webhook-name, the DNS name or "
                         "address the API server calls the webhook by (its certificate is issued for it)")
    for name in given:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            if not names.is_subdomain(name):
                raise UsageError(f"--webhook-name {name!r}: expected an IP address or {names.SUBDOMAIN_HELP}") from None
    return list(dict.fromkeys(given))


def _webhook_context(args, csr):
    """The webhook's TLS: the files given, else a certificate serve issues from the mesh CA (the
    intermediate of --signing-cert) for --webhook-name and renews, as istiod does."""
    if args.webhook_cert or args.webhook_key:
        if not (args.webhook_cert and args.webhook_key):
            raise UsageError("give --webhook-cert and --webhook-key together")
        context = server_context()
        try:
            context.load_cert_chain(args.webhook_cert, args.webhook_key)
        except (OSError, ssl.SSLError) as error:
            raise UsageError(f"--webhook-cert/--webhook-key: {error}") from None
        return context
    if csr is None:
        raise UsageError("--webhook-listen needs a certificate: --signing-cert and --signing-key (serve issues it from the mesh CA for "
                         "--webhook-name; the webhook configuration's caBundle is then the mesh's roots), or --webhook-cert and --webhook-key")
    try:
        issued = IssuedWebhookCertificate(csr.issuer, _webhook_names(args), csr.lifetime)
    except ValueError as error:  # the intermediate has expired
        raise UsageError(f"--signing-cert {args.signing_cert}: cannot issue the webhook's certificate: {error}") from None
    issued.start()
    return issued.context


def _admission_webhook(args, registries, context):
    """--webhook-listen: the validating admission webhook, on its certificate."""
    if args.webhook_listen is None:
        return None
    source = registries[0].name if registries else "kubernetes"
    injection = None
    if args.proxy_image:
        if not (args.injection_xds and args.injection_csr):
            raise UsageError("--proxy-image needs --injection-xds and --injection-csr (where injected pods reach the control plane)")
        injection = InjectionSettings(args.proxy_image, args.injection_xds, args.injection_csr)
    try:
        return admission.webhook_server(*args.webhook_listen, context, source, injection)
    except (OSError, ValueError) as error:
        raise UsageError(f"--webhook-listen {args.webhook_listen[0]}:{args.webhook_listen[1]}: {error}") from None


def cmd_status(args) -> int:
    merged = merged_status(_servers(args.server), args.timeout)
    if not merged.reports:
        raise UsageError("--server " + "; ".join(merged.unreachable))
    if args.json:
        print(json.dumps(merged.as_json(), indent=2, sort_keys=True))
    else:
        print("\n".join(status_table(merged)))
    return EXIT_OK


def _proxy_config(servers: list[tuple[str, int]], proxy: str, timeout: float) -> dict:
    """What the control plane sends proxy, from the instance it is connected to (else the first that answers)."""
    answers, reasons = [], []
    for server in servers:
        try:
            answers.append(fetch(server, f"/config?proxy={urllib.parse.quote(proxy)}", timeout))
        except Unreachable as error:
            reasons.append(str(error))
    if not answers:
        raise UsageError("--server " + "; ".join(reasons))
    return next((answer for answer in answers if answer["connected"]), answers[0])


def cmd_proxy_config(args) -> int:
    config = _proxy_config(_servers(args.server), args.proxy, args.timeout)
    resources = config["resources"].get(args.kind, {})
    if args.diff:
        admin = args.admin or ("127.0.0.1", config["admin_port"])
        try:
            dump = config_dump(admin, args.timeout)
        except (OSError, ValueError) as error:
            raise UsageError(f"--admin {admin[0]}:{admin[1]}: no config_dump from the Envoy of {config['proxy']} there "
                             f"(run this on the proxy's host, or give its admin address): {getattr(error, 'reason', error)}") from None
        lines, differ = config_diff(args.kind, resources, envoy_resources(dump, args.kind), f"envoy {admin[0]}:{admin[1]}")
        print("\n".join(lines))
        return EXIT_INVALID if differ else EXIT_OK
    if args.output == "json":
        print(json.dumps(list(resources.values()), indent=2, sort_keys=True))
    elif args.output == "yaml":
        print(yaml.safe_dump(list(resources.values()), sort_keys=True), end="")
    else:
        print("\n".join(summary_table(args.kind, resources, config["versions"].get(args.kind, {}))))
    return EXIT_OK


def cmd_kube_inject(args) -> int:
    """Inject sidecars into the pods and pod templates of Kubernetes manifests (istioctl kube-inject)."""
    try:
        text = sys.stdin.read() if args.filename == "-" else open(args.filename).read()
    except OSError as error:
        raise UsageError(f"-f {args.filename}: cannot read it: {error.strerror or error}") from None
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        print(f"{args.filename}: not YAML: {error}", file=sys.stderr)
        return EXIT_INVALID
    settings = InjectionSettings(args.proxy_image, args.injection_xds, args.injection_csr, args.trust_domain)
    try:
        injected = [injected_object(doc, settings) for doc in documents]
    except NotInjectable as refused:
        print(f"{args.filename}: {refused}", file=sys.stderr)
        return EXIT_INVALID
    sys.stdout.write(yaml.safe_dump_all(injected, sort_keys=False, width=1000))
    return EXIT_OK


def cmd_crds(args) -> int:
    """The CustomResourceDefinitions of the Istio API groups meshwright reads from a cluster,
    as one YAML stream (the same bytes every time, for `kubectl apply -f` or a role)."""
    text = yaml.safe_dump_all(custom_resource_definitions(), sort_keys=True, width=1000)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        write_atomic(args.out, text)
    return EXIT_OK


def cmd_xds_bootstrap(args) -> int:
    if bool(args.certs_dir) == bool(args.plaintext_loopback):
        raise UsageError("give --certs-dir (the proxy's certificates, for mTLS to the control plane) or --plaintext-loopback")
    if args.certs_dir and not os.path.isabs(args.certs_dir):
        raise UsageError(f"--certs-dir {args.certs_dir}: give an absolute path (where the proxy's certificates are on its host)")
    mesh, problems = load_valid(args.mesh)
    if problems:
        _print_problems(problems)
        return EXIT_INVALID
    _print_warnings(mesh)
    server = XdsServer(tuple(args.xds), args.certs_dir, args.delta)
    try:
        text = xds_bootstrap_text(mesh, args.proxy, server, args.format)
    except UnknownProxy as error:
        raise UsageError(str(error)) from None
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_atomic(os.path.abspath(args.out), text)
    except OSError as error:
        raise UsageError(f"--out {args.out}: cannot write there: {error.strerror or error}") from None
    print(f"{args.proxy}: xDS bootstrap written to {args.out}")
    return EXIT_OK


def cmd_join_token(args) -> int:
    mesh, problems = load_valid(args.mesh)
    if problems:
        _print_problems(problems)
        return EXIT_INVALID
    try:
        spiffe = proxy_spiffe_id(mesh, args.proxy)
    except UnknownProxy as error:
        raise UsageError(str(error)) from None
    ttl = args.ttl.total_seconds()
    try:
        token = issue_token(args.tokens_dir, args.proxy, ttl)
    except OSError as error:
        raise UsageError(f"--tokens-dir {args.tokens_dir}: cannot write there: {error.strerror or error}") from None
    record = json.dumps({"proxy": args.proxy, "spiffe_id": spiffe, "token": token, "ttl_seconds": int(ttl)}, sort_keys=True) + "\n"
    if args.out:
        try:
            write_atomic(os.path.abspath(args.out), record, mode=0o600)
        except OSError as error:
            raise UsageError(f"--out {args.out}: cannot write there: {error.strerror or error}") from None
        print(f"{args.proxy}: join token (one use, {int(ttl)} s) written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(record)
    return EXIT_OK


def cmd_agent(args) -> int:
    roots_path = args.ca or os.path.join(args.certs_dir, "root-cert.pem")
    roots = _read_pem("--ca", roots_path)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    gc.enable()  # a long-running process, like serve
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *dummy: stop.set())
    servers = [server for group in args.server for server in group]
    join_servers = [server for group in args.join_server for server in group] if args.join_server else [_next_port(s) for s in servers]
    agent = Agent(servers, join_servers, args.proxy, args.certs_dir, roots,
                  args.join_token_file, args.validity, args.service_account_token_file, args.trust_domain, roots_file=roots_path)
    signal.signal(signal.SIGHUP, lambda *dummy: agent.renew_now())  # a rotation's new bundle or intermediate: renew now
    try:
        agent.run(stop)
    except AgentError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    logging.getLogger("meshwright.agent").info("proxy %s: stopped (certificates written: %d)", args.proxy, agent.issued)
    return EXIT_OK


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to 3600")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshwright", description="Istio API mesh config -> Envoy config, checked.")
    commands = parser.add_subparsers(dest="command", required=True)
    envoy_help = "Envoy binary for `--mode validate` (default: the one beside this Python, else on PATH; 'none' to skip)"
    timeout_help = f"seconds `envoy --mode validate` may take per proxy before it is stopped (default {DEFAULT_TIMEOUT:g})"

    validate = commands.add_parser("validate", help="check mesh config; exit 0 when valid, 1 with the problems when not")
    validate.add_argument("paths", nargs="+", help="YAML files or directories")
    validate.add_argument("--envoy", help=envoy_help)
    validate.add_argument("--envoy-timeout", type=_seconds, default=DEFAULT_TIMEOUT, help=timeout_help)
    validate.set_defaults(func=cmd_validate)

    render = commands.add_parser("render", help="write one proxy's bootstrap and config files")
    render.add_argument("--mesh", action="append", required=True, help="mesh config file or directory (repeatable)")
    render.add_argument("--proxy", required=True, help="a WorkloadEntry's or Gateway's name.namespace")
    render.add_argument("--out", required=True, help="directory to write into (created if missing)")
    render.add_argument("--format", choices=("yaml", "json"), default="yaml")
    render.add_argument("--config-dir", help="where the files will live on the proxy's host, an absolute path (default: --out)")
    render.add_argument("--envoy", help=envoy_help)
    render.add_argument("--envoy-timeout", type=_seconds, default=DEFAULT_TIMEOUT, help=timeout_help)
    render.set_defaults(func=cmd_render)

    serve = commands.add_parser("serve", help="the control plane: serve the mesh over xDS (ADS) and apply edits as they are saved")
    serve.add_argument("--mesh", action="append", required=True, help="mesh config file or directory, watched (repeatable)")
    serve.add_argument("--listen", type=_host_port, default=("127.0.0.1", 15012), help="HOST:PORT of the xDS server (default 127.0.0.1:15012)")
    serve.add_argument("--status-listen", type=_host_port, default=("127.0.0.1", 15014),
                       help="HOST:PORT on loopback of the status endpoint `meshwright status` reads (default 127.0.0.1:15014)")
    serve.add_argument("--tls-cert", help="the control plane's certificate chain (PEM, from the mesh CA)")
    serve.add_argument("--tls-key", help="its private key (PEM)")
    serve.add_argument("--ca", help="the mesh's roots (PEM): proxies' client certificates must chain to them")
    serve.add_argument("--plaintext-loopback", action="store_true",
                       help="development only: no TLS and no proxy identity check, on a loopback address only")
    serve.add_argument("--signing-cert", help="CSR service: the intermediate's certificate, then the CAs above it (PEM)")
    serve.add_argument("--signing-key", help="CSR service: the intermediate's private key (PEM)")
    serve.add_argument("--cert-lifetime", type=_duration, default=datetime.timedelta(hours=24),
                       help="lifetime of the workload certificates it signs (default 24h; a request may ask for less)")
    serve.add_argument("--csr-listen", type=_host_port, default=("127.0.0.1", 15016),
                       help="HOST:PORT of the CSR service for renewals, mTLS (default 127.0.0.1:15016)")
    serve.add_argument("--join-listen", type=_host_port, help="HOST:PORT of the CSR service for join tokens, server TLS only (default: --csr-listen's "
                                                              "port + 1)")
    serve.add_argument("--graph-listen", type=_host_port, help="HOST:PORT of the service graph page (Kiali's port in the demo: 127.0.0.1:20001); "
                                                               "off without it")
    serve.add_argument("--prometheus", default="http://127.0.0.1:9090",
                       help="Prometheus' URL, which the graph page queries (default http://127.0.0.1:9090)")
    serve.add_argument("--join-tokens", help="directory of join tokens that `meshwright join-token` writes (without it, no first join)")
    serve.add_argument("--marathon", action="append", metavar="URL",
                       help="follow a Marathon's apps and pods (http://HOST:8080); repeat for the instances of an HA Marathon")
    serve.add_argument("--marathon-name", default="default", help="its name in problems and status: marathon/NAME (default marathon/default)")
    serve.add_argument("--marathon-credentials", metavar="FILE", help="a file holding user:password for Marathon's basic auth")
    serve.add_argument("--marathon-token-file", metavar="FILE", help="a file holding a token (sent as Authorization: token=..., DC/OS style)")
    serve.add_argument("--kubeconfig", action="append", metavar="[NAME=]PATH",
                       help="watch a Kubernetes cluster through this kubeconfig (repeatable: one per cluster); NAME names it "
                            "in problems and status (default: the cluster of the current context)")
    serve.add_argument("--in-cluster", metavar="NAME",
                       help="watch the cluster serve runs in as a pod (its service account's token and the cluster's CA, "
                            "as client-go's in-cluster config), named NAME in problems and status")
    serve.add_argument("--webhook-listen", type=_host_port, help="HOST:PORT of the validating admission webhook (HTTPS, POST /validate)")
    serve.add_argument("--webhook-name", action="append",
                       help="a DNS name or IP address the API server calls the webhook by (repeatable; default: --webhook-listen's "
                            "address): serve issues the webhook's certificate for them from the mesh CA (--signing-cert) and renews it")
    serve.add_argument("--webhook-cert", help="instead: the webhook's certificate chain (PEM); the webhook configuration's caBundle is its CA")
    serve.add_argument("--webhook-key", help="instead: its private key (PEM)")
    serve.add_argument("--proxy-image", help="serve the injection webhook too (POST /inject): the proxy image (Envoy + meshwright agent) it injects")
    serve.add_argument("--injection-xds", metavar="HOST:PORT", help="the xDS address injected pods reach the control plane at")
    serve.add_argument("--injection-csr", metavar="HOST:PORT", help=INJECTION_CSR_HELP)
    serve.add_argument("--max-streams", type=_positive_int, default=xds_server.DEFAULT_MAX_STREAMS,
                       help=f"xDS streams served at once; more are refused with a log line (default {xds_server.DEFAULT_MAX_STREAMS})")
    serve.set_defaults(func=cmd_serve)

    token = commands.add_parser("join-token", help="issue a one-time token a proxy's agent uses for its first certificate")
    token.add_argument("--mesh", action="append", required=True, help="mesh config file or directory (repeatable): the proxy's identity")
    token.add_argument("--proxy", required=True, help="the proxy it is for (name.namespace)")
    token.add_argument("--tokens-dir", required=True, help="the directory `meshwright serve --join-tokens` reads")
    token.add_argument("--ttl", type=_duration, default=datetime.timedelta(minutes=10), help="how long it may be used (default 10m)")
    token.add_argument("--out", help="the token file to write (0600) for the agent's --join-token-file (default: stdout)")
    token.set_defaults(func=cmd_join_token)

    agent = commands.add_parser("agent", help="keep a proxy's certificates from the control plane's CSR service, renewed")
    agent.add_argument("--server", type=_host_ports, action="append", required=True,
                       help="HOST:PORT of the CSR service (serve --csr-listen); several instances: HOST:PORT,HOST:PORT or repeated, asked in turn")
    agent.add_argument("--join-server", type=_host_ports, action="append",
                       help="HOST:PORT for the first join (serve --join-listen; default: each --server's port + 1)")
    agent.add_argument("--proxy", required=True, help="the proxy (name.namespace)")
    agent.add_argument("--certs-dir", required=True, help="where key.pem, cert-chain.pem and root-cert.pem are written (what SDS names)")
    agent.add_argument("--join-token-file", help="the token file from `meshwright join-token`, used when there is no valid certificate")
    agent.add_argument("--ca", help="the mesh's roots (PEM; default: root-cert.pem in --certs-dir)")
    agent.add_argument("--validity", type=_duration, help="lifetime to ask for (default: the control plane's --cert-lifetime)")
    agent.add_argument("--service-account-token-file", help="in a pod: its projected service-account token (audience meshwright), "
                       "used instead of a join token when there is no valid certificate")
    agent.add_argument("--trust-domain", default="cluster.local",
                       help="the mesh's trust domain, for the SPIFFE ID the token's account asks for (default cluster.local)")
    agent.set_defaults(func=cmd_agent)

    inject_cmd = commands.add_parser("marathon-inject", help="print a Marathon app or pod definition with the mesh's sidecar (an app becomes a pod)")
    inject_cmd.add_argument("-f", "--file", required=True, help="the app or pod definition (JSON; - for stdin)")
    inject_cmd.add_argument("--xds", type=_host_port, required=True, help="HOST:PORT of `meshwright serve` (ADS) as the agents reach it")
    inject_cmd.add_argument("--csr", type=_host_port, required=True, help="HOST:PORT of its CSR service as the agents reach it")
    inject_cmd.add_argument("--sidecar-image", help="a Docker image holding meshwright and Envoy (default: both installed on the agents)")
    inject_cmd.add_argument("--ca", default="/etc/meshwright/root-cert.pem", help="the mesh's roots on the agents (default /etc/meshwright/root-cert.pem)")
    inject_cmd.add_argument("--trust-domain", default="cluster.local", help="the mesh's trust domain (default cluster.local)")
    sidecar = commands.add_parser("marathon-sidecar", help="run a Marathon task's sidecar: its certificate, its bootstrap, Envoy (what injection runs)")
    sidecar.add_argument("--proxy", required=True, help="the proxy (name.namespace): the registry's name for this task")
    sidecar.add_argument("--identity", required=True, help="the SPIFFE ID to ask for (the control plane signs only the one the mesh gives)")
    sidecar.add_argument("--task-id", help="the Marathon task id (default: $MESOS_TASK_ID)")
    sidecar.add_argument("--xds", type=_host_ports, action="append", required=True, help="HOST:PORT[,HOST:PORT] of `meshwright serve` (ADS)")
    sidecar.add_argument("--csr", type=_host_ports, action="append", required=True, help="HOST:PORT[,HOST:PORT] of its CSR service (mTLS)")
    sidecar.add_argument("--join", type=_host_ports, action="append", help="its first-join port(s) (default: each --csr port + 1)")
    sidecar.add_argument("--ca", required=True, help="the mesh's roots (PEM)")
    sidecar.add_argument("--certs-dir", required=True, help="where the agent writes key.pem, cert-chain.pem, root-cert.pem (absolute)")
    sidecar.add_argument("--config-dir", help="where the bootstrap is written (default: envoy/ beside --certs-dir)")
    sidecar.add_argument("--health", type=int, default=15021, help="the port Marathon health-checks (ENDPOINT_MESH_HEALTH; default 15021)")
    sidecar.add_argument("--envoy", help="the Envoy binary (default: beside this Python, else on PATH)")
    sidecar.set_defaults(func=cmd_marathon_sidecar)
    inject_cmd.set_defaults(func=cmd_marathon_inject)

    status = commands.add_parser("status", help="every proxy of the running control plane instances: their instance, SYNCED, STALE or NACK "
                                 "per xDS type, certificate expiry, Envoy version")
    status.add_argument("--server", type=_host_ports, action="append",
                        help="status endpoints of `meshwright serve` instances, HOST:PORT[,HOST:PORT...] (repeatable; default 127.0.0.1:15014)")
    status.add_argument("--json", action="store_true", help="the whole status as JSON")
    status.add_argument("--timeout", type=_seconds, default=5.0, help="seconds to wait for an answer (default 5)")
    status.set_defaults(func=cmd_status)

    proxy_config = commands.add_parser("proxy-config", help="what the control plane sends one proxy; with --diff, how it differs "
                                       "from the proxy's own config_dump")
    proxy_config.add_argument("proxy", help="the proxy (name.namespace)")
    proxy_config.add_argument("kind", choices=("clusters", "listeners", "routes", "endpoints", "secrets"))
    proxy_config.add_argument("--server", type=_host_ports, action="append",
                              help="status endpoints of `meshwright serve` instances, HOST:PORT[,HOST:PORT...] (repeatable; default 127.0.0.1:15014)")
    proxy_config.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table",
                              help="a short table (default), or every resource whole")
    proxy_config.add_argument("--diff", action="store_true", help="compare with the proxy's Envoy (its admin config_dump); exit 1 when they differ")
    proxy_config.add_argument("--admin", type=_host_port, help="HOST:PORT of the proxy's Envoy admin (default: 127.0.0.1 and the proxy's admin port)")
    proxy_config.add_argument("--timeout", type=_seconds, default=5.0, help="seconds to wait for an answer (default 5)")
    proxy_config.set_defaults(func=cmd_proxy_config)

    prometheus = commands.add_parser("prometheus", help="write Prometheus' configuration and scrape targets (Istio's metrics) for the mesh")
    prometheus.add_argument("--mesh", action="append", required=True, help="mesh config file or directory (repeatable)")
    prometheus.add_argument("--out", required=True, help=f"Prometheus' configuration folder: prometheus.yml and {TARGETS_FILE}")
    prometheus.add_argument("--scrape-interval", default="15s", help="how often each proxy is scraped (default 15s)")
    prometheus.add_argument("--address", type=_proxy_address, action="append", help="PROXY=HOST: where a proxy's stats port is reached (repeatable)")
    prometheus.add_argument("--scrape", type=_host_port, action="append",
                            help="HOST:PORT of another /metrics endpoint to scrape, e.g. the control plane (repeatable)")
    prometheus.add_argument("--envoy-stats", action="store_true", help="also keep all of Envoy's own stats (a second job; many more series)")
    prometheus.add_argument("--targets-only", action="store_true", help="write only the targets file (proxies came or went: Prometheus re-reads it, no reload)")
    prometheus.set_defaults(func=cmd_prometheus)

    graph = commands.add_parser("graph", help="the service graph (Kiali's) from Istio's metrics in Prometheus, as svg, dot or json")
    graph.add_argument("--prometheus", required=True, help="Prometheus' URL, e.g. http://127.0.0.1:9090")
    graph.add_argument("--format", choices=sorted(GRAPH_FORMATS), default="svg")
    graph.add_argument("--window", default="1m", help="the traffic of this last while (a Prometheus duration, default 1m)")
    graph.add_argument("--timeout", type=_seconds, default=10.0, help="seconds each query may take (default 10)")
    graph.add_argument("--out", help="file to write (default: stdout)")
    graph.set_defaults(func=cmd_graph)

    bootstrap = commands.add_parser("xds-bootstrap", help="write a proxy's bootstrap for xDS from `meshwright serve`")
    bootstrap.add_argument("--mesh", action="append", required=True, help="mesh config file or directory (repeatable)")
    bootstrap.add_argument("--proxy", required=True, help="a WorkloadEntry's or Gateway's name.namespace")
    bootstrap.add_argument("--xds", type=_host_port, action="append", required=True, help="HOST:PORT of a control plane instance (repeatable)")
    bootstrap.add_argument("--certs-dir", help="absolute path of the proxy's certificates on its host (mTLS to the control plane, SDS)")
    bootstrap.add_argument("--plaintext-loopback", action="store_true", help="development only: plaintext xDS to a loopback control plane")
    bootstrap.add_argument("--delta", action="store_true", help="incremental xDS (DELTA_GRPC) instead of state of the world")
    bootstrap.add_argument("--format", choices=("yaml", "json"), default="yaml")
    bootstrap.add_argument("--out", required=True, help="the bootstrap file to write")
    bootstrap.set_defaults(func=cmd_xds_bootstrap)

    inject = commands.add_parser("kube-inject",
                                 help="inject sidecars into Kubernetes manifests (Pods, Deployments, StatefulSets, DaemonSets, Jobs...), to stdout")
    inject.add_argument("-f", "--filename", required=True, help="the manifests (YAML, several documents); - reads standard input")
    inject.add_argument("--proxy-image", required=True, help="the proxy image (Envoy + meshwright agent) to inject")
    inject.add_argument("--injection-xds", required=True, metavar="HOST:PORT", help="the xDS address injected pods reach the control plane at")
    inject.add_argument("--injection-csr", required=True, metavar="HOST:PORT", help=INJECTION_CSR_HELP)
    inject.add_argument("--trust-domain", default="cluster.local", help="the mesh's trust domain (default cluster.local)")
    inject.set_defaults(func=cmd_kube_inject)

    crds = commands.add_parser("crds", help="write the CustomResourceDefinitions of the Istio API meshwright reads from Kubernetes")
    crds.add_argument("--out", default="-", help="the YAML file to write (default -: standard output)")
    crds.set_defaults(func=cmd_crds)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_OK if exit_.code in (None, 0) else EXIT_USAGE
    try:
        # One pause for the whole command: the pauses of its steps would each end in a pass
        # of the collector over everything they built.
        with cyclic_collector_paused():
            return args.func(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; a render writes each file by rename, so every file is whole", file=sys.stderr)
        return 130
    except Exception as error:  # the last resort: a bug must not print a traceback as if it were the answer
        print(f"internal error (a bug in meshwright, please report it): {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
