"""The cluster file-system guard: which mount holds a study, and never WAL on a network one."""

import sys

import pytest

from probes import fsguard

MOUNTS = r"""/dev/sda1 / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /tmp tmpfs rw,nosuid,nodev 0 0
nas01:/export/home /home nfs4 rw,relatime,vers=4.2,rsize=1048576,hard,proto=tcp 0 0
/dev/sdb1 /home/alice/local-scratch xfs rw,relatime 0 0
10.0.0.5@o2ib:/lustre /lustre lustre rw,flock,lazystatfs 0 0
//fileserver/Medical\040Images /mnt/Medical\040Images cifs rw,vers=3.1.1 0 0
/dev/sdc1 /data\040disk ext4 rw 0 0
alice@login:/studies /mnt/sshfs fuse.sshfs rw,nosuid,nodev 0 0
/dev/fuse /mnt/overlay fuse.fuse-overlayfs rw 0 0
gpfs0 /gpfs gpfs rw,relatime 0 0
/dev/sdd1 /scratch ext4 rw 0 0
nfs02:/scratch /scratch nfs rw 0 0
"""


@pytest.mark.parametrize("path, fstype, network", [
    ("/home/alice/study/study.sqlite", "nfs4", "nfs4"),
    ("/home", "nfs4", "nfs4"),
    ("/homework/study", "ext4", None),  # a mount point is a path prefix, not a string prefix
    ("/home/alice/local-scratch/study", "xfs", None),  # the longest mount point wins
    ("/tmp/study", "tmpfs", None),
    ("/lustre/project/study", "lustre", "lustre"),
    ("/mnt/Medical Images/study", "cifs", "cifs"),  # \040 is a space
    ("/data disk/study", "ext4", None),
    ("/mnt/sshfs/study", "fuse.sshfs", "fuse.sshfs"),
    ("/mnt/overlay/study", "fuse.fuse-overlayfs", None),  # FUSE, but local
    ("/gpfs/x", "gpfs", "gpfs"),
    ("/scratch/study", "nfs", "nfs"),  # mounted over /scratch's disk later: the later mount hides it
    ("/opt/study", "ext4", None),
])
def test_the_mount_holding_a_path_and_whether_it_is_shared(path, fstype, network):
    assert fsguard.filesystem_type(path, MOUNTS) == fstype
    assert fsguard.network_filesystem(path, MOUNTS) == network
    assert fsguard.journal_mode(path, MOUNTS) == ("DELETE" if network else "WAL")


def test_symbolic_links_are_followed_to_the_real_mount(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    table = f"/dev/sda1 / ext4 rw 0 0\nnas:/x {tmp_path / 'real'} nfs4 rw 0 0\n"
    assert fsguard.filesystem_type(tmp_path / "link" / "study", table) == "nfs4"
    assert fsguard.journal_mode(tmp_path / "link" / "study", table) == "DELETE"


def test_the_guard_says_what_to_do():
    mode, message = fsguard.guard("/home/alice/study/study.sqlite", mounts_text=MOUNTS)
    assert mode == "DELETE"
    assert message.startswith("the study database /home/alice/study/study.sqlite is on nfs4: SQLite's WAL")
    for words in ("one host", "rollback journaling", "its own store", "probes merge", "local disk"):
        assert words in message
    assert fsguard.guard("/opt/study/study.sqlite", mounts_text=MOUNTS) == ("WAL", None)


def test_an_empty_or_unreadable_table_is_not_a_network_file_system():
    assert fsguard.filesystem_type("/home/x", "") == "unknown"
    assert fsguard.network_filesystem("/home/x", "garbage\n\n") is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/mounts and statfs")
def test_this_machine_answers_from_its_own_mount_table(tmp_path):
    assert fsguard.filesystem_type(tmp_path) != "unknown"
    assert fsguard.statfs_magic(tmp_path) is not None
    assert fsguard.statfs_magic(tmp_path / "not" / "yet") == fsguard.statfs_magic(tmp_path)
    assert fsguard.journal_mode(tmp_path) in ("WAL", "DELETE")


def test_other_systems_never_claim_a_network_file_system(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert fsguard.network_filesystem("/home/x") is None
    assert fsguard.statfs_magic("/") is None
    assert fsguard.network_filesystem("/home/x", MOUNTS) == "nfs4"  # a given table is still read
