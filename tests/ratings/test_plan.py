"""The locked analysis plan (``python -m ratings plan``), and ``analyze`` following it.

A plan is written into the study with its SHA-256 (of the canonical JSON it prints), replaced
freely until the study's first export or analysis and amended only with a reason after it,
every write in the audit trail; ``analyze`` takes the options not given from the plan and
lists each one given that differs, or "analysed without the plan" with --no-plan.
"""

import hashlib
import json
import shutil
import sqlite3

import pytest

from probes import execute
from ratings import db, plan
from ratings.__main__ import ANALYZE_DEFAULTS, main
from ratings.access import actor, audit_table
from ratings.analysis import report
from ratings.session import build_sessions


@pytest.fixture(scope="module")
def rated(generated, tmp_path_factory):
    """The session's generated study (x-ray, histopathology, poster; 2 presets, 6 panels), two
    raters, every panel answered, one flagged."""
    base = tmp_path_factory.mktemp("plan")
    shutil.copytree(generated, base / "study")
    build_sessions(base / "study", "A,B")
    conn = db.open_db(base / "study")
    for rater in ("A", "B"):
        for seq in range(len(db.assignments(conn, rater))):
            db.save_answer(conn, rater, seq, {"style": 2 + seq % 2, "content": 1}, nonsensical=seq == 0 and rater == "A")
    conn.close()
    return base / "study"


@pytest.fixture
def study(rated, tmp_path):
    target = tmp_path / "study"
    shutil.copytree(rated, target)
    return target


@pytest.fixture
def notebook(monkeypatch):
    """``analyze`` without a kernel: the parameters the notebook would have been given."""
    runs = []

    def executed(name, output, parameters, progress=True):
        assert json.loads(json.dumps(parameters)) == parameters  # papermill parameters are JSON
        runs.append(parameters)
        output.write_text("{}")
        return output

    monkeypatch.setattr(execute, "execute_notebook", executed)
    monkeypatch.setattr(report, "notebook_to_html", lambda notebook, path: path.write_text("<html></html>"))
    return runs


def rows(study):
    conn = sqlite3.connect(study / "study.sqlite")
    try:
        return conn.execute("SELECT kind, sha256, reason, document FROM analysis_plans ORDER BY plan_id").fetchall()
    finally:
        conn.close()


def events(study, *names):
    table = audit_table(study)
    return table[table["event"].isin(names)]


