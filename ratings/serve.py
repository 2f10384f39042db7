"""Serve the rating app with Voilà, set up for clinicians on a network: ``python -m ratings serve``.

The one place the server's settings live (``make rate`` and the browser tests use them):

- A rater's personal link is their only login: :mod:`ratings.gate` lets a working key through,
  with no Jupyter page on the way. Everything else stays behind Voilà's token login (the study
  team's door). The token comes from ``JUPYTER_TOKEN`` (or ``JUPYTER_TOKEN_FILE``) and so never
  shows in ``ps``; without either, Voilà makes one and prints the URL that carries it.
- The server listens on ``--port`` or fails (no silent move to another port), and records in the
  study the address raters open (``--public-url``, else ``http://HOST:PORT/BASE_PATH``), which
  ``ratings invite`` builds its links on; it prints that address once listening.
- Kernels whose page was closed are shut down after ``cull_idle`` seconds (an open page keeps
  its kernel: a clinician looking at a panel for a long time is not cut off).
- Tracebacks never reach the page (the study team reads them in the server's log).
- The browser's User-Agent, and the client's address, are handed to the app for the audit
  trail (``python -m ratings audit``): the TCP peer's address, or the one a proxy named with
  ``--trusted-proxy`` reports (checked as an IP address).
- It runs :mod:`ratings.gate` (Voilà with a gate in front): a kernel only for a working rater
  link, at most a few per link and ``max_kernels`` in all, kernels whose page never connected
  shut down after a minute, a key limit that slows guessing without locking out a working
  link, and kernel WebSockets in the v1 protocol only, their messages capped.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "20_rate.ipynb"
SERVER_MODULE = "ratings.gate"  # `python -m ratings.gate ARGS`: Voilà behind medprobe's gate
# headers handed to the kernel as HTTP_* variables (Voilà's http_header_envs): recorded in the audit.
# X-Medprobe-Client is set by the gate alone (what a browser sends under that name is dropped)
AUDIT_HEADERS = ["User-Agent", "X-Medprobe-Client"]
MAX_KERNELS = 40  # open pages the server holds at most (~180 MB each)
CULL_IDLE_S = 900  # a kernel whose page is gone is shut down after 15 minutes
CULL_INTERVAL_S = 60


def voila_args(notebook: str | Path = NOTEBOOK, port: int = 8866, host: str = "127.0.0.1",
               cull_idle: int = CULL_IDLE_S, cull_interval: int = CULL_INTERVAL_S, token: bool = True,
               tracebacks: bool = False, base_path: str = "/", trusted_proxies=(),
               max_kernels: int = MAX_KERNELS, public_url: str = "") -> list[str]:
    """The arguments after ``python -m ratings.gate`` (:data:`SERVER_MODULE`; the same as
    ``python -m voila`` takes, and the gate's own) that serve the rating app.

    ``token=False`` is only for a researcher alone on their own machine; ``tracebacks=True`` only
    for tests, whose failures should say why. ``base_path``: the path the reverse proxy serves
    the app under (``/medprobe/`` for https://host/medprobe/). ``trusted_proxies``: addresses
    or networks of the reverse proxy whose X-Forwarded-For / X-Real-IP are believed.
    ``public_url``: the address raters open through that proxy (recorded for ``ratings invite``).
    """
    from .gate import parse_networks

    networks = parse_networks(trusted_proxies)
    if not base_path.startswith("/"):
        base_path = "/" + base_path
    if not base_path.endswith("/"):
        base_path += "/"
    args = [str(notebook), "--no-browser", f"--port={int(port)}", "--Voila.port_retries=0", f"--Voila.ip={host}",
            f"--show_tracebacks={tracebacks}", "--theme=light", "--strip_sources=True",
            f"--Voila.base_url={base_path}",
            f"--MappingKernelManager.cull_idle_timeout={int(cull_idle)}",
            f"--MappingKernelManager.cull_interval={int(cull_interval)}",
            "--MappingKernelManager.cull_connected=False",
            *(f"--VoilaConfiguration.http_header_envs={header}" for header in AUDIT_HEADERS),
            f"--RatingServer.max_kernels={int(max_kernels)}",
            *(f"--RatingServer.trusted_proxies={net}" for net in networks),
            *([f"--RatingServer.public_url={public_url}"] if public_url else [])]
    if token:
        args.append("--token")
    return args


def serve(study: str | Path, port: int = 8866, host: str = "127.0.0.1", token: bool = True,
          cull_idle: int = CULL_IDLE_S, base_path: str = "/", trusted_proxies=(),
          max_kernels: int = MAX_KERNELS, public_url: str = "") -> int:
    """Run the rating server (Voilà behind :mod:`ratings.gate`) in the foreground, replacing
    this process, on ``study``. ``public_url``: the address raters open when a reverse proxy
    stands in front (default: this server's own, ``http://HOST:PORT/BASE_PATH``)."""
    from .access import check_base_url
    from .errors import RatingError

    study = Path(study).expanduser().resolve()
    if not (study / "study.sqlite").exists():
        raise RatingError(f"{study}: not a study folder (no study.sqlite); give the folder you built rating "
                          "sessions in (python -m ratings build --study DIR --raters A,B,C)")
    if not token and host not in ("127.0.0.1", "localhost", "::1"):
        raise RatingError(f"--no-token with --host {host}: without the token anyone who reaches {host}:{port} "
                          "opens the page; serve on 127.0.0.1 (and a TLS proxy), or keep the token on")
    env = {**os.environ, "MEDPROBE_STUDY": str(study)}
    if token and not (env.get("JUPYTER_TOKEN") or env.get("JUPYTER_TOKEN_FILE")):
        print("No JUPYTER_TOKEN set: Voilà makes a token for the study team and prints the URL that carries it. "
              "Raters need only their personal link (python -m ratings invite), never the token.", file=sys.stderr)
    if public_url:
        public_url = check_base_url(public_url, flag="--public-url")
    try:
        args = voila_args(port=port, host=host, token=token, cull_idle=cull_idle, base_path=base_path,
                          trusted_proxies=trusted_proxies, max_kernels=max_kernels, public_url=public_url)
    except ValueError as exc:
        raise RatingError(str(exc)) from None
    argv = [sys.executable, "-m", SERVER_MODULE, *args]
    os.execvpe(argv[0], argv, env)
    return 0  # not reached
