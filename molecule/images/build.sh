#!/usr/bin/env bash
# Build the Molecule hosts' image: Debian bookworm with systemd as PID 1, sshd and what the
# roles need on a host (python3 with python3-cryptography; the roles' host modules use only
# the standard library), from Debian packages with mmdebstrap, imported with `docker import`.
# Nothing is pulled from an image registry.
#
# The tag carries a hash of this script (the recipe): an image with the same recipe is not
# built again. Prints the image name on stdout (progress goes to stderr):
#   IMAGE=$(molecule/images/build.sh)
# Needs root (or a user in the docker group with unshare allowed), mmdebstrap and Docker.
set -euo pipefail

SUITE=bookworm
PACKAGES=(
  systemd systemd-sysv dbus
  python3 python3-cryptography
  openssh-server sudo
  iproute2 iptables procps curl ca-certificates logrotate
)

here="$(cd "$(dirname "$0")" && pwd)"
recipe="$(sha256sum "$here/build.sh" | cut -c1-12)"
image="meshwright/debian-systemd:$SUITE-$recipe"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "image $image exists (same recipe): not rebuilt" >&2
  echo "$image"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$SECONDS
echo "building $image with mmdebstrap ($SUITE: ${PACKAGES[*]})" >&2

# The customize hooks run on the finished tree ("$1"):
# - an empty machine-id: systemd makes a new one at each boot, so no two hosts share one;
# - no SSH host keys in the image: each container makes its own before sshd starts;
# - units that cannot work in an unprivileged container are masked (they would only mark the
#   system degraded and slow the boot).
mmdebstrap --variant=apt --quiet \
  --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --customize-hook='truncate -s 0 "$1/etc/machine-id"' \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook='mkdir -p "$1/etc/systemd/system/ssh.service.d"' \
  --customize-hook='printf "[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n" > "$1/etc/systemd/system/ssh.service.d/host-keys.conf"' \
  --customize-hook='for unit in getty@tty1.service console-getty.service systemd-remount-fs.service sys-kernel-debug.mount sys-kernel-tracing.mount systemd-firstboot.service; do ln -sf /dev/null "$1/etc/systemd/system/$unit"; done' \
  "$SUITE" "$work/rootfs.tar"

docker import \
  --change 'CMD ["/sbin/init"]' \
  --change 'ENV container=docker' \
  --message "meshwright Molecule host, recipe $recipe" \
  "$work/rootfs.tar" "$image" >/dev/null
echo "built $image in $((SECONDS - started)) s" >&2
# Images of older recipes are of no use any more.
docker image ls --format '{{.Repository}}:{{.Tag}}' meshwright/debian-systemd \
  | grep -vxF "$image" | xargs -r docker image rm >/dev/null || true
echo "$image"
