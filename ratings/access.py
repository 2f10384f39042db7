"""Who may rate: personal rater links, revocation, and the study's audit trail.

A study coordinator runs ``python -m ratings invite --study DIR --raters A,B,C``: each rater
gets a link ``<base-url>?key=<key>``, printed once. The base URL is the ``--base-url`` given,
else the address ``ratings serve`` recorded in the study when it started (:func:`record_address`:
its host, port and base path, or its ``--public-url``); the link is the rater's only login
(:mod:`ratings.gate` lets a working key through Voilà's token login). The key is ``<key_id>.<secret>``: the
key_id (public, 40 bits) finds the rater's row, the secret (192 bits from :mod:`secrets`) is
stored only as its scrypt hash with a random salt, and compared with
:func:`hmac.compare_digest` (constant time). Nobody, not even someone holding a copy of the
study database, can turn the database into a working link.

Once a study has invitations, the rating app admits a rater only by a valid key: there is no
list of raters, no typed id and no ``?rater=``. ``ratings revoke`` stops a key at once (an
open page of that rater goes blank at its next click), ``ratings invite --rotate`` revokes and
issues a new one. Everything that decides who rated what goes to the append-only ``audit``
table: invitations, rotations, revocations, logins, refused keys, rate limits, exports, analyses,
analysis plans and their amendments; each answer row carries the app session it was given in
(:func:`audit_table`, ``python -m ratings audit``).
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import hmac
import json
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pandas as pd

from probes.store import now, transaction

from .db import get_config, open_db, raters, set_config
from .errors import RatingError
from .session import rater_id

KEY_PARAM = "key"
ADDRESS_CONFIG = "served_address"  # rating_config: where `ratings serve` last served the study
# scrypt at n=2**14, r=8: 16 MiB and ~50 ms a check, once per login; the 192-bit secret is what
# makes guessing hopeless, the slow hash is for a database copy that leaves the hospital
SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "dklen": 32}
MAX_FAILURES = 10  # failed keys from one app session (or one client address) ...
FAILURE_WINDOW_S = 15 * 60  # ... within this window: further keys are not checked until it passes
EVENTS = ("invite", "rotate", "revoke", "login", "login_refused", "rate_limited", "revoked_session",
          "export", "practice_export", "analysis", "plan", "plan_amendment")  # plan events: ratings.plan, in its own transaction
_DUMMY_SALT = bytes(16)


@dataclass(frozen=True)
class Invitation:
    rater: str
    key: str  # the whole secret key, shown once
    link: str


@dataclass(frozen=True)
class Admission:
    rater: str
    key_id: str


@dataclass(frozen=True)
class Client:
    """What the app knows of the browser: the User-Agent and, behind a proxy, the address it reported."""
    user_agent: str | None = None
    address: str | None = None


def actor() -> str:
    """Who runs a command, for the audit trail: the OS account and the host."""
    try:
        user = getpass.getuser()
    except Exception:  # no name for this uid (containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


# --- keys -----------------------------------------------------------------------------------

def _new_key() -> tuple[str, str, str]:
    key_id, secret = secrets.token_hex(5), secrets.token_urlsafe(24)
    return key_id, secret, f"{key_id}.{secret}"


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$<salt hex>$<hash hex>`` of a key's secret, with a fresh salt unless given."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, **SCRYPT)
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${salt.hex()}${digest.hex()}"


def _secret_matches(secret: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = bytes.fromhex(digest)
        given = hashlib.scrypt(secret.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                               dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(given, expected)


def link(base_url: str, key: str) -> str:
    """``base_url`` with ``key=<key>`` added to its query (other parameters kept)."""
    parts = urlsplit(base_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != KEY_PARAM]
    return urlunsplit(parts._replace(query=urlencode([*query, (KEY_PARAM, key)])))


def check_base_url(base_url: str, flag: str = "--base-url") -> str:
    """``base_url`` as links use it (its path ends with /: the app is served at its base path
    itself), or a :class:`RatingError` naming ``flag`` when it is not an http(s) address."""
    parts = urlsplit(str(base_url).strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RatingError(f"{flag} {base_url!r}: give the address raters open, e.g. "
                          "https://rating.hospital.org/medprobe/ (http://127.0.0.1:8866/ for a local test)")
    if not parts.path.endswith("/"):
        parts = parts._replace(path=parts.path + "/")
    return urlunsplit(parts)


def record_address(conn, url: str, host: str, port: int, base_path: str) -> None:
    """Record in the study the address raters open (``ratings serve`` calls it once listening)."""
    set_config(conn, ADDRESS_CONFIG, {"url": check_base_url(url), "host": host, "port": int(port),
                                      "base_path": base_path, "recorded_at": now()})


def recorded_address(conn) -> dict | None:
    """What :func:`record_address` last wrote: url, host, port, base_path, recorded_at; or None."""
    return get_config(conn, ADDRESS_CONFIG)


def links_base(conn, base_url: str | None) -> str:
    """The address links are built on: ``base_url`` when given, else the one ``ratings serve``
    recorded; with neither, a :class:`RatingError` saying what to give."""
    if base_url:
        return check_base_url(base_url)
    recorded = recorded_address(conn)
    if recorded and recorded.get("url"):
        return recorded["url"]
    raise RatingError("the address raters open is not known yet: start the server first (python -m ratings "
                      "serve --study DIR, which records its address in the study), or give it, e.g. --base-url "
                      "https://rating.hospital.org/medprobe/ (http://127.0.0.1:8866/ for a local test); no link "
                      "was issued")


def invited(conn) -> bool:
    """Whether the study admits raters by key only (any key ever issued, even if revoked since)."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM rater_keys)").fetchone()[0] == 1


