"""benchmarks/gpu.py (`python -m benchmarks.gpu`), the GPU benchmark, smoke-run on CPU: it runs
unattended and writes its section.

No timing is asserted: on a CPU the figures mean nothing. Stable Diffusion runs its full-size
architecture (860 M-parameter UNet, VAE, CLIP text encoder) at 64 px and 2 steps in a
subprocess, as a user runs it. GLIDE runs in-process with tiny options, because glide-text2im
ties each layout to its image size and one full-size GLIDE panel takes minutes on a CPU. SDXL
and FLUX.1 [schnell] run the same code path at tiny scale (``--scale tiny``: the configs of
probes.generators.tiny_families), because their full-size models need a GPU (FLUX alone is
67 GB in float32); the full-size configs (benchmarks/architectures/*.yaml, SD v1's too) are
checked by parameter counts on the meta device.
"""

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import gpu, gpu_measure, gpu_models, gpu_report
from probes.errors import ProbeError
from probes.generators import create_generator

ROOT = Path(__file__).resolve().parents[2]
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
    """The benchmark tables' rows by (model, dtype, side), each as its list of cells."""
    header = "| " + " | ".join(gpu_report.COLUMNS) + " |"
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines and lines[0] == header
    rows = {}
    for line in lines[1:]:
        if line == header:  # one table per model block
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == len(gpu_report.COLUMNS), line
        rows[tuple(cells[:3])] = cells
    return rows


def gpu_section(text: str) -> str:
    assert text.count(gpu_report.START) == 1 and text.count(gpu_report.END) == 1
    return text[text.index(gpu_report.START):text.index(gpu_report.END)]


def check_measured(rows: dict, expected: set) -> None:
    assert set(rows) == expected
    for cells in rows.values():
        row = dict(zip(gpu_report.COLUMNS, cells, strict=True))
        assert row["note"] == "", row  # no failed, skipped or cut-short rows
        assert float(row["s / panel"]) > 0 and float(row["images / s"]) > 0
        assert row["peak GPU memory"] == "n/a (cpu)"
        assert float(row["denoiser TFLOP / panel"]) > 0  # FLOPs were counted
        assert row["of fp16/bf16 peak"] == "unknown"  # no GPU, no peak to compare with
        assert row["vs bare"].endswith("×") == (row["side"] == "medprobe")


