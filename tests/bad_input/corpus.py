"""The bad-input corpus: inputs that once hung meshwright, ate its memory or crashed it with a
traceback, and inputs of every kind an attacker or an unlucky operator gives it.

Generated, not stored (some are tens of megabytes, some are FIFOs and sockets): each Case
writes its inputs into a folder of its own. `python -m tests.bad_input.corpus DIR` writes all
of them into DIR for a look; tests/unit/test_bad_input_corpus.py runs `meshwright validate`
and `meshwright render` on each and checks the answer (exit 1 or 2, a message naming the file
and the problem, in time, in bounded memory, writing nothing).

A case's folder holds `mesh/` (the mesh config: examples/basic/mesh.yaml plus the bad part)
and whatever else the case needs; `{case}` in argv is that folder.
"""

from __future__ import annotations

import os
import random
import socket
import sys
from dataclasses import dataclass, field
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE_MESH = os.path.join(ROOT, "examples", "basic", "mesh.yaml")
PROXY = "frontend.default"  # a sidecar of the basic mesh


@dataclass
class Case:
    name: str
    write: Callable[[str], None]  # writes the case's inputs into the mesh folder
    problem: str  # text the error output must contain: what is wrong
    where: str = "bad.yaml"  # text the error output must contain: the file (or argument) at fault
    code: int = 1
    commands: tuple[str, ...] = ("validate", "render")
    argv: dict[str, list[str]] = field(default_factory=dict)  # command -> arguments, instead of the usual ones
    env: dict[str, str] = field(default_factory=dict)


def default_argv(command: str) -> list[str]:
    if command == "validate":
        return ["validate", "--envoy", "none", "{case}/mesh"]
    return ["render", "--envoy", "none", "--mesh", "{case}/mesh", "--proxy", PROXY, "--out", "{case}/out"]


def base_text() -> str:
    with open(BASE_MESH, encoding="utf-8") as handle:
        return handle.read()


def write_bytes(name: str, data: bytes) -> Callable[[str], None]:
    def write(mesh: str) -> None:
        with open(os.path.join(mesh, name), "wb") as handle:
            handle.write(data)
    return write


def write_text(text: str, name: str = "bad.yaml") -> Callable[[str], None]:
    return write_bytes(name, text.encode("utf-8"))


def edited_base(old: str, new: str) -> Callable[[str], None]:
    """The basic mesh with one edit, as bad.yaml (the base file is left out)."""
    def write(mesh: str) -> None:
        text = base_text()
        assert old in text, old
        os.remove(os.path.join(mesh, "base.yaml"))
        write_text(text.replace(old, new, 1))(mesh)
    return write


def with_mesh_config(fields: str) -> Callable[[str], None]:
    return edited_base("  accessLogFile: /dev/stdout\n", f"  accessLogFile: /dev/stdout\n{fields}")


WORKLOAD = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: {name}
  namespace: {namespace}
spec:
  address: 127.0.0.1
  labels: {labels}
  serviceAccount: {account}
