"""probes.bench, the GPU benchmark, smoke-run on CPU: it runs unattended and writes its section.

No timing is asserted: on a CPU the figures mean nothing. Stable Diffusion runs its full-size
architecture (860 M-parameter UNet, VAE, CLIP text encoder) at 64 px and 2 steps in a
subprocess, as a user runs it. GLIDE runs in-process with tiny options, because glide-text2im
ties each layout to its image size and one full-size GLIDE panel takes minutes on a CPU.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from probes import bench

ROOT = Path(__file__).resolve().parents[1]
OTHER = "<!-- cpu:start -->\n## CPU figures\n\nkept as it was\n<!-- cpu:end -->\n"
OLD = "## GPU figures\n\n<!-- gpu:start -->\nstale figures\n<!-- gpu:end -->\n"

TEXT = dict(text_ctx=16, xf_width=32, xf_layers=1, xf_heads=2)
TINY_GLIDE = {
    "options": dict(image_size=16, num_channels=32, channel_mult="1,2", num_res_blocks=1,
                    num_head_channels=16, attention_resolutions="8", diffusion_steps=20, **TEXT),
    "options_upsample": dict(image_size=32, num_channels=32, channel_mult="1,2,2", num_res_blocks=1,
                             num_head_channels=32, attention_resolutions="8", diffusion_steps=100,
                             **TEXT),
    "clip": dict(n_timesteps=20, image_size=16, max_text_len=16, n_embd=32, n_head_state_text=16,
                 n_head_text=2, n_xf_blocks_text=1, n_head_state_image=16, n_head_image=2,
                 n_xf_blocks_image=1),
}


def table_rows(text: str) -> dict[tuple, list[str]]:
    """The benchmark table's rows by (model, dtype, side), each as its list of cells."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines and lines[0] == "| " + " | ".join(bench.COLUMNS) + " |"
    rows = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == len(bench.COLUMNS), line
        rows[tuple(cells[:3])] = cells
    return rows


def gpu_section(text: str) -> str:
    assert text.count(bench.START) == 1 and text.count(bench.END) == 1
    return text[text.index(bench.START):text.index(bench.END)]


def check_measured(rows: dict, expected: set) -> None:
    assert set(rows) == expected
    for cells in rows.values():
        row = dict(zip(bench.COLUMNS, cells, strict=True))
        assert row["note"] == "", row  # no failed, skipped or cut-short rows
        assert float(row["s / panel"]) > 0 and float(row["images / s"]) > 0
        assert row["peak GPU memory"] == "n/a (cpu)"
        assert float(row["UNet TFLOP / panel"]) > 0  # FLOPs were counted
        assert row["of fp16/bf16 peak"] == "unknown"  # no GPU, no peak to compare with
        assert row["vs bare"].endswith("×") == (row["side"] == "medprobe")


@pytest.mark.slow
def test_full_size_sd_smoke_run_on_cpu_writes_table_and_replaces_only_its_section(tmp_path):
    out = tmp_path / "b.md"
    out.write_text("# Benchmarks\n\n" + OTHER + "\n" + OLD, encoding="utf-8")
    cmd = [sys.executable, "-m", "probes.bench", "--full-size", "--steps", "2", "--size", "64",
           "--models", "sd", "--panels", "1", "--warmup", "0", "--device", "cpu", "--out", str(out)]
    # one thread: on two shared cores it is the steadier (here: faster) choice
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]

    expected = {("sd", "fp32", "bare"), ("sd", "fp32", "medprobe")}  # CPU: fp32 only
    check_measured(table_rows(done.stdout), expected)
    text = out.read_text(encoding="utf-8")
    assert OTHER in text and "stale figures" not in text
    section = gpu_section(text)
    assert "CPU smoke run, not GPU figures" in section
    assert "UNet 859.5 M, VAE 83.7 M, CLIP ViT-L/14 text encoder 123.1 M" in section  # full size
    assert "64 px, 2 PNDM steps" in section and "torch " in section and "diffusers " in section
    check_measured(table_rows(section), expected)


