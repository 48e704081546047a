#!/usr/bin/env bash
# ansible-test sanity on the collection as users get it: built from this clone, installed into
# build/collections/ansible_collections/meshwright/mesh (ansible-test runs inside such a tree).
#   tools/sanity.sh VENV_BIN [ansible-test sanity options...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:?the venv bin folder}"
shift
work="$root/build/collections"
rm -rf "$work" "$root/build/collection-archive"
"$bin/ansible-galaxy" collection build --output-path "$root/build/collection-archive" "$root" >/dev/null
"$bin/ansible-galaxy" collection install --collections-path "$work" "$root"/build/collection-archive/meshwright-mesh-*.tar.gz >/dev/null
cd "$work/ansible_collections/meshwright/mesh"
# --venv: each test's own requirements in a virtualenv of ansible-test's (no Docker needed).
PATH="$bin:$PATH" "$bin/ansible-test" sanity --venv --python "$("$bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" "$@"
