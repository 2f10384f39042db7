"""Personal rater links: nobody rates as another rater without that rater's link.

Invitations, revocation and rotation; keys kept only as hashes and compared in constant time;
the app admitting a rater by key alone (no dropdown, no typed id, no ?rater=); one refusal
sentence whatever went wrong; the rate limit; the audit trail; and what the browser is sent.
"""

import hashlib
import hmac
import json
import os
import re
import sqlite3
import stat
from contextlib import closing

import ipywidgets as w
import pytest
from conftest import ratings_cli
from ipywidgets.widgets import widget as widget_module

from ratings import access, db
from ratings.app import CSS, LOCAL_NOTE, RATE_LIMITED_TEXT, REFUSED_TEXT, RatingApp
from ratings.errors import RatingError
from ratings.session import add_reference, build_sessions

ALPHA, BRAVO, CHARLIE = "rater-alpha-3141", "rater-bravo-2718", "rater-charlie-1618"
URL = "http://127.0.0.1:8866/"  # the address links are built on (ratings serve records one; here given)
BRAVO_NOTE = "bravo-private-note-5521"
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def invited(study):
    """A study with three raters, bravo's answers in it, and links for all three."""
    build_sessions(study, [ALPHA, BRAVO, CHARLIE], seed=2)
    with closing(db.open_db(study)) as conn:
        for seq in (0, 1):
            db.save_answer(conn, BRAVO, seq, {"style": 1, "content": 4}, comment=BRAVO_NOTE)
    keys = {i.rater: i.key for i in access.invite(study, [ALPHA, BRAVO, CHARLIE], base_url=URL)}
    return study, keys


def page_text(app) -> str:
    """Everything the app's page shows, as the HTML of its widgets."""
    def walk(widget):
        yield widget.value if isinstance(widget, w.HTML) and widget.value != CSS else ""
        for child in getattr(widget, "children", ()):
            yield from walk(child)
    return "".join(walk(app.widget))


def browser_state(widgets) -> str:
    """What the browser is sent of these widgets: their synced state, as JSON."""
    return json.dumps([widget.get_state() for widget in widgets], default=lambda b: bytes(b).hex())


def created_widgets(make):
    before = set(widget_module._instances)
    result = make()
    return result, [widget_module._instances[k] for k in set(widget_module._instances) - before]


def audit_rows(study, event=None):
    table = access.audit_table(study)
    return table if event is None else table[table.event == event]


def test_a_link_admits_exactly_its_rater_and_nobody_else_is_listed(invited):
    study, keys = invited
    app, widgets = created_widgets(lambda: RatingApp(study, key=keys[ALPHA]))
    assert app.rater == ALPHA and f"Welcome, {ALPHA}" in page_text(app)
    with closing(db.open_db(study)) as conn:
        assert [a.seq for a in app.assignments] == [a.seq for a in db.assignments(conn, ALPHA)]
    assert not any(isinstance(x, (w.Dropdown, w.Text)) and not isinstance(x, w.Password) for x in widgets)
    app.start_button.click()
    app.scores["style"].value, app.scores["content"].value = 3, 2
    app.comment.value = "alpha says"
    state = browser_state(widgets)
    for secret in (BRAVO, CHARLIE, BRAVO_NOTE, keys[BRAVO], keys[CHARLIE], keys[ALPHA].split(".")[1]):
        assert secret not in state
    assert ALPHA in state and "alpha says" in state  # the capture sees what it should
    with closing(db.open_db(study)) as conn:
        saved = db.latest_answer(conn, ALPHA, app.assignments[0].seq)
        assert saved.scores == {"style": 3, "content": 2}
        session = conn.execute("SELECT DISTINCT session FROM ratings WHERE rater = ?", (ALPHA,)).fetchall()
        assert [r[0] for r in session] == [app.session]
        assert db.verify_chain(conn) > 0


@pytest.mark.parametrize("how", ["wrong secret", "unknown key", "revoked", "rater parameter", "no key",
                                 "rater and a valid key"])
