"""The rating server: Voilà with a gate in front, as ``python -m ratings serve`` runs it.

``python -m ratings.gate ARGS`` takes the arguments of ``python -m voila`` (see
:func:`ratings.serve.voila_args`) and serves the same app, with what a hospital's network needs
from a server that several clinicians share:

- **The link is the rater's login.** A request that carries a working rater key is let through
  to Voilà without Voilà's token: the gate logs that browser in as the key's holder (a session
  cookie, signed like Voilà's own, naming the key_id only), so the rater never meets a Jupyter
  page. Without a working key, in a study with personal links, a request gets the one sentence
  and the key box, token or not; the study team's own door (Voilà's token login) stays for
  studies without personal links, and for every address but the rating page; its login page
  is served under the base path (``/medprobe/login``), where Voilà's redirect sends the team.
  A rater's login opens their page, its own kernel (state, WebSocket, shutdown) and the static
  files only: other kernels and the rest stay the team's (:func:`own_kernel_only`,
  :func:`team_only`). (Voilà serves ``voila/files/`` images beside the notebook to anyone, token
  or not: keep studies out of ``notebooks/``.)
- **The server records its address.** Once it listens, it writes the address raters open
  (``public_url``, else ``http://HOST:PORT/BASE_PATH``) into the study
  (:func:`ratings.access.record_address`), for ``ratings invite``, and prints it.
- **A kernel only for a working link.** In a study with personal links, a page is rendered
  (and its ~180 MB kernel started) only for a request whose ``?key=`` is a working rater key;
  anything else gets one sentence and a box for the key, from the server itself, with no kernel.
  A rater's link holds at most ``kernels_per_key`` kernels (an older page of theirs that is no
  longer open makes way for a new one), the server at most ``max_kernels``, and a kernel whose
  page never connected is shut down ``unconnected_grace`` seconds after the page was sent.
- **The key limit slows guessing and locks no one out.** After ``access.MAX_FAILURES`` wrong
  keys from one client address within the window, each further key from there waits a second
  and a wrong one is refused as rate limited; a working key still opens its page.
- **Client addresses are the TCP peer's**, unless the peer is a proxy named with
  ``--RatingServer.trusted_proxies`` (``ratings serve --trusted-proxy``): then the address it
  reports in ``X-Forwarded-For`` (else ``X-Real-IP``), checked as an IP address. The kernel
  gets that one address (``X-Medprobe-Client``), never the headers as the browser sent them.
- **Kernel WebSockets speak the v1 protocol only** (``v1.kernel.websocket.jupyter.org``, what
  Voilà's own page asks for). A channel opened without it is refused before it reaches the
  kernel: Voilà 0.5.13 reads replies on such a channel as v1 frames and loops on them, which
  froze the server for every rater (docs/upstream/voila-legacy-websocket.md). Messages from a
  browser are capped at ``MAX_MESSAGE_BYTES``.
"""

from __future__ import annotations

import asyncio
import contextvars
import html
import inspect
import ipaddress
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from jupyter_server.auth import User
from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.utils import url_path_join
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.web import HTTPError
from traitlets import Float, Int, List, Unicode
from voila.app import Voila
from voila.tornado.handler import TornadoVoilaHandler
from voila.tornado.kernel_websocket_handler import VoilaKernelWebsocketHandler

from . import access

logger = logging.getLogger("medprobe.gate")

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
MAX_MESSAGE_BYTES = 1024 * 1024  # a widget update is a few KB; a comment at its cap, 20 KB
CLIENT_HEADER = "X-Medprobe-Client"  # the one client address the kernel is given
PROXY_HEADERS = ("X-Forwarded-For", "X-Real-IP")
SLOW_DOWN_S = 1.0  # each key from an address past the limit waits this long
RATER_USER_PREFIX = "medprobe-rater-"  # the user a rater's key logs in (ratings.gate alone makes it)
PAGE: contextvars.ContextVar = contextvars.ContextVar("medprobe_page", default=None)

FULL_TEXT = ("The rating server has as many pages open as it can hold just now: please try again in a few "
             "minutes, or tell the study team.")
TOO_MANY_PAGES_TEXT = ("Your link is already open in {n} windows: please close one of them (or wait a minute) and "
                       "open your link again.")
LEGACY_TEXT = ("This connection asked for an old kernel protocol that the rating server does not speak; "
               "reload the page in an up-to-date browser.")


