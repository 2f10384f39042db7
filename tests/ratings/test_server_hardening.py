"""The rating server under a careless or hostile insider (issue 21, items 2, 10, 11, 12):
`python -m ratings serve`'s server (`ratings.gate`, Voilà behind medprobe's gate) on a small
study, spoken to as an attacker holding the server's token would: legacy kernel WebSockets,
oversized messages, pages that never connect, forged client-address headers, guessed keys.
What must hold: other raters' pages keep working, kernels start only for working links and do
not pile up, the audit trail records addresses only, and the key limit never locks out a working
link.
"""

import asyncio
import http.client
import json
import re
import secrets
import time
from contextlib import closing
from urllib.parse import urlsplit

import psutil
import pytest
from browser_support import (  # noqa: F401  (browser_fixture, page_fixture: the fixtures browser, page)
    CHROMIUM,
    NO_CHROMIUM,
    Voila,
    browser_fixture,
    free_port,
    page_fixture,
    wait_for_app,
)
from conftest import ratings_cli
from playwright.sync_api import expect
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.httputil import HTTPHeaders
from tornado.websocket import WebSocketClosedError, websocket_connect

from ratings import access, db
from ratings.app import RATE_LIMITED_TEXT, REFUSED_TEXT, client_from_environment
from ratings.gate import LEGACY_TEXT, V1_PROTOCOL, client_address, parse_networks
from ratings.serve import voila_args
from ratings.session import build_sessions

ALPHA, BRAVO, CHARLIE = "rater-alpha", "rater-bravo", "rater-charlie"
GRACE_S = 6  # the server's unconnected_grace here (60 s in `ratings serve`)
PER_KEY = 2


# --- client addresses, without a server ------------------------------------------------------

def headers(**values) -> HTTPHeaders:
    h = HTTPHeaders()
    for name, value in values.items():
        h.add(name.replace("_", "-"), value)
    return h


def test_client_address_headers_count_only_from_a_trusted_proxy_and_only_as_addresses():
    proxy = parse_networks(["127.0.0.1", "10.0.0.0/24"])
    forged = headers(X_Real_IP="@SUM(1+1)", X_Forwarded_For="203.0.113.9")
    assert client_address("198.51.100.4", forged, proxy) == "198.51.100.4"  # not a proxy: its own address
    assert client_address("198.51.100.4", headers(X_Forwarded_For="203.0.113.9"), []) == "198.51.100.4"
    # from the proxy: the address it added, never X-Real-IP first, never a non-address
    assert client_address("127.0.0.1", forged, proxy) == "203.0.113.9"
    assert client_address("127.0.0.1", headers(X_Real_IP="@SUM(1+1)"), proxy) == "127.0.0.1"
    assert client_address("127.0.0.1", headers(X_Real_IP="192.0.2.5"), proxy) == "192.0.2.5"
    # a browser's own X-Forwarded-For entries sit left of what the proxies added, and are skipped
    chain = headers(X_Forwarded_For="6.6.6.6, 192.0.2.77, 10.0.0.3")
    assert client_address("127.0.0.1", chain, proxy) == "192.0.2.77"
    assert client_address("127.0.0.1", headers(X_Forwarded_For="=cmd|' /C calc'!A0"), proxy) == "127.0.0.1"
    with pytest.raises(ValueError, match="--trusted-proxy 'proxy.hospital' is not an IP address"):
        parse_networks(["proxy.hospital"])


def test_the_app_records_the_servers_address_and_never_the_browsers_headers(monkeypatch):
    monkeypatch.setenv("HTTP_X_REAL_IP", "192.0.2.1")
    monkeypatch.setenv("HTTP_X_FORWARDED_FOR", "192.0.2.2")
    monkeypatch.setenv("HTTP_X_MEDPROBE_CLIENT", "@SUM(1+1)")
    assert client_from_environment().address is None
    monkeypatch.setenv("HTTP_X_MEDPROBE_CLIENT", "2001:db8::7")
    assert client_from_environment().address == "2001:db8::7"


def test_serve_refuses_a_proxy_that_is_not_an_address(tmp_path):
    (tmp_path / "study.sqlite").write_bytes(b"")
    bad = ratings_cli("serve", "--study", str(tmp_path), "--trusted-proxy", "proxy.hospital")
    assert bad.returncode != 0 and "--trusted-proxy 'proxy.hospital' is not an IP address" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_servers_frame_reader_stops_at_a_legacy_frame_at_once():
    from jupyter_server.services.kernels.connection.base import (
        serialize_binary_message,
        serialize_msg_to_ws_v1,
    )

    from ratings.gate import v1_header

    header = {"msg_id": "m", "msg_type": "comm_msg"}
    msg = {"header": header, "parent_header": {}, "metadata": {}, "content": {}, "buffers": [b"\0" * 64]}
    legacy = serialize_binary_message(msg)  # what a legacy channel is sent: Voilà 0.5.13 loops on it
    started = time.monotonic()
    assert v1_header(legacy) is None and v1_header(b"\xff" * 16) is None and v1_header(b"") is None
    assert time.monotonic() - started < 0.1
    packed = [json.dumps(part).encode() for part in (header, {}, {}, {})]
    assert v1_header(serialize_msg_to_ws_v1(packed, "iopub")) == header


