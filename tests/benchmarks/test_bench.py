"""`make bench` (benchmarks/cpu.py): it runs and reports every row. No timings are asserted:
benchmarks are not timed tests; the figures are read by people, on a quiet machine."""

import subprocess
import sys

import pytest
from conftest import ROOT

from benchmarks import cpu as bench

SCRIPT = ROOT / "benchmarks" / "cpu.py"
TARGETS = {"1b": "<= 1.05", "3": "< 1 s", "4a": "lost = 0", "4b": "< 2 s", "5a": "< 5 s"}


@pytest.mark.slow
def test_quick_run_prints_a_line_for_every_row_with_its_target():
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--rows", "1,2,3,4,5", "--threads", "1"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    table = run.stdout.split("\n\nrow ", 1)[1]  # the table comes after the progress lines
    lines = {line.split()[0]: line for line in ("row " + table).splitlines() if line.strip()}
    for row in ("1a", "1b", "2a", "3a", "3b", "4a", "4b", "5a", "5b"):
        assert row in lines, f"row {row} is missing:\n{run.stdout}"
        assert "error:" not in lines[row], lines[row]
    assert "2b" in lines  # GLIDE: measured, or 'not run' with the reason
    for row, target in TARGETS.items():
        assert any(key.startswith(row) and target in line for key, line in lines.items()), (row, target)
    assert "MISSED" in run.stdout or "all targets met" in run.stdout
    assert "6" not in lines  # only the rows asked for


def test_markdown_section_is_replaced_and_other_sections_are_kept(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## GPU benchmarks\n\ngpu table\n\n## CPU benchmarks\n\nold table\n\n"
                   "## CPU performance fixes\n\nbefore/after\n")
    results = [{"row": 3, "what": "resume check", "measured": "12 ms", "target": "< 1 s", "ok": True, "note": "a|b"},
               {"row": 6, "what": "app", "measured": "not run: benchmarks/app_latency.py missing", "target": "report",
                "ok": None, "note": ""}]
    args = type("Args", (), {"threads": 2, "quick": True})()
    bench.write_markdown(doc, results, bench.machine(), args, ("0.1 0.2 0.3", "0.4 0.5 0.6"))
    text = doc.read_text()
    assert "old table" not in text and text.count("## CPU benchmarks") == 1
    assert "gpu table" in text and "## CPU performance fixes\n\nbefore/after" in text
    assert "| 3 | resume check | 12 ms | < 1 s | ok | a\\|b |" in text
    assert "torch threads: 2" in text and "--quick run" in text
    bench.write_markdown(tmp_path / "new.md", results, bench.machine(), args, ("0", "0"))
    assert (tmp_path / "new.md").read_text().startswith("# Benchmarks\n\n## CPU benchmarks")


def test_missing_app_latency_module_is_reported_not_run(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "__file__", str(tmp_path / "cpu.py"))  # a folder without app_latency.py
    row = bench.row_app_latency(quick=True)
    assert row["measured"] == "not run: benchmarks/app_latency.py missing" and row["ok"] is None


def test_rows_option_refuses_unknown_rows():
    assert bench.parse_rows("3,1") == [1, 3]
    with pytest.raises(SystemExit, match="rows are 1-7"):
        bench.parse_rows("8")