def test_every_refusal_says_the_same_sentence_and_shows_nothing_of_the_study(invited, how, monkeypatch):
    study, keys = invited
    access.revoke(study, CHARLIE)
    query = {"wrong secret": f"key={keys[ALPHA][:-2]}xx", "unknown key": "key=0123456789.abcdefghijkl",
             "revoked": f"key={keys[CHARLIE]}", "rater parameter": f"rater={ALPHA}", "no key": "",
             "rater and a valid key": f"rater={BRAVO}&key={keys[ALPHA]}"}[how]
    monkeypatch.setenv("MEDPROBE_STUDY", str(study))
    monkeypatch.setenv("QUERY_STRING", query)
    app, widgets = created_widgets(RatingApp.from_environment)
    assert app.rater is None
    shown = re.sub(r"\s*<style>.*?</style>\s*", "", page_text(app), flags=re.S)  # the page's layout, not its text
    reference = ("<h2>Image rating study</h2><div class='mp-error'>" + REFUSED_TEXT.replace("'", "&#x27;")
                 + "</div><p>If you were sent a key rather than a link, paste it here:</p>")
    assert shown == reference
    state = browser_state(widgets)
    for secret in (ALPHA, BRAVO, CHARLIE, BRAVO_NOTE, "Welcome"):
        assert secret not in state
    app.close()


def test_a_refused_attempt_is_in_the_audit_trail_with_its_reason(invited):
    study, keys = invited
    RatingApp(study, key=keys[BRAVO][:-1] + ("A" if keys[BRAVO][-1] != "A" else "B"),
              client=access.Client("Mozilla/5.0 test", "10.1.2.3"))
    RatingApp(study, rater=BRAVO)
    refused = audit_rows(study, "login_refused")
    reasons = [json.loads(d)["reason"] for d in refused.detail]
    assert reasons == ["wrong secret", "rater id given"]
    assert refused.rater.tolist()[0] == BRAVO  # whose key was tried: for the study team, never on the page
    assert refused.user_agent.tolist()[0] == "Mozilla/5.0 test" and refused.client.tolist()[0] == "10.1.2.3"


def test_keys_are_stored_only_as_salted_hashes(invited):
    study, keys = invited
    raw = b"".join(p.read_bytes() for p in study.glob("study.sqlite*"))
    for key in keys.values():
        key_id, secret = key.split(".")
        assert secret.encode() not in raw and key.encode() not in raw
        assert key_id.encode() in raw  # the public half finds the row
    with closing(sqlite3.connect(study / "study.sqlite")) as conn:
        hashes = [r[0] for r in conn.execute("SELECT key_hash FROM rater_keys")]
    assert all(h.startswith("scrypt$16384$8$1$") for h in hashes)
    assert len({h.split("$")[4] for h in hashes}) == 3  # a salt of its own for each


def test_keys_are_compared_in_constant_time_and_every_check_does_the_same_work(invited, monkeypatch):
    study, keys = invited
    access._dummy_hash()  # made once per process, before any check is timed
    compared, hashed = [], []
    real_compare, real_scrypt = hmac.compare_digest, hashlib.scrypt
    monkeypatch.setattr(access.hmac, "compare_digest", lambda a, b: compared.append(1) or real_compare(a, b))
    monkeypatch.setattr(access.hashlib, "scrypt", lambda *a, **k: hashed.append(1) or real_scrypt(*a, **k))
    with closing(db.open_db(study)) as conn:
        verdicts = [access.check_key(conn, k) for k in
                    (keys[ALPHA], keys[ALPHA][:-1] + "?", "ffffffffff." + keys[ALPHA].split(".")[1])]
    assert [v.reason for v in verdicts] == ["admitted", "wrong secret", "unknown key"]
    assert verdicts[0].admitted.rater == ALPHA
    assert compared == [1, 1, 1] and len(hashed) == 3  # one scrypt each, whichever way the key fails


def test_revoke_and_rotate(invited):
    study, keys = invited
    with closing(db.open_db(study)) as conn:
        assert access.check_key(conn, keys[ALPHA]).admitted
    with pytest.raises(RatingError, match="already has a working link.*--rotate"):
        access.invite(study, [CHARLIE, ALPHA], base_url=URL)
    with closing(db.open_db(study)) as conn:  # refused as a whole: charlie got no second key either
        assert conn.execute("SELECT COUNT(*) FROM rater_keys").fetchone()[0] == 3
    new = access.invite(study, [ALPHA], rotate=True, base_url=URL)[0]
    assert new.key != keys[ALPHA] and new.link.endswith("?key=" + new.key)
    assert access.revoke(study, BRAVO) == {BRAVO: 1}
    with closing(db.open_db(study)) as conn:
        assert access.check_key(conn, keys[ALPHA]).reason == "revoked"
        assert access.check_key(conn, new.key).admitted.rater == ALPHA
        assert access.check_key(conn, keys[BRAVO]).reason == "revoked"
        with pytest.raises(sqlite3.DatabaseError, match="stays revoked"):
            conn.execute("UPDATE rater_keys SET revoked_at = NULL")
        with pytest.raises(sqlite3.DatabaseError, match="kept"):
            conn.execute("DELETE FROM rater_keys")
    with pytest.raises(RatingError, match="no working link"):
        access.revoke(study, BRAVO)
    with pytest.raises(RatingError, match="no rater 'nobody'.*ratings build"):
        access.invite(study, ["nobody"], base_url=URL)
    events = audit_rows(study).event.tolist()
    assert events == ["invite", "invite", "invite", "rotate", "revoke"]