# --- a served study ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(generated, tmp_path_factory):
    """The conftest study with three invited raters, served as `ratings serve` serves it (the
    token from JUPYTER_TOKEN; 127.0.0.1, where the tests come from, as the trusted proxy, so that
    a test can speak for other client addresses), with a short grace for unconnected pages."""
    import shutil

    base = tmp_path_factory.mktemp("hardening")
    study = base / "study"
    shutil.copytree(generated, study)
    build_sessions(study, [ALPHA, BRAVO, CHARLIE], seed=5)
    keys = {i.rater: i.key for i in access.invite(study, [ALPHA, BRAVO, CHARLIE],
                                                          base_url="http://127.0.0.1:8866/")}
    port = free_port()
    args = [*voila_args(port=port, tracebacks=True, trusted_proxies=["127.0.0.1"]),
            f"--RatingServer.unconnected_grace={GRACE_S}", f"--RatingServer.kernels_per_key={PER_KEY}"]
    token = secrets.token_urlsafe(24)
    server = Voila(study, base, args=args, port=port, extra_env={"JUPYTER_TOKEN": token})
    server.token = token
    try:
        server.wait_until_serving()
        yield server, study, keys
    finally:
        server.stop()


def get(server, target: str, timeout: float = 90, **extra) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request("GET", target, headers={"Authorization": f"token {server.token}", **extra})
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", errors="replace")
    finally:
        conn.close()


def kernel_of(page_html: str) -> str:
    found = re.search(r'"kernelId":\s*"([0-9a-f-]{36})"', page_html)
    assert found, f"no kernel in the page: {page_html[:300]}"
    return found.group(1)


def kernel_alive(server, kernel_id: str) -> bool:
    return get(server, f"/api/kernels/{kernel_id}", timeout=10)[0] == 200


def kernels_started(server) -> int:
    return server.log.read_text(errors="replace").count("Kernel started:")


def server_rss_mb(server) -> float:
    return psutil.Process(server.proc.pid).memory_info().rss / 2 ** 20


def audit(study, event: str) -> list:
    with closing(db.open_db(study, readonly=True)) as conn:
        return [dict(r) for r in conn.execute("SELECT * FROM audit WHERE event = ?", (event,))]


def test_a_page_without_a_working_key_starts_no_kernel(served):
    server, study, keys = served
    before = kernels_started(server)
    wrong = keys[ALPHA].partition(".")[0] + "." + secrets.token_urlsafe(24)
    for target in ("/", f"/?key={wrong}", f"/?rater={ALPHA}"):
        status, body = get(server, target, timeout=20)
        assert status == 403 and REFUSED_TEXT in body, (target, status, body[:300])
        assert ALPHA not in body and "kernelId" not in body
    assert kernels_started(server) == before, "a request without a working key started a kernel"
    refused = audit(study, "login_refused")
    assert {r["client"] for r in refused} == {"127.0.0.1"}
    assert [r["rater"] for r in refused if json.loads(r["detail"])["reason"] == "wrong secret"] == [ALPHA]


def test_the_key_limit_slows_guessing_and_never_locks_out_a_working_link(served):
    server, study, keys = served
    nat = {"X-Forwarded-For": "198.51.100.20", "X-Real-IP": "@SUM(1+1)"}  # one hospital's NAT, via the proxy
    for i in range(access.MAX_FAILURES):
        assert get(server, f"/?key={i:010x}.guess", timeout=20, **nat)[0] == 403
    started = time.monotonic()
    status, body = get(server, "/?key=0badc0ffee.guess", timeout=20, **nat)
    assert status == 429 and RATE_LIMITED_TEXT in body
    assert time.monotonic() - started >= 1.0  # each further guess waits
    status, body = get(server, f"/?key={keys[BRAVO]}", **nat)  # a colleague behind the same NAT
    assert status == 200 and "kernelId" in body, body[:300]
    other = get(server, "/?key=0badc0ffee.guess", timeout=20, **{"X-Forwarded-For": "198.51.100.21"})
    assert other[0] == 403 and REFUSED_TEXT in other[1]  # another address is not held up
    clients = {r["client"] for event in ("login_refused", "rate_limited", "login") for r in audit(study, event)}
    assert "198.51.100.20" in clients and not any("SUM" in (c or "") for c in clients)
    assert all(c is None or re.fullmatch(r"[0-9a-f.:]+", c) for c in clients), clients