@dataclass(frozen=True)
class Verdict:
    """What a key check found. ``reason`` and ``owner`` are for the audit trail only: the page
    says the same one sentence whatever the reason."""
    admitted: Admission | None
    reason: str  # admitted, no key, malformed, unknown key, wrong secret, revoked
    key_id: str | None = None
    owner: str | None = None  # whose key_id it was, when it was one


def check_key(conn, key: str | None) -> Verdict:
    """Whether a key admits a rater, and which.

    The work is the same whichever way a key fails (an unknown key_id is hashed against a dummy
    salt), and the hashes are compared in constant time, so the answer's timing says nothing.
    """
    key = (key or "").strip()
    key_id, _, secret = key.partition(".")
    row = None
    well_formed = bool(key_id and secret and len(key) < 200)
    if well_formed:
        row = conn.execute("SELECT rater, key_hash, revoked_at FROM rater_keys WHERE key_id = ?",
                           (key_id,)).fetchone()
    stored = row["key_hash"] if row is not None else _dummy_hash()
    matches = _secret_matches(secret, stored)  # one scrypt, whichever way the key fails
    if not key:
        return Verdict(None, "no key")
    if not well_formed:
        return Verdict(None, "malformed")
    if row is None:
        return Verdict(None, "unknown key", key_id)
    if not matches:
        return Verdict(None, "wrong secret", key_id, row["rater"])
    if row["revoked_at"] is not None:
        return Verdict(None, "revoked", key_id, row["rater"])
    return Verdict(Admission(row["rater"], key_id), "admitted", key_id, row["rater"])


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """What a key that finds no row is checked against, so that it costs what a real check costs."""
    return hash_secret("", _DUMMY_SALT)


def key_active(conn, key_id: str) -> bool:
    row = conn.execute("SELECT revoked_at FROM rater_keys WHERE key_id = ?", (key_id,)).fetchone()
    return row is not None and row["revoked_at"] is None