def parse_networks(values) -> list:
    """``--trusted-proxy`` values (addresses or networks) as :mod:`ipaddress` networks; a value
    that is neither raises ValueError naming it."""
    networks = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"--trusted-proxy {part!r} is not an IP address or network; give the address "
                                 "of the reverse proxy in front of the server, e.g. 127.0.0.1 or 10.0.0.0/24") from None
    return networks


def _address(text: str | None):
    try:
        return ipaddress.ip_address((text or "").strip())
    except ValueError:
        return None


def _trusted(address, networks) -> bool:
    return address is not None and any(address in net for net in networks)


def client_address(peer: str | None, headers, trusted: list) -> str | None:
    """The address to record and to count wrong keys by.

    The TCP peer's, unless the peer is a trusted proxy: then the nearest address in
    ``X-Forwarded-For`` that is not itself a trusted proxy (the one the outermost trusted proxy
    saw), else ``X-Real-IP``. A header value that is not an IP address is never used.
    """
    peer_ip = _address(peer)
    if not _trusted(peer_ip, trusted):
        return str(peer_ip) if peer_ip is not None else None
    hops = [h for value in headers.get_list("X-Forwarded-For") for h in value.split(",")]
    for hop in reversed(hops):
        ip = _address(hop)
        if ip is None:
            break  # a hop that is not an address: nothing left of it can be believed
        if not _trusted(ip, trusted):
            return str(ip)
    real = _address(headers.get("X-Real-IP"))
    if real is not None:
        return str(real)
    return str(peer_ip)


@dataclass
class Kernel:
    key_id: str | None
    started: float = field(default_factory=time.monotonic)
    served: float | None = None  # when its page was sent
    connected: bool = False  # whether its page ever opened the kernel's WebSocket


class Kernels:
    """Which kernel serves which link, for the caps and the cull of pages that never connected."""

    def __init__(self, manager, log):
        self.manager, self.log = manager, log
        self.by_id: dict[str, Kernel] = {}
        start = manager.start_kernel

        async def start_kernel(*args, **kwargs):
            page = PAGE.get()  # the GatedVoilaHandler whose request this is (same asyncio task)
            kernel_id = await start(*args, **kwargs)
            self.by_id[kernel_id] = Kernel(page.key_id if page is not None else None)
            if page is not None:
                page.kernel_id = kernel_id
            return kernel_id

        manager.start_kernel = start_kernel

    def alive(self) -> list[str]:
        ids = set(self.manager.list_kernel_ids())
        for gone in set(self.by_id) - ids:
            del self.by_id[gone]
        return list(ids)

    def connections(self, kernel_id: str) -> int:
        return self.manager._kernel_connections.get(kernel_id, 0)

    async def shut_down(self, kernel_id: str, why: str) -> None:
        self.log.info("Shutting down kernel %s: %s", kernel_id, why)
        self.by_id.pop(kernel_id, None)
        try:
            await self.manager.shutdown_kernel(kernel_id)
        except Exception:  # already gone
            self.log.debug("kernel %s was already gone", kernel_id, exc_info=True)

    async def make_room(self, key_id: str | None, per_key: int, total: int) -> str | None:
        """None if a new page may start a kernel (after shutting down an older, unconnected page
        of the same link where that link is at its cap), else the sentence that refuses it."""
        alive = self.alive()
        if key_id is not None:
            mine = sorted((k for k in alive if k in self.by_id and self.by_id[k].key_id == key_id),
                          key=lambda k: self.by_id[k].started)
            while len(mine) >= per_key:
                idle = [k for k in mine if self.connections(k) == 0]
                if not idle:
                    return TOO_MANY_PAGES_TEXT.format(n=len(mine))
                await self.shut_down(idle[0], f"its link opened a new page ({per_key} at most)")
                mine.remove(idle[0])
                alive.remove(idle[0])
        if len(alive) >= total:
            return FULL_TEXT
        return None

    async def cull(self, grace: float) -> None:
        now = time.monotonic()
        for kernel_id in self.alive():
            kernel = self.by_id.get(kernel_id)
            if kernel is None or kernel.connected or self.connections(kernel_id):
                continue
            if kernel.served is not None and now - kernel.served > grace:
                await self.shut_down(kernel_id, f"its page never connected within {grace:.0f} s")


