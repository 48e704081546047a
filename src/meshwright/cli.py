"""meshwright command line: validate mesh config, render a proxy's Envoy config."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile

from meshwright.check.cel_expressions import check_cel_expressions
from meshwright.check.envoy_binary import DEFAULT_TIMEOUT, EnvoyBinaryError, check_envoy_binary, envoy_validate, find_envoy
from meshwright.check.pipeline import validate_mesh
from meshwright.collector import cyclic_collector_paused
from meshwright.compile.proxy import UnknownProxy, find_proxy, list_proxies
from meshwright.compile.proxy_class import proxy_classes
from meshwright.deliver.bundle import ProxyBundle, RenderError, bundle_proxy
from meshwright.deliver.file_set import write_files
from meshwright.mesh import config_dir_problem
from meshwright.model.load import load_paths
from meshwright.problems import Problems

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