def test_a_revoked_rater_s_open_page_empties_at_the_next_click_and_saves_nothing(invited):
    study, keys = invited
    app = RatingApp(study, key=keys[ALPHA])
    app.start_button.click()
    app.scores["style"].value = 2
    assert app.images[0].value and app.prompt_html.value
    access.revoke(study, ALPHA)
    with closing(db.open_db(study)) as conn:
        before = conn.execute("SELECT COUNT(*) FROM ratings WHERE rater = ?", (ALPHA,)).fetchone()[0]
    app.scores["content"].value = 4  # the click after the revocation
    assert page_text(app).count(REFUSED_TEXT.split(":")[0]) == 1
    assert app.rater is None and not app.prompt_html.value and not any(i.value for i in app.images)
    assert all(b.value is None for b in app.scores.values())
    app.next_button.click()
    with closing(db.open_db(study)) as conn:
        after = conn.execute("SELECT COUNT(*) FROM ratings WHERE rater = ?", (ALPHA,)).fetchone()[0]
    assert after == before
    assert "revoked_session" in audit_rows(study).event.tolist()


def test_ten_refused_keys_from_one_session_and_it_waits(invited):
    study, keys = invited
    app = RatingApp(study)  # no key: the refusal page with its key box
    for i in range(access.MAX_FAILURES):
        app.key_text.value = f"{i:010x}.not-a-key"
        app.key_button.click()
        assert REFUSED_TEXT.split(":")[0] in page_text(app)
    app.key_text.value = "0123456789.still-not-a-key"  # a wrong key is now refused as rate limited
    app.key_button.click()
    assert app.rater is None and RATE_LIMITED_TEXT.split(":")[0] in page_text(app)
    assert len(audit_rows(study, "rate_limited")) == 1
    app.key_text.value = keys[ALPHA]  # the limit slows guessing: it never locks out the right key
    app.key_button.click()
    assert app.rater == ALPHA and RATE_LIMITED_TEXT.split(":")[0] not in page_text(app)
    assert RatingApp(study, key=keys[ALPHA]).rater == ALPHA  # another session is not held up


def test_the_limit_also_counts_one_client_address_across_sessions(invited):
    study, keys = invited
    proxy_seen = access.Client("Mozilla/5.0", "192.0.2.7")
    for i in range(access.MAX_FAILURES):
        RatingApp(study, key=f"{i:010x}.wrong", client=proxy_seen)
    guess = RatingApp(study, key="feedfacecafe.wrong", client=proxy_seen)
    assert guess.rater is None and RATE_LIMITED_TEXT.split(":")[0] in page_text(guess)
    # raters behind one hospital NAT share an address: a working link from there still opens
    assert RatingApp(study, key=keys[ALPHA], client=proxy_seen).rater == ALPHA
    fresh = RatingApp(study, key="feedfacecafe.wrong", client=access.Client("Mozilla/5.0", "192.0.2.8"))
    assert fresh.rater is None and REFUSED_TEXT.split(":")[0] in page_text(fresh)


def test_the_audit_trail_is_append_only_and_answers_name_their_session(invited):
    study, keys = invited
    app = RatingApp(study, key=keys[ALPHA], client=access.Client("Firefox/140", None))
    app.start_button.click()
    app.scores["style"].value = 1
    table = access.audit_table(study, rater=ALPHA, answers=True)
    assert table.event.tolist() == ["invite", "login", "answer"]
    answer = table.iloc[-1]
    assert answer.session == app.session and answer.user_agent == "Firefox/140"
    with closing(db.open_db(study)) as conn:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE audit SET rater = 'x'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM audit")
        # the session is part of the answer's chain hash: moving an answer to another session shows
        conn.execute("DROP TRIGGER ratings_append_only_update")
        conn.execute("UPDATE ratings SET session = 'forged' WHERE rater = ?", (ALPHA,))
        with pytest.raises(db.TamperError, match=ALPHA):
            db.verify_chain(conn)


def test_a_study_without_links_keeps_the_local_page_and_says_so(study):
    build_sessions(study, "A,B", seed=1)
    app = RatingApp(study)
    assert LOCAL_NOTE.split(",")[0] in page_text(app)
    app.login("B")
    assert app.rater == "B"
    assert access.audit_table(study).event.tolist() == ["login"]