def gate_page(text: str, with_key_box: bool, base_url: str) -> str:
    """The server's own page for a refused request: the app's sentence, and a box for the key."""
    form = ""
    if with_key_box:
        form = (f'<form method="get" action="{html.escape(base_url)}">'
                '<label for="key">Key</label> <input id="key" name="key" type="password" autocomplete="off" '
                'placeholder="the key from your link" size="40"> <button type="submit">Continue</button></form>')
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Rating study</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:3em auto;max-width:44em;color:#222}"
            ".mp-error{background:#fdecea;border-left:4px solid #c62828;padding:.8em 1em;margin-bottom:1.2em}"
            "input{padding:.35em;font-size:1em}button{padding:.4em 1.2em;font-size:1em;background:#1976d2;"
            "color:#fff;border:0;border-radius:3px}label{font-weight:600}</style></head><body>"
            f'<p class="mp-error">{html.escape(text)}</p>{form}</body></html>')


class GatedVoilaHandler(TornadoVoilaHandler):
    """The notebook page, behind the key check, the caps and the trusted client address."""

    key_id: str | None = None
    kernel_id: str | None = None

    async def prepare(self):
        await super().prepare()
        if self._finished:
            return
        logged_in = bool(self.current_user)  # Voilà's token (the study team), or a rater's earlier link
        server: RatingServer = self.settings["medprobe_server"]
        client = access.Client(
            (self.request.headers.get("User-Agent") or "")[:300] or None,
            client_address(self.request.remote_ip, self.request.headers, server.trusted_networks))
        for name in (*PROXY_HEADERS, CLIENT_HEADER):
            self.request.headers.pop(name, None)
        if client.address:
            self.request.headers[CLIENT_HEADER] = client.address
        key = (parse_qs(self.request.query).get(access.KEY_PARAM) or [None])[0]
        verdict = await server.check(key, client)
        if verdict is None and not logged_in:
            return  # a study without personal links: Voilà's token login (@authenticated) answers
        if verdict is not None and verdict.admitted is None:
            limited = verdict.reason == "rate limited"
            return self._refuse(429 if limited else 403, access_text(limited), with_key_box=True)
        key_id = verdict.admitted.key_id if verdict is not None else None
        refusal = await server.kernels.make_room(key_id, server.kernels_per_key, server.max_kernels)
        if refusal is not None:
            logger.warning("refused a page for %s: %s", client.address, refusal)
            return self._refuse(503 if refusal == FULL_TEXT else 429, refusal, with_key_box=False)
        self.key_id = key_id
        if not logged_in:
            self._log_in_rater(key_id)
        PAGE.set(self)

    def _log_in_rater(self, key_id: str) -> None:
        """Let this request, and this browser's next ones (the kernel's WebSocket), through
        Voilà's login as the holder of ``key_id``: a session cookie under Voilà's own name, signed
        with its secret. It names the key_id only; the page itself checks the key each time."""
        provider = self.identity_provider
        user = User(username=f"{RATER_USER_PREFIX}{key_id}", name="rater", display_name="rater")
        self.current_user = self._jupyter_current_user = user
        secure = provider.secure_cookie
        if secure is None:
            secure = self.request.protocol == "https"
        options = {"httponly": True, "path": self.base_url, "samesite": "Strict", **({"secure": True} if secure else {})}
        self.set_secure_cookie(provider.get_cookie_name(self), provider.user_to_cookie(user), expires_days=None,
                               **options)

    @allow_unauthenticated  # past Voilà's login to prepare(), which lets a working key through
    async def get(self, path=None):
        return await super().get(path)  # @authenticated: the token login, where prepare let no key in

    def _refuse(self, status: int, text: str, with_key_box: bool) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(gate_page(text, with_key_box, self.base_url))

    def on_finish(self):
        kernel = self.settings["medprobe_server"].kernels.by_id.get(getattr(self, "kernel_id", None))
        if kernel is not None:
            kernel.served = time.monotonic()  # the grace for connecting starts now
        super().on_finish()


def access_text(limited: bool) -> str:
    from .app import RATE_LIMITED_TEXT, REFUSED_TEXT  # the app's own sentences, word for word

    return RATE_LIMITED_TEXT if limited else REFUSED_TEXT


def v1_header(frame: bytes) -> dict | None:
    """The header of a v1 kernel WebSocket frame (offset count, offsets, channel, header, ...),
    or None for a frame that is not one: the offset count is checked against the frame's length
    before any offset is read."""
    import json

    if len(frame) < 8:
        return None
    count = int.from_bytes(frame[:8], "little")
    if count < 3 or 8 * (count + 1) > len(frame):
        return None
    offsets = [int.from_bytes(frame[8 * (i + 1):8 * (i + 2)], "little") for i in range(3)]
    if not offsets[1] <= offsets[2] <= len(frame):
        return None
    try:
        header = json.loads(frame[offsets[1]:offsets[2]].decode("utf-8"))
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


