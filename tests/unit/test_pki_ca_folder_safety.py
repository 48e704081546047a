"""The CA folder against an attacker and an unlucky operator: site names that are paths,
expired or ageing intermediates, writes interrupted halfway, two runs at once, and
intermediates that could sign another trust domain's identities."""

from __future__ import annotations

import datetime
import multiprocessing
import os
import time

import pytest
from cryptography import x509

from meshwright.pki import ca, csr, workload
from meshwright.pki import ca_folder as ca_folder_module
from meshwright.pki.ca_folder import CaError, CaFolder, permitted_trust_domains
from meshwright.pki.folder_lock import LOCK_FILE, FolderLocked, folder_lock, folder_read_lock

NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)
DAY = datetime.timedelta(days=1)
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"


def folder_at(path, now=NOW, **options) -> CaFolder:
    return CaFolder(str(path), now=now, **options)


@pytest.fixture
def made(tmp_path):
    path = tmp_path / "ca"
    folder_at(path).ensure("cluster.local", ["site-a"])
    return path


# --- item 10: site names are DNS-1123 labels, never paths ---------------------------------

@pytest.mark.parametrize("site", ["../root", "../../x", "a/b", "Site", "site\n", "", ".hidden", "-a"])
def test_a_site_that_is_not_a_label_is_refused_and_nothing_is_written(tmp_path, made, site):
    before = sorted(os.walk(made))
    for call in (lambda f: f.ensure("cluster.local", [site]), lambda f: f.intermediate(site),
                 lambda f: f.rotate_intermediates([site]), lambda f: f.switch_root([site])):
        with pytest.raises(CaError) as error:
            call(folder_at(made))
        assert f"site {site!r}: a site (intermediate) name must be a DNS-1123 label" in str(error.value)
    assert sorted(os.walk(made)) == before
    assert not (tmp_path / "x").exists()


def test_the_root_key_cannot_be_reached_as_a_site(made):
    """'../root' named <ca>/intermediates/../root, the root itself: it signed workloads."""
    with pytest.raises(CaError, match="site '../root'"):
        folder_at(made).intermediate("../root")


# --- item 11: intermediates renewed at two thirds of life; no signing past a parent's expiry -----

def test_an_intermediate_is_renewed_at_two_thirds_of_its_life_and_when_expired(made):
    first = folder_at(made).intermediate("site-a").certificate
    life = first.not_valid_after_utc - first.not_valid_before_utc
    not_yet = folder_at(made, now=first.not_valid_before_utc + life * 2 / 3 - DAY).ensure("cluster.local", ["site-a"])
    assert not not_yet.changed
    due = folder_at(made, now=first.not_valid_before_utc + life * 2 / 3 + DAY).ensure("cluster.local", ["site-a"])
    assert due.actions == [f"renew intermediate CA 'site-a' (past two thirds of its life ({(first.not_valid_before_utc + life * 2 / 3).isoformat()}); "
                           "its workloads renew their certificates)"]
    renewed = folder_at(made).intermediate("site-a").certificate
    assert renewed.serial_number != first.serial_number
    later = first.not_valid_after_utc + DAY
    expired = folder_at(made, now=renewed.not_valid_after_utc + DAY)
    with pytest.raises(CaError, match="cannot sign: it expired on"):
        expired.intermediate("site-a")
    changes = expired.ensure("cluster.local", ["site-a"])  # regenerate: never, and still renewed
    assert changes.actions[0].startswith("renew intermediate CA 'site-a' (it expired on")
    assert folder_at(made, now=later + 800 * DAY).intermediate("site-a").certificate.not_valid_after_utc > later


def test_nothing_is_signed_past_the_issuer_or_its_root(tmp_path):
    root = ca.make_root("cluster.local", lifetime=10 * DAY, now=NOW)
    site = ca.make_intermediate(root, "site-a", now=NOW)  # asks for 730 days, capped at the root's 10
    assert site.certificate.not_valid_after_utc == root.certificate.not_valid_after_utc
    key = csr.make_private_key()
    chain = workload.sign_csr(csr.make_csr(key, CLIENT_ID), CLIENT_ID, site, lifetime=30 * DAY, now=NOW)
    assert x509.load_pem_x509_certificate(chain).not_valid_after_utc == root.certificate.not_valid_after_utc
    with pytest.raises(ca.AuthorityExpired, match=r"cannot sign: it expired on"):
        workload.sign_csr(csr.make_csr(key, CLIENT_ID), CLIENT_ID, site, now=NOW + 11 * DAY)
    with pytest.raises(ca.AuthorityExpired, match=r"cannot sign: it expired on"):
        ca.make_intermediate(root, "site-b", now=NOW + 11 * DAY)


# --- item 13: a new folder renamed into place ------------------------------------------------

