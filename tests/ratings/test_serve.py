"""`make rate` / `python -m ratings serve`: the server's settings a hospital's IT department checks."""

import subprocess
from importlib.metadata import version

import tomllib
from conftest import ratings_cli
from packaging.version import Version

from ratings.serve import AUDIT_HEADERS, voila_args

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_voila_serves_with_its_token_culling_and_no_tracebacks():
    args = voila_args(port=9000, base_path="medprobe")
    assert "--token" in args and "--show_tracebacks=False" in args and "--Voila.ip=127.0.0.1" in args
    assert "--MappingKernelManager.cull_idle_timeout=900" in args and "--MappingKernelManager.cull_interval=60" in args
    assert "--Voila.base_url=/medprobe/" in args and "--port=9000" in args
    assert [a.split("=")[1] for a in args if a.startswith("--VoilaConfiguration.http_header_envs")] == AUDIT_HEADERS
    assert not any("JUPYTER_TOKEN" in a or a.startswith("--token=") for a in args)  # never in `ps`
    assert "--token" not in voila_args(token=False)
    assert "--Voila.port_retries=0" in args  # --port or a clear failure, never a silent other port
    assert not any(a.startswith("--RatingServer.public_url") for a in args)
    public = voila_args(public_url="https://rating.example.org/medprobe/")
    assert "--RatingServer.public_url=https://rating.example.org/medprobe/" in public


def test_make_rate_runs_the_serve_command():
    dry = subprocess.run(["make", "-n", "-o", ".venv/.installed", "rate", "STUDY=s", "BASE_PATH=/m/"], cwd=ROOT,
                         capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "-m ratings serve --study \"s\"" in dry.stdout and "--base-path=/m/" in dry.stdout


def test_voila_is_pinned_past_cve_2024_30265():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.replace(" ", "").startswith("voila>=0.5.6") for d in deps)
    assert Version(version("voila")) >= Version("0.5.6")


def test_serve_refuses_what_would_open_the_page_to_the_network(tmp_path):
    missing = ratings_cli("serve", "--study", str(tmp_path))
    assert missing.returncode != 0 and "not a study folder" in missing.stderr
    (tmp_path / "study.sqlite").write_bytes(b"")
    open_page = ratings_cli("serve", "--study", str(tmp_path), "--no-token", "--host", "0.0.0.0")
    assert open_page.returncode != 0 and "without the token anyone" in open_page.stderr
    bad_url = ratings_cli("serve", "--study", str(tmp_path), "--public-url", "rating.example.org")
    assert bad_url.returncode != 0 and "--public-url 'rating.example.org'" in bad_url.stderr
    assert "Traceback" not in bad_url.stderr


def test_serve_runs_voila_behind_the_gate_with_the_proxy_it_trusts(tmp_path, monkeypatch):
    import ratings.serve as serve_module

    (tmp_path / "study.sqlite").write_bytes(b"")
    ran = {}
    monkeypatch.setattr(serve_module.os, "execvpe", lambda path, argv, env: ran.update(argv=argv, env=env))
    monkeypatch.setenv("JUPYTER_TOKEN", "t")
    serve_module.serve(tmp_path, trusted_proxies=["127.0.0.1", "10.0.0.0/24"], max_kernels=12)
    argv = ran["argv"]
    assert argv[1:3] == ["-m", serve_module.SERVER_MODULE] and serve_module.SERVER_MODULE == "ratings.gate"
    assert "--RatingServer.trusted_proxies=127.0.0.1/32" in argv and "--RatingServer.trusted_proxies=10.0.0.0/24" in argv
    assert "--RatingServer.max_kernels=12" in argv and ran["env"]["MEDPROBE_STUDY"] == str(tmp_path.resolve())
    # the kernel gets the address the gate found, never the proxy headers as the browser sent them
    assert "X-Forwarded-For" not in AUDIT_HEADERS and "X-Real-IP" not in AUDIT_HEADERS
    assert not any(a.startswith("--RatingServer.trusted_proxies") for a in voila_args())


def test_make_rate_passes_the_trusted_proxy():
    dry = subprocess.run(["make", "-n", "-o", ".venv/.installed", "rate", "STUDY=s", "TRUSTED_PROXY=127.0.0.1"],
                         cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0 and "--trusted-proxy=127.0.0.1" in dry.stdout, dry.stderr
