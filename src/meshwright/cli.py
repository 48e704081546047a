"""meshwright command line: validate mesh config, render a proxy's Envoy config."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from meshwright.compile.proxy import UnknownProxy, find_proxy, list_proxies
from meshwright.deliver.bundle import ProxyBundle, bundle_proxy
from meshwright.deliver.file_set import write_files
from meshwright.model.load import load_paths
from meshwright.validate.envoy_binary import envoy_validate, find_envoy
from meshwright.validate.pipeline import validate_mesh

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


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
    return args.envoy or find_envoy()


def _check_with_envoy(envoy: str, bundle: ProxyBundle) -> str | None:
    with tempfile.TemporaryDirectory(prefix="meshwright-validate-") as scratch:
        bootstrap_path = os.path.join(scratch, "validate.yaml")
        with open(bootstrap_path, "w", encoding="utf-8") as handle:
            handle.write(bundle.validation_bootstrap)
        return envoy_validate(envoy, bootstrap_path)


def cmd_validate(args) -> int:
    mesh, problems = validate_mesh(load_paths(args.paths))
    if problems:
        _print_problems(problems)
        return EXIT_INVALID
    _print_warnings(mesh)
    envoy = _envoy_for(args)
    if envoy:
        for proxy in list_proxies(mesh):
            with tempfile.TemporaryDirectory(prefix="meshwright-render-") as scratch:
                error = _check_with_envoy(envoy, bundle_proxy(mesh, proxy.id, scratch))
            if error:
                print(f"proxy {proxy.id}: envoy --mode validate rejects its config:\n{error}", file=sys.stderr)
                return EXIT_INVALID
    count = len(mesh.resources)
    print(f"{count} resource{'s' if count != 1 else ''} valid" + ("" if envoy else " (no Envoy binary found: skipped envoy --mode validate)"))
    return EXIT_OK


def cmd_render(args) -> int:
    mesh, problems = validate_mesh(load_paths(args.mesh))
    if problems:
        _print_problems(problems)
        return EXIT_INVALID
    _print_warnings(mesh)
    try:
        proxy = find_proxy(mesh, args.proxy)
    except UnknownProxy as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    out_dir = os.path.abspath(args.out)
    bundle = bundle_proxy(mesh, proxy.id, args.config_dir or out_dir, args.format)
    envoy = _envoy_for(args)
    if envoy:
        error = _check_with_envoy(envoy, bundle)
        if error:
            print(f"proxy {proxy.id}: envoy --mode validate rejects its config; nothing was written:\n{error}", file=sys.stderr)
            return EXIT_INVALID
    changed = write_files(out_dir, bundle.files)
    print(f"{proxy.id}: {len(bundle.files)} files in {out_dir}, {len(changed)} changed")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshwright", description="Istio API mesh config -> Envoy config, checked.")
    commands = parser.add_subparsers(dest="command", required=True)
    envoy_help = "Envoy binary for `--mode validate` (default: the one beside this Python, else on PATH; 'none' to skip)"

    validate = commands.add_parser("validate", help="check mesh config; exit 0 when valid, 1 with the problems when not")
    validate.add_argument("paths", nargs="+", help="YAML files or directories")
    validate.add_argument("--envoy", help=envoy_help)
    validate.set_defaults(func=cmd_validate)

    render = commands.add_parser("render", help="write one proxy's bootstrap and config files")
    render.add_argument("--mesh", action="append", required=True, help="mesh config file or directory (repeatable)")
    render.add_argument("--proxy", required=True, help="a WorkloadEntry's or Gateway's name.namespace")
    render.add_argument("--out", required=True, help="directory to write into (created if missing)")
    render.add_argument("--format", choices=("yaml", "json"), default="yaml")
    render.add_argument("--config-dir", help="where the files will live on the proxy's host (default: --out)")
    render.add_argument("--envoy", help=envoy_help)
    render.set_defaults(func=cmd_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_USAGE if exit_.code else EXIT_OK
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