def printed_document(out: str) -> tuple[str, str]:
    """The canonical JSON line and the SHA-256 that ``plan`` printed."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Plan document (canonical JSON"))
    sha = next(line.split(": ")[1] for line in lines if line.startswith("SHA-256: "))
    return lines[start + 1], sha


def test_the_plan_is_written_with_the_sha256_of_the_json_it_prints(study, capsys):
    assert main(["plan", "--study", str(study), "--alpha", "0.01"]) == 0
    out, err = capsys.readouterr()
    document, sha = printed_document(out)
    assert hashlib.sha256(document.encode("utf-8")).hexdigest() == sha
    assert json.loads(document) == json.loads(rows(study)[0][3]) and rows(study)[0][:2] == ("plan", sha)
    found = plan.current_plan(study)
    assert found.registered.sha256 == sha and found.amendments == ()
    assert found.options == {**plan.default_options(), "alpha": 0.01}  # the rest: protocol.analyze's defaults
    parsed = json.loads(document)
    assert parsed["study"]["styles"] == [{"style": "histopathology", "group": "microscopy"},
                                         {"style": "poster", "group": "other"}, {"style": "xray", "group": "radiology"}]
    assert parsed["study"]["presets"] == ["tiny-fast", "tiny-fast-b"] and parsed["study"]["raters"] == ["A", "B"]
    assert parsed["family"]["pairs_per_dimension"] == 3 and parsed["radiology"]["pairs"] == [
        ["xray", "histopathology"], ["xray", "poster"]]
    assert {"medprobe", "numpy", "pandas", "scipy", "statsmodels", "commit"} <= set(parsed["software"])
    # what a registry gets: the sections in words, the date and who wrote it
    for words in ("1. Questions and estimands", "Firth-penalised logistic", "each rater's own unflagged answers",
                  "intersection-union", "--alpha 0.01", f"by {actor()}", f"Date: {found.registered.date}"):
        assert words in out, words
    assert "wrote the analysis plan: sha256 " + sha in err
    logged = events(study, "plan")
    assert len(logged) == 1 and logged["actor"].iloc[0] == actor()
    assert json.loads(logged["detail"].iloc[0])["sha256"] == sha


def test_the_plan_is_replaced_before_the_first_export_and_locked_after_it(study, tmp_path, capsys):
    assert main(["plan", "--study", str(study)]) == 0
    assert main(["plan", "--study", str(study), "--alpha", "0.01"]) == 0  # nothing unblinded yet
    assert [r[0] for r in rows(study)] == ["plan", "replacement"]
    assert plan.current_plan(study).registered.kind == "replacement"
    assert main(["export", "--study", str(study), "-o", str(tmp_path / "tidy.csv")]) == 0
    capsys.readouterr()
    before = (rows(study), len(audit_table(study)))
    assert main(["plan", "--study", str(study), "--alpha", "0.02"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {study}: the analysis plan is locked") and "first export" in err
    assert "nothing was changed" in err and f'--study {study} --alpha 0.02 --amend "why"' in err
    assert (rows(study), len(audit_table(study))) == before


def test_an_amendment_is_dated_with_its_reason_and_the_original_stays(study, tmp_path, capsys):
    assert main(["plan", "--study", str(study)]) == 0
    assert main(["export", "--study", str(study), "-o", str(tmp_path / "tidy.csv")]) == 0
    original = rows(study)[0]
    assert main(["plan", "--study", str(study), "--n-boot", "500", "--amend", "bootstrap  too slow"]) == 0
    out = capsys.readouterr().out
    assert rows(study)[0] == original and [r[0] for r in rows(study)] == ["plan", "amendment"]
    found = plan.current_plan(study)
    assert found.registered.sha256 == original[1] and found.options["n_boot"] == 500
    (amendment,) = found.amendments
    assert amendment.reason == "bootstrap too slow" and amendment.sha256 == rows(study)[1][1]
    assert "Amendments:" in out and "bootstrap too slow" in out
    assert list(audit_table(study)["event"]) == ["plan", "export", "plan_amendment"]
    detail = json.loads(events(study, "plan_amendment")["detail"].iloc[0])
    assert detail["reason"] == "bootstrap too slow" and detail["previous"] == original[1]
    assert detail["sha256"] == amendment.sha256


def test_an_amendment_that_changes_nothing_is_refused_and_the_same_plan_writes_nothing(study, capsys):
    assert main(["plan", "--study", str(study), "--alpha", "0.01"]) == 0
    assert main(["plan", "--study", str(study), "--alpha", "0.01", "--amend", "again"]) == 2
    assert "nothing to amend" in capsys.readouterr().err
    assert main(["plan", "--study", str(study)]) == 0  # the options not given stay the plan's
    assert "unchanged; nothing was written" in capsys.readouterr().err
    assert main(["plan", "--study", str(study), "--amend", "x"]) == 2
    assert len(rows(study)) == 1 and len(events(study, "plan", "plan_amendment")) == 1


def test_analyze_follows_the_plan_and_names_each_deviation(study, tmp_path, notebook, capsys):
    assert main(["plan", "--study", str(study), "--alpha", "0.01", "--n-boot", "50", "--nonsensical", "lowest"]) == 0
    registered = plan.current_plan(study).registered
    assert main(["analyze", "--study", str(study), "--out", str(tmp_path / "a")]) == 0
    given = notebook[-1]
    assert (given["alpha"], given["n_boot"], given["nonsensical"]) == (0.01, 50, "lowest")
    assert given["plan"]["sha256"] == registered.sha256 and given["plan"]["deviations"] == []
    assert given["plan"]["date"] == registered.date and given["plan"]["amendments"] == []
    statement = f"Analysed as planned (plan {registered.sha256[:12]}, registered {registered.date}; no amendments)."
    assert given["plan"]["statement"] == statement and statement in capsys.readouterr().out
    analysis = json.loads(events(study, "analysis")["detail"].iloc[-1])
    assert analysis["plan"] == registered.sha256

    assert main(["analyze", "--study", str(study), "--out", str(tmp_path / "b"), "--alpha", "0.05",
                 "--n-boot", "50", "--raters", "A"]) == 0
    given = notebook[-1]
    assert (given["alpha"], given["n_boot"], given["nonsensical"]) == (0.05, 50, "lowest")
    assert given["plan"]["deviations"] == ["--alpha 0.05 instead of the plan's 0.01",
                                           "--raters A: only these raters' answers (the plan analyses every rater's)"]
    assert given["plan"]["statement"].startswith(f"Deviations from the plan (plan {registered.sha256[:12]}")
    assert given["plan"]["statement"].endswith("--alpha 0.05 instead of the plan's 0.01; --raters A: only these "
                                               "raters' answers (the plan analyses every rater's).")
    assert json.loads(events(study, "analysis")["detail"].iloc[-1])["deviations"] == given["plan"]["deviations"]


def test_analyze_without_the_plan_is_a_deviation(study, tmp_path, notebook):
    assert main(["plan", "--study", str(study), "--alpha", "0.01"]) == 0
    assert main(["analyze", "--study", str(study), "--out", str(tmp_path / "a"), "--no-plan"]) == 0
    given = notebook[-1]
    assert {k: given[k] for k in ANALYZE_DEFAULTS} == ANALYZE_DEFAULTS  # the plan's alpha is not used
    deviations = given["plan"]["deviations"]
    assert deviations[0] == "analysed without the plan (--no-plan)"
    assert "--alpha 0.05 instead of the plan's 0.01" in deviations  # and each other option that differs
    assert given["plan"]["statement"].startswith("Deviations from the plan")


def test_an_amended_plan_is_what_analyze_follows(study, tmp_path, notebook):
    assert main(["plan", "--study", str(study), "--alpha", "0.01"]) == 0
    assert main(["export", "--study", str(study), "-o", str(tmp_path / "tidy.csv")]) == 0
    assert main(["plan", "--study", str(study), "--seed", "7", "--amend", "the seed of the registry form"]) == 0
    amendment = plan.current_plan(study).amendments[0]
    assert main(["analyze", "--study", str(study), "--out", str(tmp_path / "a")]) == 0
    given = notebook[-1]
    assert (given["alpha"], given["seed"]) == (0.01, 7)
    assert given["plan"]["amendments"] == [{"sha256": amendment.sha256, "date": amendment.date,
                                            "reason": "the seed of the registry form"}]
    assert f'amendments: {amendment.sha256[:12]} of {amendment.date}, "the seed of the registry form"' in \
        given["plan"]["statement"]


def test_without_a_plan_analyze_keeps_its_defaults_and_says_so(study, tmp_path, notebook, capsys):
    assert main(["analyze", "--study", str(study), "--out", str(tmp_path / "a"), "--seed", "3"]) == 0
    given = notebook[-1]
    assert given["plan"] is None and {k: given[k] for k in ANALYZE_DEFAULTS} == {**ANALYZE_DEFAULTS, "seed": 3}
    assert "has no analysis plan" in capsys.readouterr().err
    assert plan.plan_statement(given["plan"]) == "Analysed without a registered analysis plan."


def test_a_plan_written_after_the_first_export_says_so(study, tmp_path, notebook):
    assert main(["export", "--study", str(study), "-o", str(tmp_path / "tidy.csv")]) == 0
    assert main(["plan", "--study", str(study)]) == 0
    assert main(["analyze", "--study", str(study), "--out", str(tmp_path / "a")]) == 0
    assert notebook[-1]["plan"]["unblinded_before"] is not None
    assert "written after the study's first export or analysis" in notebook[-1]["plan"]["statement"]


def test_show_prints_the_plan_and_changes_nothing(study, capsys):
    assert main(["plan", "--study", str(study), "--show"]) == 2
    assert "no analysis plan yet" in capsys.readouterr().err
    assert main(["plan", "--study", str(study)]) == 0
    written = capsys.readouterr().out
    before = len(audit_table(study))
    assert main(["plan", "--study", str(study), "--show"]) == 0
    assert capsys.readouterr().out == written and len(audit_table(study)) == before
    assert main(["plan", "--study", str(study), "--show", "--alpha", "0.01"]) == 2
    assert "give it alone" in capsys.readouterr().err


def test_a_folder_that_is_not_a_study_is_refused_before_anything_is_written(tmp_path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    assert main(["plan", "--study", str(folder)]) == 2
    assert "not a study folder" in capsys.readouterr().err and list(folder.iterdir()) == []
    assert main(["plan", "--study", str(tmp_path / "missing")]) == 2
    assert "no such study folder" in capsys.readouterr().err and not (tmp_path / "missing").exists()


def test_a_linked_study_database_is_refused(study, tmp_path, capsys):
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "study.sqlite").symlink_to(study / "study.sqlite")
    assert main(["plan", "--study", str(linked)]) == 2
    assert "is a symbolic link" in capsys.readouterr().err and rows(study) == []


def test_a_read_only_study_says_so_and_nothing_is_written(study, monkeypatch, capsys):
    from probes import store

    real_connect = store.connect  # tests run as root: open the file the way SQLite opens a read-only one
    monkeypatch.setattr(db, "connect", lambda path, **kw: real_connect(path, **{**kw, "readonly": True}))
    assert main(["plan", "--study", str(study)]) == 2
    err = capsys.readouterr().err
    assert "read-only" in err and "nothing was changed" in err
    monkeypatch.undo()
    assert rows(study) == [] and len(events(study, "plan")) == 0


def test_the_stored_plans_cannot_be_changed_or_removed(study):
    assert main(["plan", "--study", str(study)]) == 0
    conn = sqlite3.connect(study / "study.sqlite")
    try:
        for statement in ("UPDATE analysis_plans SET reason = 'x'", "DELETE FROM analysis_plans"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
    finally:
        conn.close()
    assert len(rows(study)) == 1


def test_every_docstring_example_of_the_plan_module_runs():
    import doctest

    finder, runner = doctest.DocTestFinder(exclude_empty=True), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(plan, plan.__name__, globs=vars(plan).copy()):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 10 and result.failed == 0


def test_the_report_says_it_followed_the_plan(study, tmp_path, capsys):
    """Through the real notebook: the plan's hash and date in methods.md and in the report a reader sees."""
    from html.parser import HTMLParser

    assert main(["plan", "--study", str(study), "--n-boot", "0"]) == 0  # a quick analysis, planned so
    planned = plan.current_plan(study).latest
    out = tmp_path / "report"
    assert main(["analyze", "--study", str(study), "--out", str(out), "--quiet"]) == 0
    sentence = f"Analysed as planned (plan {planned.sha256[:12]}"
    assert sentence in (out / "methods.md").read_text()

    class Text(HTMLParser):
        parts: list = []

        def handle_data(self, data):
            self.parts.append(data)

    reader = Text()
    reader.feed((out / "report.html").read_text())
    assert sentence in " ".join(" ".join(reader.parts).split())