@pytest.mark.slow
@pytest.mark.glide
def test_glide_cfg_and_clip_rows_for_both_sides(tmp_path, monkeypatch, capsys):
    pytest.importorskip("glide_text2im", reason="glide-text2im is not installed")
    for key, value in TINY_GLIDE.items():
        monkeypatch.setitem(bench.GLIDE_OVERRIDES, key, value)
    out = tmp_path / "b.md"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny layers: 6 s on one thread, a minute on two busy cores
    try:
        code = bench.main(["--full-size", "--steps", "2", "--models", "glide,glide-clip", "--panels",
                           "1", "--device", "cpu", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, capsys.readouterr().err[-3000:]

    expected = {(m, "fp32", side) for m in ("glide", "glide-clip") for side in ("bare", "medprobe")}
    check_measured(table_rows(capsys.readouterr().out), expected)
    section = gpu_section(out.read_text(encoding="utf-8"))
    assert "CPU smoke run, not GPU figures" in section
    assert "NOT full size" in section  # the overrides never pass for full-size figures
    assert "preset glide-clip" in section and "glide-text2im " in section
    check_measured(table_rows(section), expected)


@pytest.mark.glide
def test_a_failing_row_is_marked_and_the_rest_of_the_table_still_written(tmp_path, monkeypatch):
    pytest.importorskip("glide_text2im", reason="glide-text2im is not installed")
    for key, value in TINY_GLIDE.items():
        monkeypatch.setitem(bench.GLIDE_OVERRIDES, key, value)

    def out_of_memory(self, dtype):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(bench.GlideBench, "medprobe", out_of_memory)
    out = tmp_path / "b.md"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = bench.main(["--full-size", "--steps", "2", "--models", "glide", "--panels", "1",
                           "--warmup", "0", "--device", "cpu", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 1  # unattended runs still say that something failed
    rows = table_rows(out.read_text(encoding="utf-8"))
    assert rows[("glide", "fp32", "medprobe")][-1] == (
        "failed: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert float(rows[("glide", "fp32", "bare")][3]) > 0


def test_past_the_time_limit_rows_are_skipped_and_the_section_still_written(tmp_path):
    out = tmp_path / "b.md"
    code = bench.main(["--full-size", "--steps", "2", "--models", "sd", "--dtypes", "fp32,fp16",
                       "--device", "cpu", "--time-limit", "0", "--out", str(out)])
    assert code == 0
    rows = table_rows(out.read_text(encoding="utf-8"))
    assert len(rows) == 4 and {cells[-1] for cells in rows.values()} == {"skipped: time limit"}


def test_cpu_without_steps_refuses_and_says_how_to_smoke_run(tmp_path, capsys):
    out = tmp_path / "b.md"
    assert bench.main(["--full-size", "--device", "cpu", "--out", str(out)]) == 2
    assert "--steps 2 --size 64" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    ([], "pass --full-size"),
    (["--full-size", "--models", "sd,dalle"], "--models: unknown 'dalle'"),
    (["--full-size", "--dtypes", "fp8"], "--dtypes"),
    (["--full-size", "--size", "100"], "multiple of 8"),
    (["--full-size", "--steps", "1", "--models", "glide"], "at least 2 steps"),
])
def test_wrong_arguments_are_one_clear_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_write_section_appends_then_replaces_between_its_markers(tmp_path):
    path = tmp_path / "docs" / "benchmarks.md"
    bench.write_section(path, "first")
    bench.write_section(path, "second")
    text = path.read_text(encoding="utf-8")
    assert text == f"# Benchmarks\n\n## GPU figures\n\n{bench.START}\nsecond\n{bench.END}\n"
    path.write_text("# Benchmarks\n\n" + OLD + "\n" + OTHER, encoding="utf-8")
    bench.write_section(path, "third")
    assert path.read_text(encoding="utf-8") == (
        f"# Benchmarks\n\n## GPU figures\n\n{bench.START}\nthird\n{bench.END}\n\n" + OTHER)


def test_the_cpu_benchmark_rewriting_its_own_section_keeps_the_gpu_markers(tmp_path):
    """benchmarks/cpu.py replaces from its heading to the next "## " line."""
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\n## CPU benchmarks\n\nold cpu\n\n", encoding="utf-8")
    bench.write_section(path, "gpu table")
    text = path.read_text(encoding="utf-8")
    cpu_end = text.index("\n## ", text.index("## CPU benchmarks"))
    assert bench.START not in text[:cpu_end]  # so its replacement cannot take the marker along