"""


def workload(name: str = "extra", namespace: str = "default", labels: str = "{app: extra}", account: str = "extra") -> Callable[[str], None]:
    return write_text(WORKLOAD.format(name=name, namespace=namespace, labels=labels, account=account))


def fifo(name: str) -> Callable[[str], None]:
    return lambda mesh: os.mkfifo(os.path.join(mesh, name))


def unix_socket(name: str) -> Callable[[str], None]:
    def write(mesh: str) -> None:
        server = socket.socket(socket.AF_UNIX)
        server.bind(os.path.join(mesh, name))  # the socket file stays after the socket closes
        server.close()
    return write


def symlink(target: str, name: str) -> Callable[[str], None]:
    return lambda mesh: os.symlink(target, os.path.join(mesh, name))


def sparse(name: str, size: int) -> Callable[[str], None]:
    def write(mesh: str) -> None:
        with open(os.path.join(mesh, name), "wb") as handle:
            handle.truncate(size)
    return write


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["apiVersion: networking.istio.io/v1", "kind: ServiceEntry", "metadata: {name: lol, namespace: default}", "spec:",
             "  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        lines.append(f"  l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    lines.append(f"  hosts: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def mapping_bomb(levels: int = 12) -> str:
    lines = ["a0: &a0 {x: 1, y: 2}"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} {{l: *a{level - 1}, r: *a{level - 1}}}")
    return "apiVersion: v1\nkind: ServiceEntry\nmetadata: {name: bomb}\nspec:\n" + "\n".join("  " + line for line in lines) + "\n"


def many_documents(count: int, document: str) -> Callable[[str], None]:
    return write_text("".join(f"---\n{document}" for _ in range(count)))


def long_string_document(size: int) -> str:
    return ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: big, namespace: default}\n"
            f"spec:\n  hosts: [big.example.com]\n  description: {'a' * size}\n")


def hanging_envoy(mesh: str) -> None:
    path = os.path.join(os.path.dirname(mesh), "envoy-hangs")
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\nsleep 300\n")  # sh waits on its child: the whole group must be stopped
    os.chmod(path, 0o755)


def failing_envoy(mesh: str) -> None:
    path = os.path.join(os.path.dirname(mesh), "envoy-fails")
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\necho 'garbage \\033[31m from a broken binary' >&2\nexit 7\n")
    os.chmod(path, 0o755)


def not_executable(mesh: str) -> None:
    with open(os.path.join(os.path.dirname(mesh), "envoy-plain"), "w") as handle:
        handle.write("#!/bin/sh\nexit 0\n")


def a_file_named_out(mesh: str) -> None:
    with open(os.path.join(os.path.dirname(mesh), "out"), "w") as handle:
        handle.write("a file, not a folder\n")


def nothing(mesh: str) -> None:
    pass


def render_with(*extra: str) -> dict[str, list[str]]:
    return {"render": default_argv("render") + list(extra)}


def validate_with(*extra: str) -> dict[str, list[str]]:
    return {"validate": ["validate", *extra, "{case}/mesh"]}


RNG_SEED = 10  # deterministic "random" bytes

CASES: list[Case] = [
    # --- bombs: aliases are refused outright, never expanded
    Case("alias-billion-laughs", write_text(billion_laughs()), "YAML aliases (*name) are not accepted"),
    Case("alias-billion-laughs-deep", write_text(billion_laughs(levels=30, width=30)), "YAML aliases (*name) are not accepted"),
    Case("alias-mapping-bomb", write_text(mapping_bomb(40)), "YAML aliases (*name) are not accepted"),
    Case("alias-merge-key", write_text("apiVersion: v1\nkind: ServiceEntry\nmetadata: {name: m}\nspec:\n  a: &a {x: 1}\n  b:\n    <<: *a\n"),
         "YAML merge keys (<<) are not accepted"),
    Case("alias-single", edited_base("labels: {app: frontend}", "labels: &l {app: frontend}\n  x: *l"), "YAML aliases (*name) are not accepted"),
    Case("alias-undefined-wildcard-host", write_text("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: w}\nspec:\n  hosts:\n  - *.example.com\n"),
         "a '*' that starts a value starts a YAML alias: quote wildcards"),
    # --- huge: refused by size before parsing
    Case("huge-sparse-file", sparse("bad.yaml", 70 * 1024 * 1024), "larger than 64 MB in all", code=1),
    Case("huge-one-document-30mb", write_text(long_string_document(30 * 1024 * 1024)), "larger than 1536 KB"),
    Case("huge-document-over-env-limit", write_text(long_string_document(200 * 1024)), "larger than 100 KB",
         env={"MESHWRIGHT_MAX_DOCUMENT_KB": "100"}),
    Case("huge-total-over-env-limit", write_text("# padding\n" * 120_000), "MESHWRIGHT_MAX_INPUT_MB", env={"MESHWRIGHT_MAX_INPUT_MB": "1"}),
    Case("too-many-documents", many_documents(200_001, ""), "more than 200000 documents"),
    Case("too-many-documents-env", many_documents(101, "{}\n"), "more than 100 documents (the limit is 100 documents: raise it with the environment variable MESHWRIGHT_MAX_DOCUMENTS)",
         env={"MESHWRIGHT_MAX_DOCUMENTS": "100"}),
    Case("twenty-thousand-documents", many_documents(20_000, "apiVersion: v1\nkind: Nope\nmetadata: {name: x}\n"), "unknown kind"),
    Case("limit-env-not-a-number", nothing, "'lots' is not a limit", where="MESHWRIGHT_MAX_DEPTH", env={"MESHWRIGHT_MAX_DEPTH": "lots"}),
    # --- deep
    Case("deep-flow-1000", write_text("apiVersion: v1\nkind: ServiceEntry\nmetadata: {name: d}\nspec:\n  hosts: " + "[" * 1000 + "]" * 1000 + "\n"),
         "maximum nesting depth"),
    Case("deep-flow-100000", write_text("spec: " + "[" * 100_000 + "]" * 100_000 + "\n"), "maximum nesting depth"),
    Case("deep-block-150", write_text("spec:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(150)) + "  " * 151 + "v: 1\n"),
         "nested more than 100 levels deep (the limit is 100 levels: raise it with the environment variable MESHWRIGHT_MAX_DEPTH)"),
    Case("deep-block-990", write_text("spec:\n" + "".join(" " * (i + 1) + "- \n" for i in range(990))), "nested more than 100 levels deep"),
    Case("deep-mixed-flow", write_text("spec: " + "{a: [" * 300 + "]}" * 300 + "\n"), "nested more than 100 levels deep"),
    # --- binary
    Case("binary-nul-byte", edited_base("trustDomain", "trust\0Domain"), "control character U+0000"),
    Case("binary-random", write_bytes("bad.yaml", bytes(random.Random(RNG_SEED).randrange(256) for _ in range(4096))), "(is this a binary file?)"),
    Case("binary-gzip", write_bytes("bad.yaml", b"\x1f\x8b\x08\x00" + bytes(range(200))), "not UTF-8 text (byte 0x8b at line 1)"),
    Case("binary-elf", write_bytes("bad.yaml", b"\x7fELF\x02\x01\x01" + b"\0" * 64), "control character U+007F"),
    Case("binary-escape-sequence", write_text("apiVersion: v1\nkind: \x1b[2J\x1b[31mServiceEntry\n"), "control character U+001B at line 2"),
    # --- encodings
    Case("utf16-le-bom", write_bytes("bad.yaml", base_text().encode("utf-16")), "the file is UTF-16 text"),
    Case("utf16-be-bom", write_bytes("bad.yaml", b"\xfe\xff" + base_text().encode("utf-16-be")), "the file is UTF-16 text"),
    Case("utf16-no-bom", write_bytes("bad.yaml", base_text().encode("utf-16-le")), "control character U+0000 at line 1"),
    Case("utf32-bom", write_bytes("bad.yaml", base_text().encode("utf-32")), "the file is UTF-32 text"),
    Case("latin-1", write_bytes("bad.yaml", WORKLOAD.format(name="caf\xe9", namespace="default", labels="{}", account="a").encode("latin-1")),
         "not UTF-8 text (byte 0xe9 at line 4)"),
    Case("utf8-overlong", write_bytes("bad.yaml", b"apiVersion: v1\nkind: \xc0\xaf\n"), "not UTF-8 text (byte 0xc0 at line 2)"),
    Case("utf8-surrogate", write_bytes("bad.yaml", b"kind: \xed\xa0\x80\n"), "not UTF-8 text (byte 0xed at line 1)"),
    Case("utf8-bom-then-mistake", write_bytes("bad.yaml", b"\xef\xbb\xbf" + WORKLOAD.format(name="x", namespace="default", labels="{app: x}", account="x").replace(
        "address", "adress").encode()), "unknown field 'adress'", where="bad.yaml:7"),
    # --- special files: never read, never waited on
    Case("fifo-named-yaml", fifo("bad.yaml"), "cannot read: a FIFO; only regular files are read"),
    Case("fifo-given-directly", fifo("pipe.yaml"), "cannot read: a FIFO", where="pipe.yaml",
         argv={"validate": ["validate", "--envoy", "none", "{case}/mesh/pipe.yaml"]}, commands=("validate",)),
    Case("socket-named-yaml", unix_socket("bad.yaml"), "cannot read: a socket"),
    Case("dev-zero", nothing, "cannot read: a character device", where="/dev/zero",
         argv={"validate": ["validate", "--envoy", "none", "/dev/zero"],
               "render": ["render", "--envoy", "none", "--mesh", "/dev/zero", "--proxy", PROXY, "--out", "{case}/out"]}),
    Case("dev-urandom", nothing, "cannot read: a character device", where="/dev/urandom",
         argv={"validate": ["validate", "--envoy", "none", "{case}/mesh", "/dev/urandom"]}, commands=("validate",)),
    Case("proc-directory", nothing, "no .yaml or .yml files in this directory", where="/proc/self/fdinfo",
         argv={"validate": ["validate", "--envoy", "none", "/proc/self/fdinfo"]}, commands=("validate",)),
    Case("symlink-to-dev-zero", symlink("/dev/zero", "bad.yaml"), "cannot read: a character device"),
    Case("symlink-loop", symlink("bad.yaml", "bad.yaml"), "cannot read: Too many levels of symbolic links"),
    Case("symlink-dangling", symlink("/nonexistent/mesh.yaml", "bad.yaml"), "cannot read: No such file or directory"),
    Case("directory-named-yaml", lambda mesh: os.mkdir(os.path.join(mesh, "x.yaml")), "no .yaml or .yml files in this directory", where="x.yaml",
         argv={"validate": ["validate", "--envoy", "none", "{case}/mesh/x.yaml"],
               "render": ["render", "--envoy", "none", "--mesh", "{case}/mesh/x.yaml", "--proxy", PROXY, "--out", "{case}/out"]}),
    Case("missing-file", nothing, "no such file or directory", where="nope.yaml",
         argv={"validate": ["validate", "--envoy", "none", "{case}/mesh/nope.yaml"]}, commands=("validate",)),
    # --- path tricks: file names are data, shown escaped, never run
    Case("file-name-with-newline", write_text("kind: [\n", name="bad\nname.yaml"), "not valid YAML", where="bad\\nname.yaml"),
    Case("file-name-shell", write_text("kind: [\n", name="$(touch PWNED);`id`.yaml"), "not valid YAML", where="$(touch PWNED);`id`.yaml"),
    Case("file-name-unicode", write_text("kind: [\n", name="m\u00e9\u0161h-\u202e.yaml"), "not valid YAML", where="\\u202e"),
    Case("config-dir-relative", nothing, "must be an absolute path", where="--config-dir", code=2, commands=("render",),
         argv=render_with("--config-dir", "etc/meshwright/proxy")),
    Case("config-dir-dotdot", nothing, "must be an absolute path without '.' or '..' parts", where="--config-dir", code=2, commands=("render",),
         argv=render_with("--config-dir", "/etc/meshwright/../../root/proxy")),
    Case("certificates-dir-escapes", with_mesh_config("  certificates: {dir: ../../etc/ssl}\n"), "leaves the meshwright root", where="bad.yaml:10"),
    Case("certificates-dir-absolute-elsewhere", with_mesh_config("  certificates: {dir: /etc/ssl/private}\n"), "outside /etc/meshwright",
         where="certificates.dir", commands=("render",), argv=render_with("--config-dir", "/etc/meshwright/proxy")),
    Case("config-dir-under-root-with-certificates", with_mesh_config("  certificates: {}\n"), "is directly under /", where="/proxy",
         commands=("render",), argv=render_with("--config-dir", "/proxy")),
    # --- names: newlines, unicode and shell characters are not names
    Case("name-with-newline", workload(name='"extra\\nhost"'), "is not a DNS-1123 name", where="bad.yaml:4: 'WorkloadEntry/default/extra\\nhost'"),
    Case("name-with-shell", workload(name='"$(reboot)"'), "'$(reboot)' is not a DNS-1123 name"),
    Case("name-with-rtl-override", workload(name='"ex\u202etra"'), "is not a DNS-1123 name", where="ex\\u202etra"),
    Case("namespace-unicode", workload(namespace="d\u00e9fault"), "is not a DNS-1123 label"),
    Case("service-account-path", workload(account="x/ns/prod/sa/admin"), "'x/ns/prod/sa/admin' is not a DNS-1123 label"),
    Case("service-account-newline", workload(account='"front\\nend"'), "is not a DNS-1123 label", where="spec.serviceAccount"),
    Case("host-with-newline", edited_base("hosts: [reviews.default.svc.cluster.local]", 'hosts: ["reviews.default.svc.cluster.local\\n1.2.3.4 evil"]'),
         "is not a DNS name or a wildcard", where="spec.hosts[0]"),
    Case("host-with-space", edited_base("hosts: [reviews.default.svc.cluster.local]", 'hosts: ["reviews evil"]'), "is not a DNS name or a wildcard"),
    Case("access-log-into-cron", edited_base("accessLogFile: /dev/stdout", "accessLogFile: /etc/cron.d/x"), "/var/log/meshwright/", where="accessLogFile"),
    Case("label-value-newline", workload(labels='{app: "extra\\n1.2.3.4 evil"}'), "is not a label value", where="spec.labels.app"),
    Case("label-key-shell", workload(labels='{"$(id)": x}'), "'$(id)' is not a label key"),
    Case("kind-homoglyph", write_text(WORKLOAD.replace("kind: WorkloadEntry", "kind: WorkloadEntr\u0443").format(
        name="x", namespace="default", labels="{}", account="x")), "did you mean WorkloadEntry?"),
    # --- numbers and values
    Case("int-5000-digits", edited_base("ports: {http: 15106}", "ports: {http: " + "9" * 5000 + "}"), "Exceeds the limit (4300 digits)"),
    Case("int-hex-huge", edited_base("ports: {http: 15106}", "ports: {http: 0x" + "f" * 40 + "}"), "is out of range"),
    Case("float-overflow", edited_base("ports: {http: 15106}", "ports: {http: 1e999}"), "expected an integer from 1 to 65535"),
    Case("port-negative", edited_base("ports: {http: 15106}", "ports: {http: -1}"), "-1 is out of range"),
    Case("port-offset-abc", edited_base('port-offset: "100"', 'port-offset: "abc"'), "'abc' is not a port offset"),
    Case("port-offset-huge", edited_base('port-offset: "100"', 'port-offset: "99999999999999999999"'), "is not a port offset"),
    Case("port-offset-number", edited_base('port-offset: "100"', "port-offset: 1e999"), "is not a port offset"),
    Case("workload-cert-ttl-overflow", with_mesh_config("  certificates: {workloadCertTtl: 99999999999999999999999h}\n"),
         "workloadCertTtl: '99999999999999999999999h' is too long: at most 2160h (90 days, as Istio caps it)"),
    Case("workload-cert-ttl-91-days", with_mesh_config("  certificates: {workloadCertTtl: 2184h}\n"), "is too long: at most 2160h"),
    Case("timestamp-impossible-date", edited_base("labels: {app: frontend}", "labels: {app: 2001-13-45}"), "cannot read the value 2001-13-45"),
    Case("binary-tag-bad-base64", edited_base("labels: {app: frontend}", 'labels: {app: !!binary "@@@@"}'), "spec.labels.app: expected a string, got bytes"),
    Case("custom-tag", edited_base("labels: {app: frontend}", "labels: !Ref {app: frontend}"), "YAML tag !Ref is not accepted"),
    Case("nan-label", edited_base("labels: {app: frontend}", "labels: {app: .nan}"), "expected a string, got number nan"),
    Case("complex-key", edited_base("labels: {app: frontend}", "labels: {? [a, b] : c}"), "a key must be a plain value"),
    Case("duration-huge", edited_base("  - route:\n", "  - timeout: 99999999999999999999999999h\n    route:\n"), "timeout"),
    # --- bad command lines (exit 2, naming the argument)
    Case("usage-no-paths", nothing, "the following arguments are required: paths", where="meshwright validate", code=2,
         commands=("validate",), argv={"validate": ["validate"]}),
    Case("usage-unknown-command", nothing, "invalid choice: 'renderr'", where="meshwright", code=2, commands=("validate",),
         argv={"validate": ["renderr", "{case}/mesh"]}),
    Case("usage-render-no-proxy", nothing, "the following arguments are required: --proxy", where="meshwright render", code=2,
         commands=("render",), argv={"render": ["render", "--mesh", "{case}/mesh", "--out", "{case}/out"]}),
    Case("usage-unknown-proxy", nothing, "no proxy named 'nobody.default'", where="nobody.default", code=2, commands=("render",),
         argv={"render": ["render", "--envoy", "none", "--mesh", "{case}/mesh", "--proxy", "nobody.default", "--out", "{case}/out"]}),
    Case("usage-bad-format", nothing, "invalid choice: 'xml'", where="--format", code=2, commands=("render",), argv=render_with("--format", "xml")),
    Case("usage-out-is-a-file", a_file_named_out, "not a directory", where="--out", code=2, commands=("render",)),
    Case("usage-out-under-proc", nothing, "cannot write there", where="--out /proc/meshwright-out", code=2, commands=("render",),
         argv={"render": ["render", "--envoy", "none", "--mesh", "{case}/mesh", "--proxy", PROXY, "--out", "/proc/meshwright-out"]}),
    Case("usage-envoy-missing", nothing, "does not exist", where="--envoy: {case}/no-envoy", code=2,
         argv={"validate": ["validate", "--envoy", "{case}/no-envoy", "{case}/mesh"],
               "render": ["render", "--envoy", "{case}/no-envoy", "--mesh", "{case}/mesh", "--proxy", PROXY, "--out", "{case}/out"]}),
    Case("usage-envoy-not-executable", not_executable, "is not executable", where="--envoy: {case}/envoy-plain", code=2,
         argv={"validate": ["validate", "--envoy", "{case}/envoy-plain", "{case}/mesh"]}, commands=("validate",)),
    Case("usage-envoy-is-a-directory", nothing, "is not a file", where="--envoy: {case}/mesh", code=2, commands=("validate",),
         argv={"validate": ["validate", "--envoy", "{case}/mesh", "{case}/mesh"]}),
    Case("usage-envoy-hangs", hanging_envoy, "did not finish `--mode validate` within 2 s", where="--envoy: {case}/envoy-hangs", code=2,
         argv={"validate": ["validate", "--envoy", "{case}/envoy-hangs", "--envoy-timeout", "2", "{case}/mesh"],
               "render": ["render", "--envoy", "{case}/envoy-hangs", "--envoy-timeout", "2", "--mesh", "{case}/mesh", "--proxy", PROXY, "--out", "{case}/out"]}),
    Case("envoy-fails-with-garbage", failing_envoy, "envoy --mode validate rejects its config", where="frontend.default", code=1,
         argv={"render": ["render", "--envoy", "{case}/envoy-fails", "--mesh", "{case}/mesh", "--proxy", PROXY, "--out", "{case}/out"]},
         commands=("render",)),
    Case("usage-envoy-timeout-not-a-number", nothing, "'soon' is not a number of seconds", where="--envoy-timeout", code=2,
         commands=("validate",), argv={"validate": ["validate", "--envoy-timeout", "soon", "{case}/mesh"]}),
]


def write_case(case: Case, folder: str) -> None:
    """The case's folder: mesh/ with the basic mesh (base.yaml) and the case's inputs."""
    mesh = os.path.join(folder, "mesh")
    os.makedirs(mesh)
    with open(os.path.join(mesh, "base.yaml"), "w", encoding="utf-8") as handle:
        handle.write(base_text())
    case.write(mesh)


def argv_for(case: Case, command: str, folder: str) -> list[str]:
    return [arg.replace("{case}", folder) for arg in case.argv.get(command, default_argv(command))]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.bad_input.corpus DIR", file=sys.stderr)
        return 2
    for case in CASES:
        write_case(case, os.path.join(argv[0], case.name))
    print(f"{len(CASES)} cases in {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
