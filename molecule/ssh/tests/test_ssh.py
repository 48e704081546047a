"""The ssh scenario reaches its hosts the way a deploy reaches real VMs: SSH with a key as an
unprivileged user, root through sudo (the shared checks in test_deploy.py then run the same way)."""

from __future__ import annotations


def test_logged_in_over_ssh_with_a_key_as_deploy(host):
    """sshd accepted the deploy user's public key (no docker exec behind the deploy or the tests)."""
    journal = host.check_output("journalctl -u ssh --no-pager")
    assert "Accepted publickey for deploy" in journal


def test_root_through_sudo(host):
    """Commands run as root only through sudo from the deploy user (ansible_become)."""
    assert host.user().name == "root"
    assert host.check_output("printenv SUDO_USER") == "deploy"
    assert host.file("/etc/sudoers.d/deploy").mode == 0o440
