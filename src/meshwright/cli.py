"""meshwright command line: validate mesh config, render a proxy's Envoy config."""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import urllib.error
import urllib.request

from cryptography import x509

from meshwright.agent import Agent, AgentError
from meshwright.check.cel_expressions import check_cel_expressions
from meshwright.check.envoy_binary import DEFAULT_TIMEOUT, EnvoyBinaryError, check_envoy_binary, envoy_validate, find_envoy
from meshwright.check.pipeline import validate_mesh
from meshwright.collector import cyclic_collector_paused
from meshwright.compile.proxy import UnknownProxy, find_proxy, list_proxies
from meshwright.compile.proxy_class import proxy_classes
from meshwright.compile.xds_bootstrap import XdsServer
from meshwright.deliver.bundle import ProxyBundle, RenderError, bundle_proxy
from meshwright.deliver.file_set import write_atomic, write_files
from meshwright.deliver.identity import proxy_spiffe_id
from meshwright.mesh import config_dir_problem
from meshwright.model.load import load_paths
from meshwright.pki.ca import certificate_pem, load_authority
from meshwright.pki.csr import key_matches_certificate
from meshwright.problems import Problems
from meshwright.serve import server as xds_server
from meshwright.serve.join_tokens import issue_token
from meshwright.serve.bootstrap import xds_bootstrap_text
from meshwright.serve.source import load_valid

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
EXIT_INTERNAL = 3


class UsageError(Exception):
    """An argument that cannot be used (exit 2)."""


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


def _check_with_envoy(envoy: str, bundle: ProxyBundle, timeout: float) -> str | None:
    with tempfile.TemporaryDirectory(prefix="meshwright-validate-") as scratch:
        bootstrap_path = os.path.join(scratch, "validate.yaml")
        with open(bootstrap_path, "w", encoding="utf-8") as handle:
            handle.write(bundle.validation_bootstrap)
        try:
            return envoy_validate(envoy, bootstrap_path, timeout)
        except EnvoyBinaryError as error:
            raise UsageError(f"--envoy: {error}") from None


def _envoy_rejection(mesh, envoy: str, timeout: float) -> tuple[list[str], str] | None:
    """The first config Envoy rejects, with every proxy that shares it; None when it accepts
    them all. Envoy runs once per distinct validation bootstrap of a class's first proxy: the
    proxies of a class (compile/proxy_class.py) differ only in names and stat names, which
    Envoy takes as they come, and the same bytes get the same verdict."""
    verdicts: dict[str, str | None] = {}
    rejected, sharing = None, []
    for proxies in proxy_classes(mesh, list_proxies(mesh)):
        with tempfile.TemporaryDirectory(prefix="meshwright-render-") as scratch:
            bundle = bundle_proxy(mesh, proxies[0].id, scratch, check_dirs=False)
        digest = hashlib.sha256(bundle.validation_bootstrap.encode()).hexdigest()
        if digest not in verdicts and rejected is None:
            verdicts[digest] = _check_with_envoy(envoy, bundle, timeout)
            rejected = digest if verdicts[digest] else None
        if digest == rejected:
            sharing += [proxy.id for proxy in proxies]
    return (sharing, verdicts[rejected]) if rejected else None


def cmd_validate(args) -> int:
    envoy = _envoy_for(args)
    mesh, problems = validate_mesh(load_paths(args.paths))
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
        rejection = _envoy_rejection(mesh, envoy, args.envoy_timeout)
        if rejection:
            proxy_ids, error = rejection
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
    mesh, problems = validate_mesh(load_paths(args.mesh))
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
        error = _check_with_envoy(envoy, bundle, args.envoy_timeout)
        if error:
            print(f"proxy {proxy.id}: envoy --mode validate rejects its config; nothing was written:\n{error}", file=sys.stderr)
            return EXIT_INVALID
    try:
        changed = write_files(out_dir, bundle.files)
    except OSError as error:
        raise UsageError(f"--out {args.out}: cannot write there: {error.strerror or error}") from None
    print(f"{proxy.id}: {len(bundle.files)} files in {out_dir}, {len(changed)} changed")
    return EXIT_OK