class V1KernelWebsocketHandler(VoilaKernelWebsocketHandler):
    """The kernel's WebSocket, for the v1 subprotocol only (see the module's docstring)."""

    async def get(self, kernel_id):
        asked = [p.strip() for p in self.request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if V1_PROTOCOL not in asked:
            self.log.warning("Refused a kernel WebSocket without the %s subprotocol from %s", V1_PROTOCOL,
                             self.request.remote_ip)
            self.set_status(400)
            self.finish(LEGACY_TEXT)
            return
        if is_rater(self.current_user) and not rater_owns(self.settings["medprobe_server"], self.current_user,
                                                          kernel_id):
            self.log.warning("Refused a kernel WebSocket to a kernel not of this rater's page from %s",
                             self.request.remote_ip)
            self.set_status(403)
            self.finish("not this rater's kernel")
            return
        await super().get(kernel_id)

    def select_subprotocol(self, subprotocols):
        return V1_PROTOCOL if V1_PROTOCOL in subprotocols else None

    def write_message(self, message, binary=False):
        # Voilà's write_message reads every binary frame's header as v1 without a bound on its
        # offset count; read it here with one, and drop execute_input as Voilà does
        header = message.get("header") if isinstance(message, dict) else None
        if isinstance(message, bytes):
            header = v1_header(message)
        if header and header.get("msg_type") == "execute_input":
            return None
        return super(VoilaKernelWebsocketHandler, self).write_message(message, binary)

    async def open(self, kernel_id):
        server: RatingServer = self.settings["medprobe_server"]
        kernel = server.kernels.by_id.get(self.kernel_id)
        if kernel is not None:
            kernel.connected = True
        await super().open(kernel_id)


# what a rater's page needs besides the page and its kernel's WebSocket (by class name): its static
# files, and the shutdown of its kernel when it closes; a rater's login opens nothing else
RATER_HANDLERS = {"TemplateStaticFileHandler", "MultiStaticFileHandler", "ThemesHandler", "FileFindHandler",
                  "VoilaLoginHandler", "LoginFormHandler", "LogoutHandler"}
# ... and, for the kernel of their own page only, these (its state, its shutdown when the page closes)
OWN_KERNEL_HANDLERS = {"KernelHandler", "VoilaShutdownKernelHandler"}


def is_rater(user) -> bool:
    """Whether a request's user is a rater logged in by their link (not the study team)."""
    return str(getattr(user, "username", "") or "").startswith(RATER_USER_PREFIX)


def rater_owns(server, user, kernel_id) -> bool:
    """Whether ``kernel_id`` was started for the page of the rater key ``user`` logged in with."""
    kernel = server.kernels.by_id.get(kernel_id)
    return kernel is not None and kernel.key_id is not None and user.username == RATER_USER_PREFIX + kernel.key_id


def own_kernel_only(handler):
    """``handler`` (of ``/api/kernels/<id>``-like paths) refusing a rater's login any kernel but
    their own page's; the study team's token reaches every kernel."""
    class OwnKernelOnly(handler):
        async def prepare(self, *args, **kwargs):
            result = super().prepare(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            user = self.current_user
            kernel_id = self.path_kwargs.get("kernel_id") or (self.path_args[0] if self.path_args else None)
            if is_rater(user) and not rater_owns(self.settings["medprobe_server"], user, kernel_id):
                raise HTTPError(403, "not this rater's kernel")
            return result

    OwnKernelOnly.__name__ = OwnKernelOnly.__qualname__ = f"OwnKernelOnly{handler.__name__}"
    return OwnKernelOnly


def team_only(handler):
    """``handler`` refusing (403) a browser that a rater's link logged in: the kernel API, the
    files under the notebook's folder, the tree stay the study team's (the token's)."""
    class TeamOnly(handler):
        async def prepare(self, *args, **kwargs):
            result = super().prepare(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            if is_rater(self.current_user):
                raise HTTPError(403, "for the study team only")
            return result

    TeamOnly.__name__ = TeamOnly.__qualname__ = f"TeamOnly{handler.__name__}"
    return TeamOnly


class RatingServer(Voila):
    """Voilà with :class:`GatedVoilaHandler` and :class:`V1KernelWebsocketHandler` in place."""

    trusted_proxies = List(Unicode(), help="Addresses or networks of reverse proxies whose X-Forwarded-For and "
                           "X-Real-IP are believed").tag(config=True)
    max_kernels = Int(40, help="Kernels (open pages) the server holds at most").tag(config=True)
    kernels_per_key = Int(3, help="Kernels one rater's link holds at most").tag(config=True)
    unconnected_grace = Float(60.0, help="Seconds after its page was sent that a kernel whose page never "
                              "connected is shut down").tag(config=True)
    public_url = Unicode("", help="The address raters open (a reverse proxy's), recorded in the study for "
                         "`ratings invite`; default http://HOST:PORT/BASE_URL").tag(config=True)

    def initialize(self, argv=None):
        super().initialize(argv)
        self.trusted_networks = parse_networks(self.trusted_proxies)
        self.study = os.environ.get("MEDPROBE_STUDY", "demo-study")

    def init_settings(self):
        settings = super().init_settings()
        self.kernels = Kernels(self.kernel_manager, self.log)
        settings["medprobe_server"] = self
        settings["websocket_max_message_size"] = MAX_MESSAGE_BYTES
        return settings

    def init_handlers(self):
        swap = {TornadoVoilaHandler: GatedVoilaHandler, VoilaKernelWebsocketHandler: V1KernelWebsocketHandler}
        handlers = []
        for spec in super().init_handlers():
            pattern = spec[0]
            if pattern in ("/login", "/logout"):  # Voilà 0.5.13 leaves the base path off its login page
                pattern = url_path_join(self.server_url, pattern)
            handler = swap.get(spec[1], spec[1])
            if handler.__name__ in OWN_KERNEL_HANDLERS:
                handler = own_kernel_only(handler)
            elif handler.__name__ not in RATER_HANDLERS and handler not in swap.values():
                handler = team_only(handler)
            handlers.append((pattern, handler, *spec[2:]))
        return handlers

    def listen(self):
        interval = max(1.0, min(10.0, self.unconnected_grace / 4))
        PeriodicCallback(lambda: asyncio.ensure_future(self.kernels.cull(self.unconnected_grace)),
                         interval * 1000).start()
        IOLoop.current().add_callback(self.record_address)  # runs once listening (on the port it got)
        super().listen()

    def raters_url(self) -> str:
        """The address raters open: ``public_url``, else this server's own."""
        if self.public_url:
            return self.public_url
        host = self.ip if self.ip not in ("", "0.0.0.0", "::") else socket.getfqdn()
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{self.base_url}"

    def record_address(self) -> None:
        """Write the address raters open into the study, and say it."""
        url = self.raters_url()
        conn = self._open()
        recorded = False
        if conn is not None:
            try:
                access.record_address(conn, url, host=self.ip, port=self.port, base_path=self.base_url)
                recorded = True
            except Exception as exc:  # a read-only study: say so, serve anyway
                self.log.error("could not record the server's address in %s: %s", self.study, exc)
            finally:
                conn.close()
        where = "recorded in the study for `ratings invite`" if recorded else "NOT recorded in the study"
        print(f"Raters open {url} with their personal link ({where}; they need no token): "
              f"python -m ratings invite --study {self.study} --raters A,B,C", file=sys.stderr, flush=True)

    async def check(self, key: str | None, client: access.Client):
        """None in a study without personal links (every page may start); else the key's
        :class:`access.Verdict`, reason "rate limited" for a wrong key past the limit. The
        scrypt check runs in a thread: the server keeps answering meanwhile."""
        loop = asyncio.get_running_loop()
        limited = await loop.run_in_executor(None, self._limited, client)
        if limited:
            await asyncio.sleep(SLOW_DOWN_S)
        return await loop.run_in_executor(None, self._check, key, client, limited)

    def _limited(self, client: access.Client) -> bool:
        if not client.address:
            return False
        conn = self._open()
        if conn is None:
            return False
        try:
            return access.recent_failures(conn, "", client.address) >= access.MAX_FAILURES
        finally:
            conn.close()

    def _open(self):
        from .db import open_db

        try:
            return open_db(self.study)
        except Exception as exc:  # the app says what is wrong on its page; the log has the details
            self.log.error("the rating server could not open the study %s: %s", self.study, exc)
            return None

    def _check(self, key, client, limited):
        conn = self._open()
        if conn is None:
            return None
        try:
            if not access.invited(conn):
                return None
            verdict = access.check_key(conn, key)
            if verdict.admitted is not None:
                return verdict
            detail = {"reason": verdict.reason, "key_id": verdict.key_id, "by": "server"}
            if limited:
                access.record(conn, "rate_limited", client=client, detail=detail)
                return access.Verdict(None, "rate limited", verdict.key_id, verdict.owner)
            access.record(conn, "login_refused", rater=verdict.owner, client=client, detail=detail)
            return verdict
        finally:
            conn.close()


main = RatingServer.launch_instance

if __name__ == "__main__":
    main()