def _check_raters(conn, names) -> list[str]:
    wanted = [rater_id(r) for r in names]
    known = set(raters(conn))
    unknown = [r for r in wanted if r not in known]
    if unknown:
        raise RatingError(f"no rater {unknown[0]!r} in this study (its raters: {', '.join(sorted(known)) or 'none'}); "
                          f"give them panels first: python -m ratings build --study DIR --raters {unknown[0]}")
    return list(dict.fromkeys(wanted))


def _split_raters(rater_ids) -> list[str]:
    names = [r.strip() for r in rater_ids.split(",")] if isinstance(rater_ids, str) else list(rater_ids)
    names = [r for r in names if r]
    if not names:
        raise RatingError("no raters given; name them, e.g. --raters A,B,C")
    return names


def invite(study: str | Path, rater_ids, *, rotate: bool = False, base_url: str | None = None,
           by: str | None = None) -> list[Invitation]:
    """Issue a key (and its link) to each rater; with ``rotate`` their working key is revoked first.

    Links are built on ``base_url``, else on the address ``ratings serve`` recorded
    (:func:`links_base`). A rater who already holds a working key is refused without ``rotate``,
    so a second link never appears by accident. All raters, and the address, are checked before
    anything is written.
    """
    if base_url:
        base_url = check_base_url(base_url)
    names = _split_raters(rater_ids)
    by = by or actor()
    conn = open_db(study)
    try:
        base_url = links_base(conn, base_url)
        wanted = _check_raters(conn, names)
        invitations = []
        with transaction(conn):
            for rater in wanted:
                working = conn.execute("SELECT key_id, created_at FROM rater_keys WHERE rater = ? AND revoked_at "
                                       "IS NULL ORDER BY created_at", (rater,)).fetchall()
                if working and not rotate:
                    raise RatingError(
                        f"rater {rater!r} already has a working link (issued {working[-1]['created_at']}); nothing "
                        "was changed. Give --rotate to issue a new one (the old link stops working), or "
                        f"`python -m ratings revoke --rater {rater}` to stop it.")
                stamp = now()
                for old in working:
                    conn.execute("UPDATE rater_keys SET revoked_at = ?, revoked_by = ? WHERE key_id = ?",
                                 (stamp, by, old["key_id"]))
                key_id, secret, key = _new_key()
                conn.execute("INSERT INTO rater_keys (key_id, rater, key_hash, created_at, created_by) "
                             "VALUES (?, ?, ?, ?, ?)", (key_id, rater, hash_secret(secret), stamp, by))
                detail = {"key_id": key_id, **({"revoked": [o["key_id"] for o in working]} if working else {})}
                _insert_event(conn, "rotate" if working else "invite", rater=rater, actor=by, detail=detail)
                invitations.append(Invitation(rater, key, link(base_url, key)))
    finally:
        conn.close()
    return invitations


def revoke(study: str | Path, rater_ids, by: str | None = None) -> dict[str, int]:
    """Revoke every working key of each rater: rater -> keys revoked. Their open pages go blank."""
    names = _split_raters(rater_ids)
    by = by or actor()
    conn = open_db(study)
    try:
        wanted = _check_raters(conn, names)
        done = {}
        with transaction(conn):
            for rater in wanted:
                working = [r["key_id"] for r in conn.execute(
                    "SELECT key_id FROM rater_keys WHERE rater = ? AND revoked_at IS NULL", (rater,))]
                if not working:
                    raise RatingError(f"rater {rater!r} has no working link to revoke; nothing was changed")
                conn.executemany("UPDATE rater_keys SET revoked_at = ?, revoked_by = ? WHERE key_id = ?",
                                 [(now(), by, k) for k in working])
                _insert_event(conn, "revoke", rater=rater, actor=by, detail={"key_ids": working})
                done[rater] = len(working)
    finally:
        conn.close()
    return done