def test_a_prompt_with_markup_is_shown_as_text(study, tmp_path):
    from PIL import Image

    files = []
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
        files.append(tmp_path / f"{i}.png")
    add_reference(study, XSS, files)
    build_sessions(study, "A", seed=1)
    key = access.invite(study, ["A"], base_url=URL)[0].key
    app = RatingApp(study, key=key)
    seq = next(i for i, a in enumerate(app.assignments) if "onerror" in db.prompt_text(app.conn, a.panel))
    app.go_to(seq)
    assert "&lt;img src=x onerror=alert(1)&gt;" in app.prompt_html.value and "<img" not in app.prompt_html.value


def test_cli_invite_revoke_audit(invited, tmp_path):
    study, _ = invited
    result = ratings_cli("invite", "--study", str(study), "--raters", ALPHA, "--rotate",
                         "--base-url", "https://rating.example.org/medprobe/")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(ALPHA) and "https://rating.example.org/medprobe/?key=" in line
    key = line.split("key=")[1]
    with closing(db.open_db(study)) as conn:
        assert access.check_key(conn, key).admitted.rater == ALPHA
    out = tmp_path / "links.csv"
    result = ratings_cli("invite", "--study", str(study), "--raters", BRAVO, "--rotate", "-o", str(out),
                         "--base-url", URL)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600 and "key=" in out.read_text()
    plain = ratings_cli("invite", "--study", str(study), "--raters", CHARLIE, "--rotate",
                        "--base-url", "http://rating.example.org/")
    assert plain.returncode == 0 and "plain http" in plain.stderr
    bad = ratings_cli("invite", "--study", str(study), "--raters", "nobody", "--base-url", URL)
    assert bad.returncode != 0 and "no rater 'nobody'" in bad.stderr and "Traceback" not in bad.stderr
    assert ratings_cli("revoke", "--study", str(study), "--rater", ALPHA).returncode == 0
    audit = ratings_cli("audit", "--study", str(study))
    assert audit.returncode == 0 and audit.stdout.count("rotate") == 3 and "revoke" in audit.stdout
    keys = ratings_cli("audit", "--study", str(study), "--keys")
    assert keys.returncode == 0 and key.split(".")[0] in keys.stdout and key.split(".")[1] not in keys.stdout


def test_invite_builds_links_on_the_address_given_else_the_one_serve_recorded_else_says_what_to_give(study):
    build_sessions(study, [ALPHA, BRAVO], seed=2)
    unknown = ratings_cli("invite", "--study", str(study), "--raters", ALPHA)
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert "not known yet" in unknown.stderr and "python -m ratings serve" in unknown.stderr
    assert "--base-url" in unknown.stderr and "no link was issued" in unknown.stderr
    with closing(db.open_db(study)) as conn:  # nothing was written
        assert conn.execute("SELECT COUNT(*) FROM rater_keys").fetchone()[0] == 0
        assert access.recorded_address(conn) is None
        access.record_address(conn, "http://rating-host:8870/medprobe/", host="0.0.0.0", port=8870,
                              base_path="/medprobe/")
    served = ratings_cli("invite", "--study", str(study), "--raters", ALPHA)
    assert served.returncode == 0, served.stderr
    assert served.stdout.split()[1].startswith("http://rating-host:8870/medprobe/?key=")
    assert "recorded" in served.stderr and "plain http" in served.stderr  # not 127.0.0.1: the warning stays
    given = access.invite(study, [BRAVO], base_url="https://rating.example.org/medprobe")[0]
    assert given.link.startswith("https://rating.example.org/medprobe/?key=")  # the base path's slash added
    with pytest.raises(RatingError, match="--base-url 'rating.example.org'"):
        access.invite(study, [BRAVO], rotate=True, base_url="rating.example.org")


def test_exports_are_audited_and_the_audit_file_is_spreadsheet_safe(invited, tmp_path):
    import csv

    study, keys = invited
    RatingApp(study, key=keys[ALPHA], client=access.Client('=HYPERLINK("http://evil.example/")', None))
    assert ratings_cli("export", "--study", str(study), "-o", str(tmp_path / "r.csv")).returncode == 0
    export = access.audit_table(study, "").query("event == 'export'")
    assert len(export) == 1 and json.loads(export.detail.iloc[0])["rows"] == 2  # bravo's two answers
    assert export.actor.iloc[0]  # who exported: the account and host
    out = tmp_path / "audit.csv"
    result = ratings_cli("audit", "--study", str(study), "-o", str(out))
    assert result.returncode == 0, result.stderr
    with open(out, newline="") as f:
        agents = [row["user_agent"] for row in csv.DictReader(f) if row["event"] == "login"]
    assert agents == ["'=HYPERLINK(\"http://evil.example/\")"]