@pytest.mark.slow
def test_full_size_sd_smoke_run_on_cpu_writes_table_and_replaces_only_its_section(tmp_path):
    out = tmp_path / "b.md"
    out.write_text("# Benchmarks\n\n" + OTHER + "\n" + OLD, encoding="utf-8")
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--full-size", "--steps", "2", "--size", "64",
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
        monkeypatch.setitem(gpu_models.GLIDE_OVERRIDES, key, value)
    out = tmp_path / "b.md"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny layers: 6 s on one thread, a minute on two busy cores
    try:
        code = gpu.main(["--full-size", "--steps", "2", "--models", "glide,glide-clip", "--panels",
                           "1", "--device", "cpu", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, capsys.readouterr().err[-3000:]

    expected = {(m, "fp32", side) for m in ("glide", "glide-clip") for side in ("bare", "medprobe")}
    check_measured(table_rows(capsys.readouterr().out), expected)
    section = gpu_section(out.read_text(encoding="utf-8"))
    assert "CPU smoke run, not GPU figures" in section
    assert "NOT full size" in section  # the overrides never pass for full-size figures
    assert section.count("<!-- gpu:model=glide") == 2
    assert "preset glide-clip" in section and "glide-text2im " in section
    check_measured(table_rows(section), expected)


@pytest.mark.glide
def test_a_failing_row_is_marked_and_the_rest_of_the_table_still_written(tmp_path, monkeypatch):
    pytest.importorskip("glide_text2im", reason="glide-text2im is not installed")
    for key, value in TINY_GLIDE.items():
        monkeypatch.setitem(gpu_models.GLIDE_OVERRIDES, key, value)

    def out_of_memory(self, dtype):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(gpu_models.GlideBench, "medprobe", out_of_memory)
    out = tmp_path / "b.md"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = gpu.main(["--full-size", "--steps", "2", "--models", "glide", "--panels", "1",
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
    code = gpu.main(["--full-size", "--steps", "2", "--models", "sd", "--dtypes", "fp32,fp16",
                       "--device", "cpu", "--time-limit", "0", "--out", str(out)])
    assert code == 0
    rows = table_rows(out.read_text(encoding="utf-8"))
    assert len(rows) == 4 and {cells[-1] for cells in rows.values()} == {"skipped: time limit"}


def test_cpu_without_steps_refuses_and_says_how_to_smoke_run(tmp_path, capsys):
    out = tmp_path / "b.md"
    assert gpu.main(["--full-size", "--device", "cpu", "--out", str(out)]) == 2
    assert "--steps 2 --size 64" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    ([], "pass --full-size"),
    (["--full-size", "--models", "sd,dalle"], "--models: unknown 'dalle'"),
    (["--full-size", "--dtypes", "fp8"], "--dtypes"),
    (["--full-size", "--size", "100"], "multiple of 8"),
    (["--full-size", "--steps", "1", "--models", "glide"], "at least 2 steps"),
    (["--full-size", "--dtypes", "fp16", "--models", "flux-schnell"], "flux-schnell runs only fp32,bf16"),
    (["--full-size", "--dtypes", "bf16", "--models", "sd,flux-schnell"], "sd runs only fp32,fp16"),
    (["--full-size", "--size", "1000", "--models", "flux-schnell"], "multiple of 16"),
    (["--full-size", "--scale", "tiny", "--models", "sd"], "--scale tiny applies to sdxl and flux-schnell"),
])
def test_wrong_arguments_are_one_clear_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_write_section_appends_then_replaces_between_its_markers(tmp_path):
    path = tmp_path / "docs" / "benchmarks.md"
    gpu_report.write_section(path, "first")
    gpu_report.write_section(path, "second")
    text = path.read_text(encoding="utf-8")
    assert text == f"# Benchmarks\n\n## GPU figures\n\n{gpu_report.START}\nsecond\n{gpu_report.END}\n"
    path.write_text("# Benchmarks\n\n" + OLD + "\n" + OTHER, encoding="utf-8")
    gpu_report.write_section(path, "third")
    assert path.read_text(encoding="utf-8") == (
        f"# Benchmarks\n\n## GPU figures\n\n{gpu_report.START}\nthird\n{gpu_report.END}\n\n" + OTHER)


def test_the_cpu_benchmark_rewriting_its_own_section_keeps_the_gpu_markers(tmp_path):
    """benchmarks/cpu.py replaces from its heading to the next "## " line."""
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\n## CPU benchmarks\n\nold cpu\n\n", encoding="utf-8")
    gpu_report.write_section(path, "gpu table")
    text = path.read_text(encoding="utf-8")
    cpu_end = text.index("\n## ", text.index("## CPU benchmarks"))
    assert gpu_report.START not in text[:cpu_end]  # so its replacement cannot take the marker along


# --- SDXL and FLUX.1 [schnell] -------------------------------------------------------------

TINY = ["--scale", "tiny", "--steps", "2", "--size", "32"]
# what the medprobe side may set besides the shipped preset's own settings
OVERRIDES = {"model", "steps", "size", "device", "dtype", "batch_invariant", "local_files_only"}


@contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny layers: faster on one thread than on two busy cores
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_configs_are_the_published_architectures():
    """Built on the meta device (no memory) from benchmarks/architectures/*.yaml: the parameter
    counts of the released models.

    The counts follow from the published configs (SD v1: CompVis/stable-diffusion-v1-4's; SDXL:
    generative-models sd_xl_base.yaml; FLUX: BFL's flux util.py; T5-XXL: google/t5-v1_1-xxl) and
    match the released files at two bytes a parameter: SDXL's fp16 UNet 5.14 GB, text_encoder_2
    1.39 GB; FLUX.1's bf16 transformer 23.8 GB, T5-XXL encoder 9.52 GB. FLUX.1 [dev] has 10.2 M
    more (its guidance embedder).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sd_v1 = gpu_models.architecture("sd-v1")
    with torch.device("meta"):
        sdxl = gpu_models.sdxl_components(gpu_models.architecture("sdxl"))
        flux = gpu_models.flux_components(gpu_models.architecture("flux-schnell"))
        sd = {"unet": UNet2DConditionModel(**sd_v1["unet"]), "vae": AutoencoderKL(**sd_v1["vae"]),
              "text_encoder": CLIPTextModel(CLIPTextConfig(**sd_v1["text_encoder"]))}
    published = {
        "SD v1 UNet": (sd["unet"], 859_520_964),
        "SD v1 VAE": (sd["vae"], 83_653_863),
        "SD v1 CLIP ViT-L/14 text": (sd["text_encoder"], 123_060_480),
        "SDXL UNet": (sdxl["unet"], 2_567_463_684),
        "SDXL VAE": (sdxl["vae"], 83_653_863),
        "CLIP ViT-L/14 text": (sdxl["text_encoder"], 123_060_480),
        "OpenCLIP ViT-bigG/14 text": (sdxl["text_encoder_2"], 694_659_840),
        "FLUX.1 [schnell] transformer": (flux["transformer"], 11_891_178_560),
        "FLUX.1 VAE": (flux["vae"], 83_819_683),
        "FLUX CLIP ViT-L/14 text": (flux["text_encoder"], 123_060_480),
        "T5-XXL encoder": (flux["text_encoder_2"], 4_762_310_656),
    }
    for name, (module, count) in published.items():
        assert parameters(module) == pytest.approx(count, rel=0.01), name
    assert sdxl["unet"].config.addition_embed_type == "text_time"
    assert sdxl["unet"].config.cross_attention_dim == 2048 == 768 + 1280  # both encoders' states
    assert not flux["transformer"].config.guidance_embeds  # schnell: timestep-distilled, no guidance input
    assert flux["vae"].config.latent_channels * 4 == flux["transformer"].config.in_channels  # 2 x 2 packing
    assert type(sdxl["scheduler"]).__name__ == "EulerDiscreteScheduler"
    assert type(flux["scheduler"]).__name__ == "FlowMatchEulerDiscreteScheduler"


def test_an_unknown_or_damaged_architecture_says_which_and_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(ProbeError, match="unknown architecture 'sd-v3'.*sd-v1, sdxl, flux-schnell"):
        gpu_models.architecture("sd-v3")
    (tmp_path / "sdxl.yaml").write_text("unet: {sample_size: 128}\nvae: {}\n", encoding="utf-8")
    monkeypatch.setattr(gpu_models, "ARCHITECTURES", tmp_path)
    with pytest.raises(ProbeError, match=r"sdxl.yaml: no 'text_encoder' mapping.*restore it from git"):
        gpu_models.architecture("sdxl")


def test_big_models_are_built_in_their_dtype_and_the_default_dtype_comes_back():
    """FLUX's 12 B transformer must never exist in float32 (48 GB) on the way to bfloat16."""
    configs = gpu_models.tiny_configs("flux")
    with gpu_measure.building(torch.device("cpu"), torch.bfloat16):
        parts = gpu_models.flux_components(configs)
    assert torch.get_default_dtype() == torch.float32
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        assert {p.dtype for p in parts[name].parameters()} == {torch.bfloat16}, name


@pytest.mark.filterwarnings("ignore:.*running a full-size model on CPU")
@pytest.mark.parametrize(("name", "dtype", "preset", "pipeline", "settings"), [
    ("sdxl", "fp32", "sdxl", "StableDiffusionXLPipeline",
     {"scheduler": "EulerDiscreteScheduler", "guidance_scale": 5.0, "variant": "fp16"}),
    ("flux-schnell", "fp32", "flux-1-schnell", "FluxPipeline",
     {"scheduler": "FlowMatchEulerDiscreteScheduler", "guidance_scale": 0.0, "max_sequence_length": 256}),
    ("flux-schnell", "bf16", "flux-1-schnell", "FluxPipeline",  # the GPU row's dtype, built in it
     {"scheduler": "FlowMatchEulerDiscreteScheduler", "guidance_scale": 0.0, "max_sequence_length": 256}),
])
def test_medprobe_runs_the_shipped_preset_and_equals_bare_pixel_for_pixel(
        name, dtype, preset, pipeline, settings, tmp_path, monkeypatch):
    made = []

    def spy(preset_name, **overrides):
        gen = create_generator(preset_name, **overrides)
        made.append((preset_name, overrides, gen))
        return gen

    monkeypatch.setattr(gpu_models, "create_generator", spy)
    args = gpu.parse_args(["--full-size", *TINY, "--models", name, "--device", "cpu"])
    seeds = [11, 12, 13, 14]
    calls = {"bare": 0, "medprobe": 0}
    images = {}
    with one_thread():
        b = gpu_models.BENCHES[name](name, torch.device("cpu"), tmp_path, args, [dtype])
        for side in ("bare", "medprobe"):
            if side == "medprobe":
                b.drop_bare()
            panel, (denoiser,), close = getattr(b, side)(gpu_measure.DTYPES[dtype])
            hook = denoiser.register_forward_hook(lambda *_, side=side: calls.__setitem__(side, calls[side] + 1))
            assert {p.dtype for p in denoiser.parameters()} == {gpu_measure.DTYPES[dtype]}
            out = panel(gpu_measure.PANEL, seeds)
            hook.remove()
            images[side] = [np.asarray(getattr(i, "image", i).convert("RGB")) for i in out]
            if side == "medprobe":
                (used, overrides, gen), = made
                assert used == preset and set(overrides) == OVERRIDES  # the rest is the preset's
                assert type(gen.pipe).__name__ == pipeline
                assert type(gen.pipe.scheduler).__name__ == settings["scheduler"]
                assert {k: gen.settings[k] for k in settings} == settings
                assert (gen.settings["steps"], gen.settings["size"]) == (2, 32)
            close()
        b.discard()
    assert calls == {"bare": 2, "medprobe": 2}  # one batched forward a step on each side (no CFG split)
    for bare_image, medprobe_image in zip(images["bare"], images["medprobe"], strict=True):
        assert bare_image.shape == (32, 32, 3)
        assert np.array_equal(bare_image, medprobe_image), f"{name} {dtype}: medprobe differs from bare"
    assert len({a.tobytes() for a in images["bare"]}) == 4  # four seeds, four images
    assert not (tmp_path / name).exists()  # the weight files went with the model


def test_sdxl_and_flux_rows_for_both_sides_at_tiny_scale(tmp_path, capsys):
    out = tmp_path / "b.md"
    out.write_text("# Benchmarks\n\n" + OTHER + "\n" + OLD, encoding="utf-8")
    with one_thread():
        code = gpu.main(["--full-size", *TINY, "--models", "sdxl,flux-schnell", "--panels", "1",
                           "--warmup", "0", "--device", "cpu", "--out", str(out)])
    assert code == 0, capsys.readouterr().err[-3000:]

    expected = {(m, "fp32", side) for m in ("sdxl", "flux-schnell") for side in ("bare", "medprobe")}
    check_measured(table_rows(capsys.readouterr().out), expected)
    text = out.read_text(encoding="utf-8")
    assert OTHER in text and "stale figures" not in text
    section = gpu_section(text)
    check_measured(table_rows(section), expected)
    assert "CPU smoke run, not GPU figures" in section and "NOT full size" in section
    assert "(preset sdxl)" in section and "(preset flux-1-schnell)" in section
    assert "2 Euler steps, guidance 5.0" in section and "T5 sequence 256 tokens" in section
    # the one-time costs are reported apart from the panel times
    assert section.count("One-time costs, not in *s / panel*") == 2
    assert "medprobe's SHA-256 of them" in section and "fp16 safetensors files" in section
    assert "bf16 safetensors files" in section


def test_a_run_replaces_only_its_own_models_blocks(tmp_path):
    out = tmp_path / "b.md"
    out.write_text("# Benchmarks\n\n" + OLD + "\n" + OTHER, encoding="utf-8")

    def run(models, *more):  # rows skipped at once: only the blocks are under test here
        assert gpu.main(["--full-size", "--steps", "2", "--models", models, "--device", "cpu",
                           "--time-limit", "0", "--out", str(out), *more]) == 0
        return gpu_section(out.read_text(encoding="utf-8"))

    section = run("flux-schnell")
    assert "stale figures" not in section  # text outside any model block is not kept
    section = run("sd")
    assert section.index("<!-- gpu:model=sd -->") < section.index("<!-- gpu:model=flux-schnell -->")
    section = run("sd", "--dtypes", "fp32,fp16")
    assert section.count("<!-- gpu:model=sd -->") == section.count("<!-- gpu:model=flux-schnell -->") == 1
    rows = table_rows(section)
    assert set(rows) == {("sd", d, s) for d in ("fp32", "fp16") for s in ("bare", "medprobe")} | {
        ("flux-schnell", "fp32", s) for s in ("bare", "medprobe")}
    assert section.count("How to read it") == 1
    assert OTHER in out.read_text(encoding="utf-8")


def test_a_model_whose_weights_cannot_be_built_in_time_is_skipped(tmp_path):
    out = tmp_path / "b.md"
    assert gpu.main(["--full-size", "--steps", "2", "--models", "flux-schnell", "--device", "cpu",
                       "--time-limit", "60", "--out", str(out)]) == 0
    rows = table_rows(out.read_text(encoding="utf-8"))
    assert set(rows) == {("flux-schnell", "fp32", "bare"), ("flux-schnell", "fp32", "medprobe")}
    assert all(cells[-1].startswith("skipped: time limit (building and writing the weights needs about 150 s")
               for cells in rows.values())


def test_a_row_that_cannot_finish_a_panel_in_time_is_not_started():
    """A 10-minute job killed halfway writes no table at all; a skipped row says why."""
    class Bench:
        costs = {"written": 30.0}

    mine = [gpu_measure.Row("flux-schnell", "bf16", "bare", seconds=100.0), gpu_measure.Row("flux-schnell", "bf16", "medprobe")]
    assert gpu.seconds_needed(Bench(), mine[1], mine, warmup=1) == 2 * 100 + 2 * 30
    Bench.costs["loaded bf16"] = 45.0  # once a load was timed, that is the guess
    assert gpu.seconds_needed(Bench(), mine[1], mine, warmup=0) == 100 + 45
    assert gpu.seconds_needed(Bench(), gpu_measure.Row("flux-schnell", "fp32", "bare"), mine, warmup=1) == 0