def keys_table(study: str | Path) -> pd.DataFrame:
    """Every key ever issued (never the secret): rater, key_id, created, revoked."""
    conn = open_db(study, readonly=True)
    try:
        return pd.read_sql_query("SELECT rater, key_id, created_at, created_by, revoked_at, revoked_by "
                                 "FROM rater_keys ORDER BY created_at, rowid", conn)
    finally:
        conn.close()


# --- audit ----------------------------------------------------------------------------------

def _insert_event(conn, event: str, rater=None, session=None, client: Client | None = None, actor=None,
                  detail=None) -> None:
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    client = client or Client()
    conn.execute("INSERT INTO audit (at, event, rater, session, user_agent, client, actor, detail) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (now(), event, rater, session, client.user_agent, client.address, actor,
                  json.dumps(detail or {}, sort_keys=True)))


def record(conn, event: str, rater=None, session=None, client: Client | None = None, actor=None,
           detail=None) -> None:
    """Append one audit event, committed before returning."""
    with transaction(conn):
        _insert_event(conn, event, rater, session, client, actor, detail)


def record_in_study(study: str | Path, event: str, detail: dict) -> bool:
    """An audit event from a command (export, analysis); False where the study cannot be written
    (a read-only copy: the command still runs, and says its event went unrecorded)."""
    try:
        conn = open_db(study)
    except Exception:
        return False
    try:
        record(conn, event, actor=actor(), detail=detail)
        return True
    except Exception:
        return False
    finally:
        conn.close()


def recent_failures(conn, session: str, address: str | None) -> int:
    """Refused keys within FAILURE_WINDOW_S from this app session, or from this client address."""
    since = _ago(FAILURE_WINDOW_S)
    where, args = "session = ?", [session]
    if address:
        where, args = "(session = ? OR client = ?)", [session, address]
    return conn.execute(f"SELECT COUNT(*) FROM audit WHERE event = 'login_refused' AND at >= ? AND {where}",
                        [since, *args]).fetchone()[0]


def _ago(seconds: float) -> str:
    import time
    t = time.time() - seconds
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


AUDIT_COLUMNS = ["at", "event", "rater", "session", "user_agent", "client", "actor", "detail"]


def utc_stamp(text: str) -> str:
    """A date or time the user typed (UTC), as the audit trail writes times: "2026-11-23" is
    "2026-11-23T00:00:00.000Z". Anything that is not a date raises :class:`RatingError`."""
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise RatingError(f"--since {text!r} is not a date or time; give a UTC date such as 2026-11-23, or a "
                          "time such as 2026-11-23T14:00") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def audit_table(study: str | Path, rater: str | None = None, since: str | None = None,
                answers: bool = False) -> pd.DataFrame:
    """The audit trail, oldest first; with ``answers``, one row per saved answer too (event
    ``answer``: rater, panel number, session, and the user agent of that session's login)."""
    conn = open_db(study, readonly=True)
    try:
        where, args = [], []
        if rater:
            where.append("rater = ?")
            args.append(rater)
        if since:
            where.append("at >= ?")
            args.append(utc_stamp(since))
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        table = pd.read_sql_query(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit {clause}ORDER BY audit_id",
                                  conn, params=args)
        if answers:
            rclause = clause.replace("at >=", "rated_at >=")
            rows = pd.read_sql_query(
                "SELECT r.rated_at AS at, 'answer' AS event, r.rater, r.session, "
                "(SELECT user_agent FROM audit a WHERE a.session = r.session AND a.event = 'login' LIMIT 1) "
                "AS user_agent, (SELECT client FROM audit a WHERE a.session = r.session AND a.event = 'login' "
                "LIMIT 1) AS client, NULL AS actor, json_object('rating_id', r.rating_id, 'panel_number', "
                f"r.seq + 1) AS detail FROM ratings r {rclause}ORDER BY r.rating_id", conn, params=args)
            table = pd.concat([table, rows], ignore_index=True).sort_values("at", kind="stable",
                                                                           ignore_index=True)
    finally:
        conn.close()
    return table[AUDIT_COLUMNS]