def legacy_request_states(kernel_id: str) -> list[str]:
    """What an old client sends to ask for every widget's state: a control comm, then
    request_states, as JSON text frames (the legacy kernel WebSocket protocol)."""
    def message(msg_type, content):
        return json.dumps({"header": {"msg_id": secrets.token_hex(8), "msg_type": msg_type, "session": "legacy",
                                      "username": "", "version": "5.3", "date": ""},
                           "parent_header": {}, "metadata": {"version": "1.0.0"}, "content": content,
                           "channel": "shell",
                           "buffers": []})
    comm = secrets.token_hex(8)
    return [message("comm_open", {"comm_id": comm, "target_name": "jupyter.widget.control", "data": {}}),
            message("comm_msg", {"comm_id": comm, "data": {"method": "request_states"}})]


async def open_channel(server, kernel_id: str, subprotocols=None, **options):
    request = HTTPRequest(f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels?session_id=t",
                          headers={"Authorization": f"token {server.token}"}, request_timeout=20)
    return await websocket_connect(request, subprotocols=subprotocols, **options)


def test_a_legacy_websocket_message_leaves_other_raters_pages_working(served):
    server, study, keys = served
    status, body = get(server, f"/?key={keys[ALPHA]}")
    assert status == 200
    kernel_id = kernel_of(body)
    rss_before = server_rss_mb(server)

    async def attack():
        try:
            channel = await open_channel(server, kernel_id)  # no subprotocol: the legacy protocol
        except HTTPClientError as exc:
            return exc.code, exc.response.body.decode() if exc.response is not None else ""
        for frame in legacy_request_states(kernel_id):
            await channel.write_message(frame)
        await asyncio.sleep(3)  # the replies (with binary buffers) reach Voilà's write_message
        channel.close()
        return 101, ""

    code, text = asyncio.run(attack())
    assert code == 400 and text == LEGACY_TEXT
    started = time.monotonic()
    status, login = get(server, "/login", timeout=5)
    assert status in (200, 302) and time.monotonic() - started < 5
    status, body = get(server, f"/?key={keys[BRAVO]}", timeout=60)
    assert status == 200 and "kernelId" in body
    assert server_rss_mb(server) < rss_before + 100


def test_an_oversized_message_closes_only_its_own_channel(served):
    server, _, keys = served
    status, body = get(server, f"/?key={keys[CHARLIE]}")
    kernel_id = kernel_of(body)

    async def flood():
        channel = await open_channel(server, kernel_id, subprotocols=[V1_PROTOCOL])
        assert channel.selected_subprotocol == V1_PROTOCOL
        try:
            await channel.write_message(b"\0" * (2 * 1024 * 1024), binary=True)
        except WebSocketClosedError:
            pass
        while await channel.read_message() is not None:  # the kernel's status messages, then the close
            pass
        return channel.close_code

    assert asyncio.run(asyncio.wait_for(flood(), 30)) == 1009  # "message too big"
    assert get(server, "/login", timeout=5)[0] in (200, 302)


def test_kernels_do_not_pile_up_per_link_and_unconnected_ones_are_culled(served):
    server, _, keys = served
    pages = [kernel_of(get(server, f"/?key={keys[ALPHA]}")[1]) for _ in range(PER_KEY + 1)]
    alive = [kernel_alive(server, k) for k in pages]
    assert alive[-1] and sum(alive) <= PER_KEY, alive  # the oldest made way for the newest
    deadline = time.monotonic() + GRACE_S + 20
    while time.monotonic() < deadline and any(kernel_alive(server, k) for k in pages):
        time.sleep(1)
    assert not any(kernel_alive(server, k) for k in pages), "pages that never connected kept their kernels"
    assert "never connected" in server.log.read_text(errors="replace")


# --- in Chromium ------------------------------------------------------------------------------



@pytest.fixture(scope="module")
def voila(served):  # what page_fixture prints the log of
    return served[0]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_in_chromium_a_working_link_rates_over_v1_and_a_wrong_one_gets_the_servers_page(page, served, tmp_path):
    server, _, keys = served
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    wrong = keys[BRAVO].partition(".")[0] + ".not-the-secret"
    page.goto(server.url + "?key=" + wrong)  # no token: the link is the login, and this one fails
    expect(page.locator(".mp-error")).to_have_text(REFUSED_TEXT)
    expect(page.get_by_label("Key")).to_be_visible()
    page.set_viewport_size({"width": 1366, "height": 768})
    page.screenshot(path=str(tmp_path / "gate-refused.png"))
    assert sockets == []  # no kernel, no app
    page.get_by_label("Key").fill(keys[BRAVO])  # the box: the key pasted by hand
    page.get_by_role("button", name="Continue").click()
    wait_for_app(page, ready="Start rating")
    assert urlsplit(page.url).query == "key=" + keys[BRAVO]
    assert any("/channels" in url for url in sockets)
    page.get_by_role("button", name="Start rating").click()
    expect(page.locator(".mp-tile img").first).to_be_visible()
