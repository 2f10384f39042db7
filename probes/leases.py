"""Which process runs a run, and which run is making which panel.

A run records its process (pid, host, and a token that tells a reused pid from the original)
in ``runs``; before it makes a panel it claims it in ``panel_leases`` (one row per prompt,
preset and study seed), inside ``BEGIN IMMEDIATE`` so two runs cannot both win. A second run
on the same study skips panels a live run holds, and makes the rest.

A run whose process is gone (killed, out of memory, machine rebooted) is marked
``interrupted`` and its leases are freed. On this machine that is known at once from its
pid; for a run recorded by another host it is assumed only once its lease has expired
(:data:`LEASE_SECONDS` after its last claim), because its process cannot be checked from here.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from functools import lru_cache

# Long enough for a slow panel (full-size GLIDE on a CPU), short enough that panels held by
# a crashed run on another host are made by someone else the same day.
LEASE_SECONDS = 3600.0


@lru_cache(maxsize=1)
def _pid_namespace() -> str:
    """Processes in other containers share the hostname but not the pid numbering."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def start_ticks(pid: int) -> str | None:
    """When a process started (Linux, in clock ticks since boot); None where /proc is absent.

    Together with the pid this names one process: a pid reused by a later process has a
    later start time. A zombie (exited, not yet reaped) counts as gone.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return "zombie" if fields[0] in ("Z", "X") else fields[19]


def this_process() -> dict:
    """pid, host and process token of the calling process, as stored in ``runs``."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "process": f"{_pid_namespace()}:{start_ticks(pid)}"}


def process_alive(pid: int, token: str | None) -> bool:
    """Whether the process recorded as (pid, token) on this machine still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process with this pid: it exists
    except OSError:
        return True  # cannot tell: never declare a run dead on a guess
    if token:
        _, _, ticks = token.rpartition(":")
        now_ticks = start_ticks(pid)
        if now_ticks == "zombie" or (ticks not in ("", "None") and now_ticks not in (None, ticks)):
            return False
    return True


def same_machine(host: str | None, token: str | None) -> bool:
    """Whether a run recorded with ``host`` and process token ``token`` ran on this machine (and in
    this PID namespace), so that its process can be looked up here."""
    me = this_process()
    return host == me["host"] and (token or "").rpartition(":")[0] == _pid_namespace()


def run_alive(row: sqlite3.Row) -> bool:
    """Whether a ``runs`` row with status running belongs to a live process."""
    if row["host"] is None:  # recorded before runs kept their process: judge by age alone
        return row["age"] is not None and row["age"] < LEASE_SECONDS
    if same_machine(row["host"], row["process"]):
        return process_alive(int(row["pid"]), row["process"])
    return row["expires_at"] is not None and row["expires_at"] > time.time()


_RUNNING = ("SELECT run_id, pid, host, process, expires_at, "
            "(julianday('now') - julianday(started_at)) * 86400.0 AS age FROM runs "
            "WHERE status = 'running'")


def running_runs(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """The ``runs`` rows whose status is running (alive or not: see :func:`run_alive`)."""
    return conn.execute(_RUNNING).fetchall()


def mark_interrupted(conn: sqlite3.Connection, stamp: str, only: str | None = None) -> list[str]:
    """Mark running runs whose process is gone as interrupted and free their leases.

    Call inside a write transaction. ``only`` limits the check to one run. Returns their ids.
    """
    sql, args = (_RUNNING + " AND run_id = ?", (only,)) if only else (_RUNNING, ())
    gone = [row["run_id"] for row in conn.execute(sql, args).fetchall() if not run_alive(row)]
    for run_id in gone:
        conn.execute("UPDATE runs SET status = 'interrupted', finished_at = ? WHERE run_id = ?", (stamp, run_id))
        conn.execute("DELETE FROM panel_leases WHERE run_id = ?", (run_id,))
    return gone


def lease_holder(conn: sqlite3.Connection, key: tuple[str, str, int], run_id: str, stamp: str) -> str | None:
    """The other live run holding the panel ``key``, or None when this run may take it.

    Call inside a write transaction. A lease of a run that is gone is freed on the way.
    """
    row = conn.execute("SELECT run_id, expires_at FROM panel_leases WHERE prompt_id = ? AND preset = ? "
                       "AND study_seed = ?", key).fetchone()
    if row is None or row["run_id"] == run_id:
        return None
    holder = row["run_id"]
    run = conn.execute(_RUNNING + " AND run_id = ?", (holder,)).fetchone()
    if run is None:
        return None  # left behind by a run that has ended
    if not run_alive(run):
        mark_interrupted(conn, stamp, only=holder)
        return None
    if same_machine(run["host"], run["process"]):
        return holder  # its process is alive, however long its panel takes
    return holder if row["expires_at"] > time.time() else None


def take(conn: sqlite3.Connection, key: tuple[str, str, int], run_id: str) -> None:
    """Hold the panel ``key`` for ``run_id`` (call inside a write transaction)."""
    me = this_process()
    expires = time.time() + LEASE_SECONDS
    conn.execute("INSERT OR REPLACE INTO panel_leases (prompt_id, preset, study_seed, run_id, pid, host, "
                 "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)", (*key, run_id, me["pid"], me["host"], expires))
    conn.execute("UPDATE runs SET expires_at = ? WHERE run_id = ?", (expires, run_id))
