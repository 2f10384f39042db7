"""Which file system holds a study, and whether SQLite's WAL is safe there.

SQLite's write-ahead log keeps its index in a shared-memory file (``-shm``) that every
connection maps: all of them must be on one host. On a network or cluster file system (NFS,
Lustre, GPFS, SMB, CephFS, ...) two hosts writing the same database through WAL can corrupt
it, and the POSIX locks rollback journaling relies on are themselves only as good as the
file system's lock manager. So on such a file system medprobe never uses WAL: the study
database falls back to rollback journaling (``DELETE``), every cluster job writes into its
own shard store, and ``probes merge`` folds the shards in from one host.

The file system is read from the mount table (``/proc/mounts``: the longest mount point
that holds the resolved path), and on Linux also from ``statfs``'s magic number, which
still answers where the mount table is hidden or unreadable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
from pathlib import Path

MOUNTS = "/proc/mounts"

# fstype names (as /proc/mounts spells them) of file systems shared between hosts
NETWORK_FSTYPES = frozenset({
    "nfs", "nfs3", "nfs4", "lustre", "gpfs", "cifs", "smb", "smb2", "smb3", "smbfs", "beegfs",
    "ceph", "glusterfs", "9p", "afs", "openafs", "ncpfs", "coda", "pvfs2", "orangefs", "ocfs2",
    "gfs2", "panfs", "wekafs", "cvfs", "davfs", "vboxsf", "prl_fs", "vmhgfs",
})
# FUSE file systems whose files live on other hosts (a local FUSE overlay is not one of them)
NETWORK_FUSE = frozenset({
    "sshfs", "glusterfs", "ceph", "cephfs", "ceph-fuse", "s3fs", "rclone", "gcsfuse", "goofys",
    "juicefs", "davfs", "lizardfs", "moosefs", "mfs", "mfsmount", "beegfs", "cvmfs", "blobfuse",
    "blobfuse2", "objectivefs", "seaweedfs", "alluxio-fuse", "lustre", "gpfs", "vmhgfs-fuse",
})
# statfs f_type magic numbers (linux/magic.h and the vendors' headers) of network file systems
NETWORK_MAGIC = {
    0x6969: "nfs", 0x517B: "smbfs", 0xFF534D42: "cifs", 0xFE534D42: "smb3", 0x0BD00BD0: "lustre",
    0x47504653: "gpfs", 0x00C36400: "ceph", 0x01021997: "9p", 0x5346414F: "afs", 0x19830326: "beegfs",
    0x73757245: "coda", 0x564C: "ncpfs", 0x7461636F: "ocfs2", 0x01161970: "gfs2", 0xAAD7AAEA: "panfs",
}

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    r"""/proc/mounts writes space, tab, newline and backslash as \040, \011, \012, \134."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def read_mounts(mounts_text: str | None = None) -> list[tuple[str, str, str]]:
    """(device, mount point, fstype) per line of a mount table, in mount order."""
    if mounts_text is None:
        try:
            mounts_text = Path(MOUNTS).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
    mounts = []
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            mounts.append((_unescape(fields[0]), _unescape(fields[1]), fields[2]))
    return mounts


def _holds(mount_point: str, path: str) -> bool:
    if mount_point == "/":
        return path.startswith("/")
    mount_point = mount_point.rstrip("/")
    return path == mount_point or path.startswith(mount_point + "/")


def filesystem_type(path: str | os.PathLike, mounts_text: str | None = None) -> str:
    """The fstype of the mount holding ``path`` ("ext4", "nfs4", ...), or "unknown".

    The path is resolved first (symbolic links followed; it need not exist yet), then the
    longest mount point holding it wins; of two mounts on one point, the later one (it hides
    the earlier).
    """
    resolved = str(Path(path).expanduser().resolve())
    best, best_length = "unknown", -1
    for _device, mount_point, fstype in read_mounts(mounts_text):
        length = len(mount_point.rstrip("/"))
        if _holds(mount_point, resolved) and length >= best_length:
            best, best_length = fstype, length
    return best


def is_network_fstype(fstype: str) -> bool:
    """Whether an fstype name is a network or cluster file system."""
    fstype = fstype.lower()
    if fstype.startswith("fuse."):
        return fstype[5:] in NETWORK_FUSE
    return fstype in NETWORK_FSTYPES


def statfs_magic(path: str | os.PathLike) -> int | None:
    """statfs(2)'s f_type for ``path`` (its nearest existing parent), on Linux; else None."""
    if not sys.platform.startswith("linux"):
        return None
    path = Path(path).expanduser().resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    buffer = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if libc.statfs(os.fsencode(str(path)), buffer) != 0:
        return None
    # f_type is the first member, a word (long) wide; stored sign-extended for magics >= 2**31
    return ctypes.c_ulong.from_buffer(buffer).value & 0xFFFFFFFF


def network_filesystem(path: str | os.PathLike, mounts_text: str | None = None) -> str | None:
    """The fstype of ``path``'s file system when it is shared between hosts, else None.

    With ``mounts_text`` (a mount table's text) only that table is read; without it, the
    system's table and, on Linux, statfs's magic number (FUSE is not told apart by it: a
    FUSE mount is judged by its name in the table). None on systems other than Linux, unless
    a table is given.
    """
    if mounts_text is None and not sys.platform.startswith("linux"):
        return None
    fstype = filesystem_type(path, mounts_text)
    if is_network_fstype(fstype):
        return fstype
    if mounts_text is None:
        return NETWORK_MAGIC.get(statfs_magic(path))
    return None


def journal_mode(path: str | os.PathLike, mounts_text: str | None = None) -> str:
    """SQLite journal mode for a database at ``path``: "WAL", or "DELETE" on a network file system."""
    return "DELETE" if network_filesystem(path, mounts_text) else "WAL"


def guard_message(path: str | os.PathLike, fstype: str, what: str = "the study database") -> str:
    """What a user should know when ``what`` at ``path`` lies on network file system ``fstype``."""
    return (f"{what} {path} is on {fstype}: SQLite's WAL needs every writer on one host and network "
            "file locking is unreliable; medprobe uses rollback journaling there and writes each shard "
            "into its own store (probes merge folds them in); run the rating app from a local disk or "
            "one server")


def guard(path: str | os.PathLike, what: str = "the study database",
          mounts_text: str | None = None) -> tuple[str, str | None]:
    """(journal mode, message or None) for a database at ``path``: one call for connect()."""
    fstype = network_filesystem(path, mounts_text)
    if fstype is None:
        return "WAL", None
    return "DELETE", guard_message(path, fstype, what)
