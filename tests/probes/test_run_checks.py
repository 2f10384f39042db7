"""`probes run` refuses a wrong command before it creates anything or starts a kernel."""

import shutil
import sqlite3
import subprocess
import sys
import tempfile

import pytest

from probes import execute
from probes.__main__ import main
from probes.errors import ProbeError
from probes.run import run_probe

# (the flags that are wrong, what the message must say): the bad value, and the way out
BAD = {
    "no images": (["--images-per-prompt", "0"], ["--images-per-prompt 0", "at least 1"]),
    "negative images": (["--images-per-prompt", "-2"], ["--images-per-prompt -2", "at least 1"]),
    "topic typo": (["--topics", "brian,heart"],
                   ["unknown topic 'brian'", "did you mean 'brain'", "lung_cancer", "leave --topics out"]),
    "style typo": (["--styles", "xrya"], ["unknown style 'xrya'", "did you mean 'xray'", "histopathology"]),
    "detail typo": (["--detail", "shrot"], ["unknown detail 'shrot'", "did you mean 'short'", "detailed"]),
    "preset typo": (["--presets", "tiny-fats"], ["unknown preset 'tiny-fats'", "Did you mean 'tiny-fast'"]),
    "unknown preset": (["--presets", "dalle-9"], ["unknown preset 'dalle-9'", "known presets", "tiny-fast"]),
    "missing catalog": (["--catalog", "CATALOG-MISSING"], ["nope.yaml: file not found", "oncology"]),
}


def command(study, presets_file, catalog="oncology", wrong=()):
    argv = ["run", "--study", str(study), "--catalog", str(catalog), "--presets", "tiny-fast",
            "--presets-file", str(presets_file), "--styles", "xray", "--topics", "heart", "--detail", "short",
            "--images-per-prompt", "1", "--quiet"]
    for flag, value in zip(wrong[::2], wrong[1::2], strict=True):
        argv[argv.index(flag) + 1] = value
    return argv


@pytest.fixture
def no_kernel(monkeypatch):
    """Fail the test if a notebook (a kernel) is started."""
    def started(*args, **kwargs):
        raise AssertionError("a kernel was started for a command that should have been refused")

    monkeypatch.setattr(execute, "execute_notebook", started)


def test_a_shard_that_does_not_exist_is_refused_naming_the_flags(tmp_path, presets_file, capsys, no_kernel):
    study = tmp_path / "new-study"
    code = main(command(study, presets_file) + ["--num-shards", "2", "--shard-index", "5"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "shard 5 of 2 does not exist" in err and "--shard-index" in err and "--num-shards" in err
    assert not study.exists()


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_wrong_command_is_refused_before_anything_exists(case, tmp_path, presets_file, capsys, no_kernel):
    wrong, said = BAD[case]
    wrong = [str(tmp_path / "nope.yaml") if w == "CATALOG-MISSING" else w for w in wrong]
    study = tmp_path / "new-study"
    code = main(command(study, presets_file, wrong=wrong))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no traceback
    for words in said:
        assert words in err, (words, err)
    assert not study.exists()  # no study folder, so no run record and no runs/ notebook either


def runs_of(study):
    db = sqlite3.connect(study / "study.sqlite")
    try:
        return db.execute("SELECT run_id, status FROM runs ORDER BY run_id").fetchall()
    finally:
        db.close()


def test_a_wrong_command_leaves_an_existing_study_as_it_was(generated, tmp_path, presets_file, capsys, no_kernel):
    study = tmp_path / "study"
    shutil.copytree(generated, study)
    runs = runs_of(study)
    before = sorted(p.relative_to(study) for p in study.rglob("*"))
    for wrong, _ in BAD.values():
        wrong = [str(tmp_path / "nope.yaml") if w == "CATALOG-MISSING" else w for w in wrong]
        assert main(command(study, presets_file, wrong=wrong)) == 2
    capsys.readouterr()
    assert sorted(p.relative_to(study) for p in study.rglob("*")) == before  # no runs/*.ipynb, no files
    assert runs_of(study) == runs and runs  # no new run record


def test_the_python_api_refuses_the_same_inputs(tmp_path, presets_file):
    common = dict(catalog="oncology", presets=["tiny-fast"], presets_file=presets_file, progress=False)
    with pytest.raises(ProbeError, match="unknown topic 'brian' \\(did you mean 'brain'\\?\\)"):
        run_probe(tmp_path / "s", topics=["brian"], **common)
    with pytest.raises(ProbeError, match="--images-per-prompt 0: give a whole number"):
        run_probe(tmp_path / "s", images_per_prompt=0, **common)
    assert not (tmp_path / "s").exists()


def test_the_command_line_prints_one_message_and_no_traceback(tmp_path, presets_file):
    study = tmp_path / "typo"
    done = subprocess.run([sys.executable, "-m", "probes", *command(study, presets_file, wrong=["--topics", "hart"])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "unknown topic 'hart' (did you mean 'heart'?)" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not study.exists()


WATCHER = """
import os, signal, sys, time
signal.signal(signal.SIGINT, lambda *_: open(sys.argv[1], "w").write("SIGINT"))
time.sleep(60)
"""


async def _shutdown_seen_by_a_child(manager_class, tmp_path) -> bool:
    """Start a kernel, let it spawn a process in its process group, shut the kernel down: whether
    that process got the SIGINT jupyter_client sends a kernel's group before a shutdown by default."""
    import asyncio
    import os
    import signal

    flag, pidfile = tmp_path / "sigint", tmp_path / "pid"
    km = manager_class(kernel_name="python3")
    await km.start_kernel(cwd=str(tmp_path))
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=120)
        code = (f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {WATCHER!r}, {str(flag)!r}]);"
                f" open({str(pidfile)!r}, 'w').write(str(p.pid))")
        reply = await client.execute_interactive(code, timeout=60)
        assert reply["content"]["status"] == "ok"
        await asyncio.sleep(1.0)  # the watcher has set its handler
        await km.shutdown_kernel()
        await asyncio.sleep(1.0)
        return flag.exists()
    finally:
        client.stop_channels()
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_finished_kernel_is_shut_down_without_an_interrupt(tmp_path):
    """No "KeyboardInterrupt caught in kernel" at the end of a run: medprobe's kernels are not
    interrupted before a shutdown, and talk over IPC (no "running over TCP without encryption")."""
    import asyncio

    from jupyter_client import AsyncKernelManager

    sockets = tempfile.mkdtemp(prefix="mpk-", dir="/tmp")  # a Unix socket path must stay short
    ours = execute._kernel_manager_class(sockets)
    assert ours(kernel_name="python3").transport == "ipc"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert asyncio.run(_shutdown_seen_by_a_child(AsyncKernelManager, tmp_path / "a"))  # the default interrupts
    try:
        assert not asyncio.run(_shutdown_seen_by_a_child(ours, tmp_path / "b"))
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


def test_a_kernel_stopped_mid_cell_is_still_interrupted(tmp_path):
    """Ctrl-C during a run: the cell's own clean-up runs (a probe run marks itself interrupted)."""
    import asyncio

    sockets = tempfile.mkdtemp(prefix="mpk-", dir="/tmp")
    try:
        busy = execute._kernel_manager_class(sockets, busy=lambda: True)
        assert asyncio.run(_shutdown_seen_by_a_child(busy, tmp_path))
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