def _host_port(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) -> (host, port)."""
    host, _, port = text.rpartition(":")
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
    if not seconds > 0:
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


def cmd_serve(args) -> int:
    tls = _server_tls(args)
    csr = _csr_settings(args, tls)
    mesh, problems = load_valid(args.mesh)
    if problems:
        _print_problems(problems)
        return EXIT_INVALID
    _print_warnings(mesh)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    gc.enable()  # a long-running server: cycles that libraries make must be collected
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        running = xds_server.start(mesh, args.mesh, args.listen, tls, args.status_listen, csr=csr, max_streams=args.max_streams)
    except (ValueError, RuntimeError) as error:
        raise UsageError(f"--listen/--status-listen/--csr-listen/--join-listen: {error}") from None
    stop.wait()
    running.stop()
    return EXIT_OK


def _status_table(status: dict) -> list[str]:
    kinds = ("clusters", "endpoints", "listeners", "routes", "secrets")
    rows = [("PROXY", "CONNECTED", *(k.upper() for k in kinds), "VERSIONS (listeners/routes)")]
    errors = []
    for proxy in status["proxies"]:
        if not proxy["streams"]:
            rows.append((proxy["proxy"], "-", *("-" for _ in kinds), ""))
        for stream in proxy["streams"]:
            types = stream["types"]
            rows.append((proxy["proxy"], stream["peer"], *(types[k]["state"] if k in types else "-" for k in kinds),
                         "/".join(types[k]["acked"][:8] or "-" for k in ("listeners", "routes") if k in types)))
            errors += [f"{proxy['proxy']} {kind}: NACK: {t['error']}" for kind, t in types.items() if t["state"] == "NACK"]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.append(f"mesh generation {status['generation']}")
    rejection = status.get("rejection")
    if rejection:
        lines.append(f"last edit REJECTED ({len(rejection['problems'])} problems; proxies keep the last good config):")
        lines += [f"  {problem}" for problem in rejection["problems"]]
    lines += errors
    lines += [f"refused: {refusal}" for refusal in status.get("refusals", [])]
    return lines


def cmd_status(args) -> int:
    host, port = args.server
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/status", timeout=args.timeout) as response:
            status = json.loads(response.read())
    except (OSError, ValueError) as error:
        raise UsageError(f"--server {host}:{port}: no status from meshwright serve there: {getattr(error, 'reason', error)}") from None
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print("\n".join(_status_table(status)))
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
        signal.signal(signum, lambda *_: stop.set())
    agent = Agent(args.server, args.join_server or _next_port(args.server), args.proxy, args.certs_dir, roots,
                  args.join_token_file, args.validity)
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
    serve.add_argument("--join-listen", type=_host_port, help="HOST:PORT of the CSR service for join tokens, server TLS only (default: --csr-listen's port + 1)")
    serve.add_argument("--join-tokens", help="directory of join tokens that `meshwright join-token` writes (without it, no first join)")
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
    agent.add_argument("--server", type=_host_port, required=True, help="HOST:PORT of the CSR service (serve --csr-listen)")
    agent.add_argument("--join-server", type=_host_port, help="HOST:PORT for the first join (serve --join-listen; default: --server's port + 1)")
    agent.add_argument("--proxy", required=True, help="the proxy (name.namespace)")
    agent.add_argument("--certs-dir", required=True, help="where key.pem, cert-chain.pem and root-cert.pem are written (what SDS names)")
    agent.add_argument("--join-token-file", help="the token file from `meshwright join-token`, used when there is no valid certificate")
    agent.add_argument("--ca", help="the mesh's roots (PEM; default: root-cert.pem in --certs-dir)")
    agent.add_argument("--validity", type=_duration, help="lifetime to ask for (default: the control plane's --cert-lifetime)")
    agent.set_defaults(func=cmd_agent)

    status = commands.add_parser("status", help="every proxy of a running `meshwright serve`: SYNCED, STALE or NACK per type")
    status.add_argument("--server", type=_host_port, default=("127.0.0.1", 15014), help="its status endpoint (default 127.0.0.1:15014)")
    status.add_argument("--json", action="store_true", help="the whole status as JSON")
    status.add_argument("--timeout", type=_seconds, default=5.0, help="seconds to wait for an answer (default 5)")
    status.set_defaults(func=cmd_status)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_USAGE if exit_.code else EXIT_OK
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