def test_an_interrupted_replacement_keeps_the_old_pair(made, monkeypatch):
    before = folder_at(made).intermediate("site-a").certificate
    real_write = ca_folder_module._write_file

    def die_on_the_certificate(path, content, mode):
        if path.endswith("cert.pem"):
            raise KeyboardInterrupt("interrupted")
        real_write(path, content, mode)

    monkeypatch.setattr(ca_folder_module, "_write_file", die_on_the_certificate)
    with pytest.raises(KeyboardInterrupt):
        folder_at(made).rotate_intermediates(["site-a"])
    monkeypatch.undo()
    # The key was written (into the new folder only); the pair in place is the old one, whole.
    assert folder_at(made).intermediate("site-a").certificate == before
    assert sorted(os.listdir(made / "intermediates")) == ["site-a"]


def test_a_replacement_stopped_between_its_renames_reads_the_old_pair_and_resumes(made, monkeypatch):
    before = folder_at(made).intermediate("site-a").certificate
    real_replace = os.replace
    calls = []

    def stop_after_moving_the_old_aside(source, target):
        calls.append(target)
        real_replace(source, target)
        if target.endswith(".site-a.replaced"):
            raise KeyboardInterrupt("interrupted")

    monkeypatch.setattr(ca_folder_module.os, "replace", stop_after_moving_the_old_aside)
    with pytest.raises(KeyboardInterrupt):
        folder_at(made).rotate_intermediates(["site-a"])
    monkeypatch.undo()
    assert not (made / "intermediates" / "site-a").exists()
    assert folder_at(made).intermediate_names() == ["site-a"]
    assert folder_at(made).intermediate("site-a").certificate == before
    folder_at(made).rotate_intermediates(["site-a"])
    assert sorted(os.listdir(made / "intermediates")) == ["site-a"]
    assert folder_at(made).intermediate("site-a").certificate != before


# --- item 12: one run at a time --------------------------------------------------------------

def _hold(folder, ready, release):
    with folder_lock(folder):
        ready.set()
        release.wait(30)


def test_a_second_run_waits_then_fails_naming_the_holder(made):
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold, args=(str(made), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        started = time.monotonic()
        with pytest.raises(CaError) as error:
            with folder_at(made).locked(timeout=0.5):
                pass
        assert 0.5 <= time.monotonic() - started < 5
        assert f"is locked by another meshwright run (pid {holder.pid} on " in str(error.value)
        assert "waited 0.5 s" in str(error.value)
    finally:
        release.set()
        holder.join(30)
    with folder_at(made).locked(timeout=0.5):  # released when its holder is done
        assert os.stat(made / LOCK_FILE).st_mode & 0o777 == 0o600


def test_check_mode_waits_for_a_writer_shares_with_readers_and_changes_nothing(made, tmp_path):
    with folder_lock(str(made)):
        note = (made / LOCK_FILE).read_bytes()
        with pytest.raises(CaError, match="is locked by another meshwright run"):
            with folder_at(made, check_mode=True).locked(timeout=0.2):
                pass
    with folder_at(made, check_mode=True).locked(timeout=0.2), folder_read_lock(str(made), timeout=0.2):
        pass  # readers do not wait for each other
    assert (made / LOCK_FILE).read_bytes() == note
    with folder_at(tmp_path / "none", check_mode=True).locked(timeout=0.2):
        pass
    assert not (tmp_path / "none").exists()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold, args=(str(tmp_path), ready, release))
    holder.start()
    assert ready.wait(30)
    holder.kill()
    holder.join(30)
    with folder_lock(str(tmp_path), timeout=1):
        pass


def test_a_lock_file_that_is_a_link_is_refused_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    os.symlink(target, tmp_path / LOCK_FILE)
    with pytest.raises(FolderLocked, match=f"cannot take the lock {tmp_path / LOCK_FILE}: "):
        with folder_lock(str(tmp_path), timeout=0.2):
            pass
    assert not target.exists()


def test_the_lock_is_held_for_the_whole_block(tmp_path):
    with folder_lock(str(tmp_path)):
        with pytest.raises(FolderLocked):
            with folder_lock(str(tmp_path), timeout=0.2):
                pass


# --- item 23: intermediates sign only their trust domain's identities --------------------------

def test_intermediates_are_limited_to_the_trust_domain(made):
    folder = folder_at(made)
    assert permitted_trust_domains(folder.intermediate("site-a").certificate) == ["cluster.local"]
    folder.rotate_intermediates(["site-a"], "cluster.local")
    assert permitted_trust_domains(folder_at(made).intermediate("site-a").certificate) == ["cluster.local"]


def test_an_intermediate_without_name_constraints_is_reissued_with_them(tmp_path):
    path = tmp_path / "ca"
    folder = folder_at(path)
    folder.ensure("cluster.local", [])
    root = folder.root()
    old = ca.make_intermediate(root, "site-a", now=NOW)  # as meshwright made them before
    folder.import_intermediate("site-a", ca.certificate_pem(old.certificate), old.key_pem())
    changes = folder_at(path).ensure("cluster.local", ["site-a"])
    assert changes.actions == ["renew intermediate CA 'site-a' (it is not limited to trust domain 'cluster.local' by name constraints; "
                               "its workloads renew their certificates)"]
    assert permitted_trust_domains(folder_at(path).intermediate("site-a").certificate) == ["cluster.local"]
    assert not folder_at(path).ensure("cluster.local", ["site-a"]).changed
