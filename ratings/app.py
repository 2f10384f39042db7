"""The blinded rating app (ipywidgets), served to clinicians with Voilà (notebooks/20_rate.ipynb).

Pages: who are you -> instructions with the scale anchors and the keys -> one panel at a time
(the prompt, four images in a 2x2 grid sized to the window, both scales beside them, the
nonsensical flag, a comment, Previous / Next / First unrated, progress, a visible saved state;
on a phone one column) -> a finish page. Where the study has practice panels
(:mod:`ratings.practice`) they come first, marked *Practice*, on the same page: each answer is
saved apart from the study's, and once a practice panel is answered the study team's reference
rating is shown beside the rater's; the welcome page shows the team's example image of each
scale point where it gave them. *Enlarge* opens the viewer: one image at its full
resolution, fit to the space, with the panel's other three a step away. The keyboard
(:func:`ratings.widgets.keyboard`) clicks these same widgets, so every answer takes one path.

Every answer is committed to the study database the moment it is given. A widget event writes
only when the rater changed a value of the panel on show, and each save names the answer it
revises, so a second window with the same rater id is told to reload instead of overwriting.
A panel is shown whole or not at all: its images are read and checked (against the SHA-256
they are named after, or decoded) before anything on the page changes; a panel that cannot be
shown says so, saves nothing, and is logged for the study team (``<study>/logs/rating-app.log``).

The app sends the browser the prompt text and the images' pixels only: images are re-encoded
without metadata and addressed by opaque tokens, and nothing about presets, generators, seeds
or files, nor any other rater's answers, ever reaches the page (error details go to the log).

Who rates: in a study with personal links (``python -m ratings invite``, :mod:`ratings.access`)
the app admits a rater only by the key in their link (``?key=...``), with no list of raters, no
typed id and no ``?rater=``; whatever is wrong with a key, the page says the same sentence
(:data:`REFUSED_TEXT`). A revoked key empties the page at its next click. A study without links
keeps the simple local page (choose or type a rater id) for a researcher on their own machine,
and says so. Logins, refusals and lock-outs go to the study's audit trail, and every answer row
names the app session it came from.
"""

from __future__ import annotations

import hashlib
import html
import io
import logging
import os
import re
import secrets
import sqlite3
import sys
import time
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs

import ipywidgets as w
from PIL import Image

from probes.errors import ProbeError
from probes.store import now

from . import access, compare, db, practice
from . import widgets as pw
from .errors import PanelUnavailable, RatingError
from .session import too_many_pixels

logger = logging.getLogger(__name__)
LOG_FILE = Path("logs") / "rating-app.log"  # in the study folder: the study team's record of problems
SHA256_NAME = re.compile(r"[0-9a-f]{64}")  # medprobe stores images as images/<sha256>.png
CACHED_IMAGES = 64
UNAVAILABLE_TEXT = ("Panel {number} cannot be shown: one of its images is missing or cannot be read. "
                    "The study team has been told; please go on with the next panel.")
STALE_TEXT = "⚠ Not saved: this panel was changed in another window. Please reload the page."
READ_ONLY_TEXT = ("This study's folder is read-only, so your answers cannot be saved. Please ask the study "
                  "team to make the study folder writable, then reload this page.")
REFUSED_TEXT = ("This link does not open the rating study: please use the personal link the study team sent you, "
                "or ask them for a new one.")
RATE_LIMITED_TEXT = ("Too many keys that do not work were tried from here: please wait 15 minutes, or ask the "
                     "study team for a new link.")
LOCAL_NOTE = ("This study has no personal rater links, so whoever opens this page can rate as any rater: fine for "
              "one researcher on their own computer. For clinicians, the study team sends each a personal link "
              "(python -m ratings invite).")
USER_AGENT_CHARS = 400  # kept in the audit trail
CANNOT_OPEN_TEXT = ("The rating app cannot open this study. Please tell the study team; the details are in "
                    "the rating server's log.")
COMMENT_CHARS = 5_000  # the longest comment kept; said under the comment box
COMMENT_NOTE = f"Comments can be up to {COMMENT_CHARS:,} characters."
TOO_LONG_TEXT = ("⚠ Not saved: your comment is {length:,} characters long, and a comment can be at most "
                 f"{COMMENT_CHARS:,}. Please shorten it.")
CONNECTION_LOST_TEXT = pw.CONNECTION_LOST_TEXT

KEYS_HINT = ("<b>Keys</b>: <kbd>0</kbd>–<kbd>4</kbd> answer the highlighted question, then the next "
             "(<kbd>↑</kbd> <kbd>↓</kbd> choose the question) · <kbd>N</kbd> nonsensical · "
             "<kbd>Enter</kbd> or <kbd>→</kbd> next (once the panel is answered) · <kbd>←</kbd> previous · "
             "<kbd>E</kbd> then <kbd>1</kbd>–<kbd>4</kbd> enlarge an image · <kbd>Esc</kbd> close it. "
             "Keys do nothing while you type a comment.")
COMPARE_KEYS_HINT = ("<b>Keys</b>: <kbd>1</kbd> left better · <kbd>2</kbd> right better · <kbd>3</kbd> both good · "
                     "<kbd>4</kbd> both poor, for the highlighted question, then the next (<kbd>↑</kbd> <kbd>↓</kbd> "
                     "choose the question) · <kbd>N</kbd> / <kbd>M</kbd> left / right images nonsensical · "
                     "<kbd>Enter</kbd> or <kbd>→</kbd> next · <kbd>←</kbd> previous · <kbd>E</kbd> then "
                     "<kbd>1</kbd>–<kbd>8</kbd> enlarge an image (1–4 left, 5–8 right) · <kbd>Esc</kbd> close it.")
VIEWER_HINT = ("<kbd>←</kbd> <kbd>→</kbd> the other images · <kbd>+</kbd> <kbd>−</kbd> or the mouse wheel zoom · "
               "drag to move · <kbd>Esc</kbd> close")
ZOOM_BUTTONS = ("<span class='mp-zoom-bar'>"
                "<button type='button' class='mp-zoom' data-zoom='out' title='Zoom out (−)'>−</button>"
                "<button type='button' class='mp-zoom' data-zoom='in' title='Zoom in (+)'>+</button>"
                "<button type='button' class='mp-zoom' data-zoom='fit' title='Fit to the screen (F)'>Fit</button>"
                "<button type='button' class='mp-zoom' data-zoom='actual' "
                "title='One image pixel to one screen pixel'>1:1</button></span>")
CSS = """
<style>
.mp-app { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; font-size: 15px; max-width: 1600px;
          box-sizing: border-box; }
.mp-app h2 { margin: 6px 0 10px 0; font-weight: 600; }
.mp-prompt { font-size: 19px; padding: 8px 14px; background: #f2f5fa; border-left: 4px solid #3a6ea5; margin: 4px 0 8px 0; }
.mp-question { font-weight: 600; margin-top: 4px; }
.mp-anchors { color: #555; font-size: 13px; margin: 2px 0 4px 0; line-height: 1.35; }
.mp-saved { font-size: 14px; color: #1b7f3b; }
.mp-unsaved { font-size: 14px; color: #8a6d00; }
.mp-error { font-size: 14px; color: #b00020; font-weight: 600; }
.mp-tile img { border: 1px solid #ccc; image-rendering: auto; box-sizing: border-box; }
/* a tile or the enlarged view shows the stored file scaled by the browser, whatever its shape
   (SDXL's 1024 px, FLUX's 1024 x 768): letterboxed, never cropped or stretched, never re-encoded */
.mp-app img { object-fit: contain; background: #f2f2f2; }
.mp-app .widget-toggle-buttons .widget-toggle-button { width: 56px; font-size: 15px; }
.mp-app .widget-toggle-button.mod-active { background: #3a6ea5; color: #fff; font-weight: 600; }
.mp-app .jupyter-button { width: auto; max-width: 100%; padding: 0 12px; }
.mp-app kbd { font-family: inherit; font-size: 12px; border: 1px solid #bbb; border-bottom-width: 2px;
              border-radius: 3px; padding: 0 4px; background: #fafafa; }
.mp-keys { color: #444; font-size: 13px; line-height: 1.6; }
.mp-app .mp-text { max-width: 60em; }
.mp-app .mp-start, .mp-app .mp-finish-buttons .jupyter-button { align-self: flex-start; }
/* the page fills the window: the prompt on top, the four images in the space left, the
   questions in a column beside them; the tile size comes from the image area's own size
   (container units), so a long prompt makes the images smaller, never pushes Next away */
.mp-app .mp-panel { display: grid; height: calc(100vh - 56px); min-height: 500px; column-gap: 16px;
                    grid-template-columns: minmax(0, 1fr) 380px; grid-template-rows: auto auto; grid-auto-rows: auto;
                    align-content: start; }
.mp-app .mp-panel > * { grid-column: 2; min-width: 0; }
.mp-app .mp-panel > .mp-head, .mp-app .mp-panel > .mp-prompt-slot { grid-column: 1 / -1; }
.mp-app .mp-panel > .mp-viewer { grid-column: 1; grid-row: 3 / -1; min-height: 0; container-type: size; }
.mp-app .mp-progress { white-space: nowrap; }
.mp-app .mp-grid { --mp-tile: min(calc((100cqh - 84px) / 2), calc((100cqw - 10px) / 2));
                   display: grid; grid-template-columns: repeat(2, var(--mp-tile)); gap: 6px 8px;
                   justify-content: center; align-content: start; }
.mp-app .mp-tile { min-width: 0; }
.mp-app .mp-tile img { width: var(--mp-tile); height: var(--mp-tile); margin: 0; }
.mp-app .mp-tile .jupyter-button { width: 100%; margin: 2px 0 0 0; }
.mp-app .mp-scale { padding: 2px 8px 2px 8px; border-left: 4px solid transparent; border-radius: 2px; }
.mp-app .mp-scale.mp-scale-active { border-left-color: #3a6ea5; background: #f2f5fa; }
.mp-app .mp-comment textarea { width: 100%; }
.mp-app .mp-comment { max-width: calc(100% - 6px); box-sizing: border-box; }
.mp-app .mp-nav { flex-wrap: wrap; }
/* the viewer: one image at its full resolution, fit to the space, then zoomed and moved (JS) */
.mp-app .mp-viewer-bar { flex: 0 0 auto; flex-wrap: wrap; align-items: center; gap: 4px; }
.mp-app .mp-viewer-bar .widget-html { margin: 0 6px; }
.mp-zoom-bar { display: inline-flex; gap: 4px; }
.mp-zoom { font: inherit; font-size: 14px; min-width: 34px; height: 28px; border: 1px solid #bbb; border-radius: 2px;
           background: #eee; cursor: pointer; padding: 0 8px; }
.mp-app .mp-stage { flex: 1 1 0; min-height: 0; position: relative; overflow: hidden; background: #222;
                    cursor: grab; touch-action: none; }
.mp-app .mp-stage.mp-dragging { cursor: grabbing; }
.mp-app .mp-stage img { position: absolute; left: 0; top: 0; max-width: none; max-height: none;
                        transform-origin: 0 0; background: transparent; user-select: none; -webkit-user-drag: none; }
.mp-app .mp-stage .widget-image { margin: 0; }
/* a phone: one column, the four images two by two across the width, the page scrolls */
@media (max-width: 760px) {
  .mp-app .mp-panel { height: auto; min-height: 0; grid-template-columns: minmax(0, 1fr); }
  .mp-app .mp-panel > * { grid-column: 1; }
  .mp-app .mp-panel > .mp-viewer { grid-row: auto; container-type: inline-size; }
  .mp-app .mp-head .widget-progress { width: auto !important; flex: 1 1 60px; min-width: 40px; }
  .mp-app .mp-grid { --mp-tile: calc((100cqw - 10px) / 2); }
  .mp-app .mp-stage { flex: 0 0 auto; height: 70vh; }
  .mp-app .widget-toggle-buttons .widget-toggle-button { width: 52px; }
  .mp-prompt { font-size: 17px; }
  .mp-app .mp-viewer-bar .mp-keys { display: none; }  /* keys a phone does not have */
}
/* the kernel is gone (ratings.widgets.connection_watch): no saved state is shown, one sentence is */
.mp-app.mp-lost .mp-saved, .mp-app.mp-lost .mp-unsaved { display: none; }
.mp-lost-banner { position: fixed; top: 0; left: 0; right: 0; z-index: 1000; background: #fff4f4; border: 2px solid #b00020;
                  border-radius: 4px; padding: 10px 14px; margin: 0 0 10px 0; }
.mp-lost-here { margin-top: 4px; }
/* practice: a badge in the head, and the team's reference beside the rater's answer */
.mp-practice-badge { background: #8a6d00; color: #fff; border-radius: 3px; padding: 1px 8px; font-weight: 600; }
.mp-feedback { border: 1px solid #c9b458; background: #fffbea; border-radius: 3px; padding: 6px 10px; font-size: 14px;
               line-height: 1.4; }
.mp-app .mp-scale > * { flex-shrink: 0; }  /* a full column never squeezes the score buttons */
/* side by side: the two sets of four images of one prompt, the questions beside them */
.mp-app .mp-cmp-sides { flex: 1 1 0; min-height: 0; display: flex; gap: 14px; }
.mp-app .mp-cmp-side { flex: 1 1 0; min-width: 0; min-height: 0; container-type: size; }
.mp-app .mp-cmp-side .mp-side-name { font-weight: 600; text-align: center; height: 22px; line-height: 22px; }
.mp-app .mp-cmp-side .mp-grid { --mp-tile: min(calc((100cqh - 22px - 84px) / 2), calc((100cqw - 10px) / 2)); }
.mp-app .mp-compare .mp-choices .widget-toggle-buttons { width: 100%; }
.mp-app .mp-compare .mp-choices .widget-toggle-buttons > div { display: grid; grid-template-columns: 1fr 1fr; gap: 4px;
                                                               width: 100%; }
.mp-app .mp-compare .mp-choices .widget-toggle-buttons .widget-toggle-button { width: auto; margin: 0; font-size: 14px; }
.mp-app .mp-panel.mp-compare { grid-template-columns: minmax(0, 1fr) 330px; }
@media (max-width: 1100px) { .mp-app .mp-panel.mp-compare { grid-template-columns: minmax(0, 1fr) 290px; } }
.mp-app .mp-flags { flex-wrap: wrap; column-gap: 12px; }
.mp-app .mp-flags .widget-checkbox { width: auto; }
.mp-block-badge { background: #3a6ea5; color: #fff; border-radius: 3px; padding: 1px 8px; font-weight: 600; }
@media (max-width: 760px) {
  .mp-app .mp-panel.mp-compare { grid-template-columns: minmax(0, 1fr); }
  .mp-app .mp-cmp-sides { flex-direction: column; flex: 0 0 auto; }
  .mp-app .mp-cmp-side { flex: 0 0 auto; container-type: inline-size; }
  .mp-app .mp-cmp-side .mp-grid { --mp-tile: calc((100cqw - 10px) / 2); }
}
.mp-examples .mp-example-row { display: flex; flex-wrap: wrap; gap: 10px; margin: 4px 0 10px 0; }
.mp-example { margin: 0; width: 150px; font-size: 13px; }
.mp-example img { width: 150px; height: 150px; border: 1px solid #ccc; display: block; }
</style>
"""


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PIXEL_CHUNKS = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"}


def _strip_to_png(path) -> bytes:
    return _pixels_only(Path(path).read_bytes())


def _pixels_only(data: bytes) -> bytes:
    """Pixels only, so nothing in the file can unblind: a PNG keeps just the chunks that carry
    pixels (no text, time or profile chunks), without re-encoding, which cost 24 ms an image;
    anything else is re-encoded."""
    if data.startswith(PNG_SIGNATURE):
        kept, pos = [PNG_SIGNATURE], len(PNG_SIGNATURE)
        while pos + 8 <= len(data):
            length = int.from_bytes(data[pos:pos + 4], "big")
            end = pos + 12 + length  # length, type, data, CRC
            if data[pos + 4:pos + 8] in PIXEL_CHUNKS:
                kept.append(data[pos:end])
            pos = end
        return b"".join(kept)
    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _checked_pixels(conn, image_token: str) -> bytes:
    """The pixels the browser gets for one image, once they are known to be showable: the file
    is there and readable, and its bytes are the ones medprobe wrote (the SHA-256 it is named
    after) and a well-formed image, or, for a file not named so, they decode."""
    path = db.image_file(conn, image_token)
    data = path.read_bytes()
    named_by_hash = SHA256_NAME.fullmatch(path.stem) is not None
    if named_by_hash and hashlib.sha256(data).hexdigest() != path.stem:
        raise ValueError(f"{path}: the file's SHA-256 is not the one in its name: it was changed or damaged")
    pixels = _pixels_only(data)
    with Image.open(io.BytesIO(pixels)) as image:
        too_large = too_many_pixels(*image.size)  # a decompression bomb is never decoded or sent
        if too_large:
            raise ValueError(f"{path}: {too_large}")
        # the bytes medprobe encoded need only their structure checked (0.2 ms; decoding every
        # image costs 2.4 ms at 256 px, ten times the rest of a panel change); others are decoded
        if named_by_hash:
            image.verify()
        else:
            image.load()
    return pixels


class UnavailableApp:
    """What Voilà shows instead of the app when the study cannot be opened for rating."""

    def __init__(self, text: str):
        self.message = text
        self.widget = pw.VBox([pw.HTML(CSS), pw.HTML(f"<h2>Image rating study</h2><div class='mp-error'>"
                                                  f"{html.escape(text)}</div>")], layout=pw.Layout(padding="8px"))
        self.widget.add_class("mp-app")

    def close(self) -> None:
        pass


def _log_to_server_console() -> None:
    """Send the app's log to the terminal running Voilà: in a kernel, sys.stderr is the page."""
    handler = next((h for h in logger.handlers if getattr(h, "medprobe_console", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.__stderr__)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        handler.medprobe_console = True
        logger.addHandler(handler)
    pw.quiet_comm_errors(handler)  # a message the kernel could not handle: its traceback stays here too


def client_from_environment() -> access.Client:
    """The browser's User-Agent, and the client's address as the rating server found it
    (``ratings.gate``: the connection's, or what a trusted proxy reported), from Voilà's HTTP_*
    variables. Headers as the browser sent them (X-Forwarded-For, X-Real-IP) are never read;
    anything that is not an IP address is dropped."""
    import ipaddress

    agent = os.environ.get("HTTP_USER_AGENT") or None
    try:
        address = str(ipaddress.ip_address(os.environ.get("HTTP_X_MEDPROBE_CLIENT", "").strip()))
    except ValueError:
        address = None
    return access.Client(agent[:USER_AGENT_CHARS] if agent else None, address)


class RatingApp:
    """The rating app for one study; display ``app.widget``.

    Parameters
    ----------
    study : str or Path
        Study folder with rating sessions built (``python -m ratings build``).
    rater : str, optional
        Rater id, in a study without personal links; when None the app first asks who is rating.
        A study with links refuses it (a rater is admitted by their key only).
    key : str, optional
        The key from a rater's personal link (``?key=...``).
    client : access.Client, optional
        The browser's User-Agent and address, for the audit trail.
    """

    def __init__(self, study, rater: str | None = None, *, key: str | None = None,
                 client: access.Client | None = None):
        self.study = study
        self.conn = db.open_db(study)
        self.scale = db.get_config(self.conn, "scale")
        if self.scale is None:
            self.conn.close()
            raise RatingError(f"{study}: no rating sessions yet; run `python -m ratings build --study "
                              f"{study} --raters A,B,C` first")
        self._images: OrderedDict[str, bytes] = OrderedDict()
        self.session = secrets.token_hex(8)  # this app session, in the audit trail and on every answer
        self.client = client or access.Client()
        self.invited = access.invited(self.conn)  # raters come in by their personal key only
        self._key_id: str | None = None  # the key this rater came in with
        self.rater: str | None = None
        self.assignments: list[db.Assignment] = []
        self.answers: dict[int, db.Answer] = {}
        # practice panels (ratings.practice): shown first, answered apart, never part of the study
        self.practice: list[practice.PracticePanel] = []
        self.practice_answers: dict[str, db.Answer] = {}
        self.in_practice = False  # the panels on show are the practice panels
        # side-by-side comparisons (ratings.compare): a block of their own, in the study team's order
        self.comparisons: list[compare.Comparison] = []
        self.compare_answers: dict[int, compare.ComparisonAnswer] = {}
        self.blocks: list[str] = []  # the rater's blocks with something in them, in order
        self.block = "absolute"  # the study block on show (while not in the practice)
        self.index = 0
        # index of the assignment whose answer the widgets hold; None while they hold none
        # (before the first panel, while loading one, on a page without them): then no
        # widget event may save
        self._shown: int | None = None
        self._unavailable: set[str] = set()  # panels that could not be shown (a repeat shows the same)
        self._reported: set[str] = set()  # panels already in the study team's log this session
        self._shown_at = time.monotonic()
        self._build_widgets()
        self.widget = pw.VBox([pw.HTML(CSS + self._rows_css()), self.page], layout=pw.Layout(padding="8px"))
        self.widget.add_class("mp-app")
        if self.invited:
            if rater is not None:
                self.login(rater)  # refused, and recorded
            elif key:
                self.login_with_key(key)
            else:
                self._show_refused(REFUSED_TEXT)
        elif rater:
            self.login(rater)
        else:
            self._show_login()

    @classmethod
    def from_environment(cls, study: str | None = None) -> RatingApp | UnavailableApp:
        """For Voilà: study from MEDPROBE_STUDY; the rater's key (?key=...) from the URL, or in a
        study without personal links a rater id (?rater=A); the User-Agent and the address a
        reverse proxy reports from the headers Voilà hands on (``ratings.serve``).

        A study that cannot be opened gives a page saying so (details in the server's log),
        never a traceback on the rater's screen.
        """
        _log_to_server_console()
        study = study or os.environ.get("MEDPROBE_STUDY", "demo-study")
        query = parse_qs(os.environ.get("QUERY_STRING", ""))
        try:
            return cls(study, rater=(query.get("rater") or [None])[0], key=(query.get(access.KEY_PARAM) or [None])[0],
                       client=client_from_environment())
        except db.ReadOnlyStudyError as exc:
            logger.error("%s", exc)
            return UnavailableApp(READ_ONLY_TEXT)
        except (ProbeError, RatingError) as exc:  # the store's own checks, or the rating side's
            logger.error("%s", exc)
            return UnavailableApp(CANNOT_OPEN_TEXT)
        except Exception:  # a full disk, a damaged database, anything: the rater gets one sentence
            logger.error("the rating app cannot open the study %s", study, exc_info=True)
            return UnavailableApp(CANNOT_OPEN_TEXT)

    # --- widgets ----------------------------------------------------------------------

    def _build_widgets(self) -> None:
        self.page = pw.VBox()
        self.login_message = pw.HTML()
        if self.invited:  # the key box; no widget ever holds the study's rater ids
            self.key_text = pw.Password(placeholder="the key from your link", description="Key")
            self.key_button = pw.Button(description="Continue", button_style="primary")
            self.key_button.on_click(lambda _: self._key_typed())
            self.refused_html = pw.HTML()
        else:  # a study without links: choose or type a rater id
            self.rater_pick = pw.Dropdown(options=[""] + db.raters(self.conn), description="Your rater id")
            self.rater_text = pw.Text(placeholder="or type it here", description="")
            self.login_button = pw.Button(description="Continue", button_style="primary")
            self.login_button.on_click(lambda _: self.login(self.rater_text.value.strip() or self.rater_pick.value))
        self.welcome_html = pw.HTML()
        self.welcome_html.add_class("mp-text")
        # instructions
        self.start_button = pw.Button(description="Start rating", button_style="primary", icon="play")
        self.start_button.on_click(lambda _: self.start())
        # panel
        self.start_button.add_class("mp-start")
        self.progress_label = pw.HTML()
        self.progress_label.add_class("mp-progress")
        self.progress_bar = pw.IntProgress(min=0, max=1, layout=pw.Layout(width="200px"))
        self.prompt_html = pw.HTML()
        self.prompt_html.add_class("mp-prompt-slot")
        # no fixed size: the page's CSS sizes the tiles to the window (see CSS)
        self.images = [pw.Image(format="png") for _ in range(4)]
        self.enlarge_buttons = [pw.Button(description=f"Enlarge {i + 1}", icon="search-plus") for i in range(4)]
        tiles = []
        for i, (image, button) in enumerate(zip(self.images, self.enlarge_buttons, strict=True)):
            button.on_click(lambda _, i=i: self.enlarge(i))
            button.add_class("mp-enlarge")
            tile = pw.VBox([image, button])
            tile.add_class("mp-tile")
            tiles.append(tile)
        self.grid = pw.Box(tiles)
        self.grid.add_class("mp-grid")
        # the viewer: the same bytes as the tile (the stored file's pixels, at full resolution)
        self.enlarged: int | None = None  # the image the viewer shows; None while it is closed
        self.big_image = pw.Image(format="png")
        self.big_image.add_class("mp-big")
        self.stage = pw.Box([self.big_image])
        self.stage.add_class("mp-stage")
        self.viewer_title = pw.HTML()
        self.image_prev_button = pw.Button(description="Previous image", icon="chevron-left")
        self.image_next_button = pw.Button(description="Next image", icon="chevron-right")
        self.back_button = pw.Button(description="Close (Esc)", icon="th-large")
        self.image_prev_button.on_click(lambda _: self.step_enlarged(-1))
        self.image_next_button.on_click(lambda _: self.step_enlarged(+1))
        self.back_button.on_click(lambda _: self.close_enlarged())
        for button, css in ((self.image_prev_button, "mp-image-prev"), (self.image_next_button, "mp-image-next"),
                            (self.back_button, "mp-viewer-close")):
            button.add_class(css)
        self.viewer_bar = pw.HBox([self.viewer_title, self.image_prev_button, self.image_next_button,
                                   pw.HTML(ZOOM_BUTTONS), self.back_button,
                                   pw.HTML(f"<span class='mp-keys'>{VIEWER_HINT}</span>")])
        self.viewer_bar.add_class("mp-viewer-bar")
        self.viewer = pw.VBox([self.grid])
        self.viewer.add_class("mp-viewer")

        self.scores: dict[str, w.ToggleButtons] = {}
        scale_rows = []
        for dim in self.scale["dimensions"]:
            buttons = pw.ToggleButtons(options=[(str(v), v) for v, _ in dim["anchors"]], value=None,
                                      tooltips=[f"{v} = {label}" for v, label in dim["anchors"]])
            buttons.observe(self._on_change, names="value")
            self.scores[dim["id"]] = buttons
            anchors = " &nbsp;·&nbsp; ".join(f"<b>{v}</b> {html.escape(label)}" for v, label in dim["anchors"])
            row = pw.VBox([pw.HTML(f"<div class='mp-question'>{html.escape(dim['question'])}</div>"),
                           buttons, pw.HTML(f"<div class='mp-anchors'>{anchors}</div>")])
            row.add_class("mp-scale")  # the keyboard's digits go to the highlighted one (ratings.widgets)
            scale_rows.append(row)
        self.nonsensical = pw.Checkbox(description=self.scale.get("nonsensical", "The prompt is nonsensical"),
                                      indent=False)
        self.nonsensical.add_class("mp-flag")
        self.nonsensical.observe(self._on_change, names="value")
        self.comment = pw.Textarea(placeholder=self.scale.get("comment", "Comment (optional)"),
                                  continuous_update=False, layout=pw.Layout(width="520px", height="3.2em"))
        self.comment.add_class("mp-comment")
        self.comment.observe(self._on_change, names="value")
        self.comment_note = pw.HTML(f"<div class='mp-anchors'>{html.escape(COMMENT_NOTE)}</div>")
        self.saved = pw.HTML()
        self.saved.add_class("mp-saved-slot")  # where the page says so if its kernel is gone
        self.feedback = pw.HTML()  # a practice panel's reference rating, once the rater has answered
        self.feedback.add_class("mp-feedback-slot")
        self.prev_button = pw.Button(description="Previous", icon="arrow-left")
        self.next_button = pw.Button(description="Next", icon="arrow-right", button_style="primary")
        self.unrated_button = pw.Button(description="First unrated", icon="fast-forward")
        self.prev_button.on_click(lambda _: self.go_to(self.index - 1))
        self.next_button.on_click(lambda _: self.go_to(self.index + 1))
        self.unrated_button.on_click(lambda _: self.go_to(self.first_unrated()))
        for button, css in ((self.prev_button, "mp-prev"), (self.next_button, "mp-next"),
                            (self.unrated_button, "mp-first-unrated")):
            button.add_class(css)
            button.add_class("mp-go")  # the keyboard waits for the panel a click on these brings
        progress = pw.HBox([self.progress_label, self.progress_bar], layout=pw.Layout(align_items="center",
                                                                                    grid_gap="12px"))
        progress.add_class("mp-head")
        navigation = pw.HBox([self.prev_button, self.next_button, self.unrated_button])
        navigation.add_class("mp-nav")
        self.keys_hint = pw.HTML(f"<div class='mp-keys'>{KEYS_HINT}</div>")
        side = [*scale_rows, self.nonsensical, self.comment, self.comment_note, self.saved, self.feedback,
                navigation, self.keys_hint]
        for widget in side:
            widget.add_class("mp-side")  # the column beside the images (the page's CSS grid)
        self.panel_page = pw.VBox([progress, self.prompt_html, self.viewer, *side])
        self.panel_page.add_class("mp-panel")
        # a panel that cannot be shown: no scores to give, but the way on
        self.unavailable_html = pw.HTML()
        self.unavailable_page = pw.VBox([progress, self.unavailable_html, navigation])
        # finish
        self.finish_html = pw.HTML()
        self.review_button = pw.Button(description="Back to the panels", icon="arrow-left")
        self.review_button.on_click(lambda _: self._to_study(
            len(self._block_items(self.blocks[-1])) - 1 if self.blocks else 0, self.blocks[-1] if self.blocks else None))
        self.finish_unrated_button = pw.Button(description="Go to first unrated", button_style="warning")
        self.finish_unrated_button.on_click(lambda _: self._to_study(None))
        # the end of the practice: the study comes next
        self.practice_done_html = pw.HTML()
        self.study_button = pw.Button(description="Start the study", button_style="primary", icon="play")
        self.study_button.add_class("mp-start")
        self.study_button.on_click(lambda _: self._to_study(None))
        self.practice_back_button = pw.Button(description="Back to the practice", icon="arrow-left")
        self.practice_back_button.on_click(lambda _: self.go_to(len(self.practice) - 1))
        # the end of one study block when another follows
        self.block_done_html = pw.HTML()
        self.next_block_button = pw.Button(description="Continue", button_style="primary", icon="play")
        self.next_block_button.add_class("mp-start")
        self.next_block_button.on_click(lambda _: self._next_block())
        self.block_back_button = pw.Button(description="Back", icon="arrow-left")
        self.block_back_button.on_click(lambda _: self.go_to(len(self._items()) - 1))
        self._build_compare_widgets(progress, navigation)

    def _build_compare_widgets(self, progress, navigation) -> None:
        """The side-by-side page: the prompt, the left and right sets of images, a choice per question."""
        self.cmp_images, self.cmp_enlarge, sides = [], [], []
        for side, name in ((0, "Left"), (1, "Right")):
            tiles = []
            for i in range(4):
                image = pw.Image(format="png")
                button = pw.Button(description=f"Enlarge {name[0]}{i + 1}", icon="search-plus")
                position = side * 4 + i
                button.on_click(lambda _, position=position: self.enlarge(position))
                button.add_class("mp-enlarge")
                tile = pw.VBox([image, button])
                tile.add_class("mp-tile")
                tiles.append(tile)
                self.cmp_images.append(image)
                self.cmp_enlarge.append(button)
            grid = pw.Box(tiles)
            grid.add_class("mp-grid")
            group = pw.VBox([pw.HTML(f"<div class='mp-side-name'>{name}</div>"), grid])
            group.add_class("mp-cmp-side")
            sides.append(group)
        self.cmp_sides = pw.HBox(sides)
        self.cmp_sides.add_class("mp-cmp-sides")
        self.cmp_viewer = pw.VBox([self.cmp_sides])
        self.cmp_viewer.add_class("mp-viewer")
        self.choices: dict[str, w.ToggleButtons] = {}
        rows = []
        for dim in self.scale["dimensions"]:
            buttons = pw.ToggleButtons(options=[(f"{n} {compare.CHOICE_LABELS[c]}", c)
                                                for n, c in enumerate(compare.CHOICES, start=1)], value=None)
            buttons.observe(self._on_compare_change, names="value")
            self.choices[dim["id"]] = buttons
            question = f"{dim['id'].capitalize()}: which set is better?"
            row = pw.VBox([pw.HTML(f"<div class='mp-question'>{html.escape(question)}</div>"), buttons])
            row.add_class("mp-scale")
            row.add_class("mp-choices")
            rows.append(row)
        self.flag_left = pw.Checkbox(description="Left images nonsensical", indent=False)
        self.flag_left.add_class("mp-flag")
        self.flag_right = pw.Checkbox(description="Right images nonsensical", indent=False)
        self.flag_right.add_class("mp-flag-right")
        for flag in (self.flag_left, self.flag_right):
            flag.observe(self._on_compare_change, names="value")
        flags = pw.HBox([self.flag_left, self.flag_right])
        flags.add_class("mp-flags")
        self.cmp_comment = pw.Textarea(placeholder=self.scale.get("comment", "Comment (optional)"),
                                       continuous_update=False, layout=pw.Layout(width="520px", height="3.2em"))
        self.cmp_comment.add_class("mp-comment")
        self.cmp_comment.observe(self._on_compare_change, names="value")
        keys = pw.HTML(f"<div class='mp-keys'>{COMPARE_KEYS_HINT}</div>")
        side = [*rows, flags, self.cmp_comment, pw.HTML(f"<div class='mp-anchors'>{html.escape(COMMENT_NOTE)}</div>"),
                self.saved, navigation, keys]
        for widget in side:
            widget.add_class("mp-side")
        self.compare_page = pw.VBox([progress, self.prompt_html, self.cmp_viewer, *side])
        self.compare_page.add_class("mp-panel")
        self.compare_page.add_class("mp-compare")

    def _rows_css(self) -> str:
        """The panel's grid rows beside the images: one per question and control, and the last
        takes the height left, so the images fill the window's height (a scale's questions vary)."""
        rows = " ".join(["auto"] * (len(self.scale["dimensions"]) + 6))
        compared = " ".join(["auto"] * (len(self.scale["dimensions"]) + 5))
        return ("<style>@media (min-width: 761px) { .mp-app .mp-panel { grid-template-rows: auto auto "
                f"{rows} minmax(0, 1fr); }} .mp-app .mp-panel.mp-compare {{ grid-template-rows: auto auto "
                f"{compared} minmax(0, 1fr); }} }}</style>")

    # --- pages ------------------------------------------------------------------------

    def _show_login(self, message: str = "") -> None:
        self.login_message.value = f"<div class='mp-error'>{html.escape(message)}</div>" if message else ""
        self.page.children = [pw.HTML("<h2>Image rating study</h2><p>Please choose or type the rater id you were "
                                     "given, then press Continue.</p>"
                                     f"<p class='mp-anchors'>{html.escape(LOCAL_NOTE)}</p>"),
                              self.rater_pick, self.rater_text, self.login_button, self.login_message]

    def _show_refused(self, text: str) -> None:
        """The page of a study with links, for anyone not (or no longer) admitted: one sentence
        and a box for a key; nothing of the study."""
        self.refused_html.value = (f"<h2>Image rating study</h2><div class='mp-error'>{html.escape(text)}</div>"
                                   "<p>If you were sent a key rather than a link, paste it here:</p>")
        self.key_text.value = ""
        self.page.children = [self.refused_html, self.key_text, self.key_button]

    def _audit(self, event: str, rater: str | None = None, **detail) -> None:
        access.record(self.conn, event, rater=rater, session=self.session, client=self.client, detail=detail)

    def login(self, rater: str | None) -> None:
        """Log a rater in by id: a study without personal links only (else refused, and recorded)."""
        if self.invited:
            self._audit("login_refused", reason="rater id given", rater_given=str(rater)[:80])
            return self._show_refused(REFUSED_TEXT)
        if not rater:
            return self._show_login("Please choose or type your rater id.")
        try:
            self._enter(rater)
        except RatingError:
            return self._show_login(f"There is no rater '{rater}' in this study. Check the id you were given.")
        self._audit("login", rater, by="rater id (a study without personal links)")

    def _key_typed(self) -> None:
        key, self.key_text.value = self.key_text.value, ""
        self.login_with_key(key)

    def login_with_key(self, key: str | None) -> None:
        """Admit the rater whose working key this is; anything else gets :data:`REFUSED_TEXT`.

        After MAX_FAILURES refused keys from this session (or from this client address) within
        the window, a wrong key is refused as rate limited; a working key still comes in (the
        limit slows guessing, it must not lock out raters who share an address).
        """
        if not self.invited:
            return self._show_login()
        limited = access.recent_failures(self.conn, self.session, self.client.address) >= access.MAX_FAILURES
        verdict = access.check_key(self.conn, key)
        if verdict.admitted is None and limited:
            self._audit("rate_limited", reason=verdict.reason, key_id=verdict.key_id)
            return self._show_refused(RATE_LIMITED_TEXT)
        if verdict.admitted is None:
            self._audit("login_refused", verdict.owner, reason=verdict.reason, key_id=verdict.key_id)
            return self._show_refused(REFUSED_TEXT)
        self._enter(verdict.admitted.rater)
        self._key_id = verdict.admitted.key_id
        self._audit("login", self.rater, key_id=self._key_id)

    def _enter(self, rater: str) -> None:
        # imported panels (ratings from other studies) have no images to show
        self.assignments = [a for a in db.assignments(self.conn, rater) if a.image_tokens]
        self.rater = rater
        self.answers = db.latest_answers(self.conn, rater)
        self.practice = practice.practice_for(self.conn, rater)
        self.practice_answers = practice.latest_practice_answers(self.conn, rater)
        self.comparisons = compare.comparisons_for(self.conn, rater)
        self.compare_answers = compare.latest_comparison_answers(self.conn, rater)
        self.blocks = [b for b in compare.block_order(self.conn)
                       if (self.comparisons if b == "compare" else self.assignments)]
        self.block = self.blocks[0] if self.blocks else "absolute"
        self.in_practice = False
        self._shown, self._unavailable, self._reported = None, set(), set()
        self._show_instructions()

    def _still_admitted(self) -> bool:
        """False, with the page emptied, once this rater's key was revoked (or rotated)."""
        if not self.invited:
            return self.rater is not None
        if self._key_id is not None and access.key_active(self.conn, self._key_id):
            return True
        if self.rater is not None:
            self._lock_out()
        return False

    def _lock_out(self) -> None:
        """Take everything of the rater off the page: the widgets are emptied, not just hidden."""
        self._audit("revoked_session", self.rater, key_id=self._key_id)
        self._shown = None  # the value changes below are not the rater's
        self.rater, self._key_id, self.assignments, self.answers, self.index = None, None, [], {}, 0
        self.practice, self.practice_answers, self.in_practice = [], {}, False
        self.comparisons, self.compare_answers, self.blocks = [], {}, []
        self._images.clear()
        for widget in (self.welcome_html, self.prompt_html, self.progress_label, self.saved, self.finish_html,
                       self.unavailable_html, self.feedback, self.practice_done_html, self.block_done_html):
            widget.value = ""
        for image in (*self.images, *self.cmp_images, self.big_image):
            image.value = b""
        for buttons in (*self.scores.values(), *self.choices.values()):
            buttons.value = None
        self.nonsensical.value, self.comment.value = False, ""
        self.flag_left.value, self.flag_right.value, self.cmp_comment.value = False, False, ""
        self.progress_bar.value = 0
        self.close_enlarged()
        self._show_refused(REFUSED_TEXT)

    def _show_instructions(self) -> None:
        done = self.n_study_rated()
        anchors = "".join(f"<tr><td style='padding:2px 12px'><b>{v}</b></td><td>{html.escape(label)}</td></tr>"
                          for v, label in self.scale["dimensions"][0]["anchors"])
        questions = "".join(f"<li>{html.escape(d['question'])}</li>" for d in self.scale["dimensions"])
        practice_left = self.practice_left()
        if practice_left:
            n = len(self.practice)
            self.start_button.description = (f"Start the practice ({n} panel{'s' if n > 1 else ''})"
                                              if practice_left == len(self.practice) else "Continue the practice")
        else:
            self.start_button.description = "Continue where you left off" if done else "Start rating"
        total = len(self.assignments) + len(self.comparisons)
        compare_text = ""
        if self.comparisons:
            n = len(self.comparisons)
            where = ("first" if self.blocks[0] == "compare" else "after the panels") if self.assignments else ""
            compare_text = (
                f"<p class='mp-compare-intro'><b>Side by side.</b> {'You will also see' if self.assignments else 'You will see'} "
                f"{n} comparison{'s' if n > 1 else ''}{' ' + where if where else ''}: two sets of four images made "
                "for the same prompt, <i>Left</i> and <i>Right</i>. For each question say which set is better, or "
                "that both are good or both poor; tick <i>Left images nonsensical</i> (or Right) where a set makes "
                "no sense. Left and right are assigned at random.</p>")
        practice_text = ""
        if self.practice:
            practice_text = (
                f"<p class='mp-practice-intro'><b>Practice first.</b> You begin with {len(self.practice)} practice "
                f"panel{'s' if len(self.practice) > 1 else ''}, marked <i>Practice</i>, to get used to the scale. When you have answered one, the study "
                "team's own rating of it is shown beside yours. Practice answers are not part of the study."
                + ("" if practice_left else " You have done the practice.") + "</p>")
        panels_text = (f"<p>You will see {len(self.assignments)} panels. Each shows a text prompt and four images a "
                       "computer model made for it. For each panel:</p>") if self.assignments else (
                       "<p>Each comparison shows a text prompt and images computer models made for it. The questions:</p>")
        self.welcome_html.value = (
            f"<h2>Welcome, {html.escape(self.rater)}</h2>"
            f"{panels_text}"
            f"<ul>{questions}</ul>"
            + (f"<p>Judge the <b>best</b> of the four images for each question, on this scale:</p><table>{anchors}</table>"
               f"{self._examples_html()}" if self.assignments or self.practice else "")
            + f"{compare_text}{practice_text}"
            + ("<p>Tick <i>The prompt is nonsensical</i> if the prompt itself makes no sense medically. "
               if self.assignments else "<p>") +
            "Click <i>Enlarge</i> under an image to see it at full resolution, zoom and move it, and step "
            "through the four. Every answer is saved the moment you give "
            "it: you can close the window at any time and continue later where you stopped.</p>"
            f"<p class='mp-keys'>{KEYS_HINT if self.assignments else COMPARE_KEYS_HINT}</p>"
            f"<p>Progress so far: {done} of {total} {'rated' if self.assignments else 'answered'}.</p>")
        self.page.children = [self.welcome_html, self.start_button]

    def _examples_html(self) -> str:
        """One example image per scale point, where the study team gave them (ratings scale-example)."""
        import base64

        examples = practice.scale_examples(self.conn)
        if not examples:
            return ""
        parts = ["<div class='mp-examples'><p><b>Examples</b> the study team chose for the scale points:</p>"]
        for dim in self.scale["dimensions"]:
            shown = examples.get(dim["id"])
            if not shown:
                continue
            labels = dict(dim["anchors"])
            figures = "".join(
                f"<figure class='mp-example'><img alt='{html.escape(dim['id'])} {v}: {html.escape(labels.get(v, ''))}' "
                f"src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"
                f"<figcaption><b>{v}</b> {html.escape(labels.get(v, ''))}"
                + (f"<br><span class='mp-anchors'>{html.escape(caption)}</span>" if caption else "")
                + "</figcaption></figure>" for v, (png, caption) in sorted(shown.items()))
            parts.append(f"<div class='mp-question'>{html.escape(dim['question'])}</div>"
                         f"<div class='mp-example-row'>{figures}</div>")
        return "".join(parts) + "</div>"

    def start(self) -> None:
        """The welcome page's button: the practice panels while any is unanswered, then the study."""
        if self.practice_left():
            self.in_practice = True
            return self.go_to(self.first_unrated())
        self._to_study(None)

    def _to_study(self, index: int | None, block: str | None = None) -> None:
        """Leave the practice (if on it) for the study's panel ``index`` of ``block`` (None: the
        first unrated one, in the first block that has one)."""
        if self.in_practice and not self._commit_comment():
            return
        self._shown = None
        self.in_practice = False
        if block is None and index is None:
            block = next((b for b in self.blocks if self._first_unrated_in(b) < len(self._block_items(b))),
                         self.blocks[-1] if self.blocks else "absolute")
        self.block = block or self.block
        self.go_to(self.first_unrated() if index is None else index)

    def _next_block(self) -> None:
        """From the end of one block to the next block's first unanswered item."""
        later = self.blocks[self.blocks.index(self.block) + 1:] if self.block in self.blocks else []
        if not later:
            return self._show_finish()
        self._shown = None
        self.block = later[0]
        self.go_to(self.first_unrated())

    def _block_items(self, block: str) -> list:
        return self.comparisons if block == "compare" else self.assignments

    def _first_unrated_in(self, block: str) -> int:
        items = self._block_items(block)
        for i, item in enumerate(items):
            answer = (self.compare_answers if block == "compare" else self.answers).get(item.seq)
            done = compare.is_complete(answer, self.scale) if block == "compare" else db.is_complete(answer, self.scale)
            if item.panel not in self._unavailable and not done:
                return i
        return len(items)

    def n_study_rated(self) -> int:
        """Answered items of every study block (not the practice)."""
        return (sum(db.is_complete(self.answers.get(a.seq), self.scale) for a in self.assignments)
                + sum(compare.is_complete(self.compare_answers.get(c.seq), self.scale) for c in self.comparisons))

    def _show_block_done(self) -> None:
        """The end of one study block with another to come: what comes next."""
        items = self._items()
        left = len(items) - self.n_rated()
        following = self.blocks[self.blocks.index(self.block) + 1]
        what = ("side-by-side comparisons" if following == "compare" else "panels")
        n = len(self._block_items(following))
        text = (f"<h2>Part {self.blocks.index(self.block) + 1} of {len(self.blocks)} done</h2>"
                f"<p>Next: {n} {what}"
                + (" (two sets of images of one prompt: say which is better)" if following == "compare" else "")
                + ".</p>")
        if left:
            text += f"<p>{left} of this part's {len(items)} are not answered yet; you can go back to them later.</p>"
        self.block_done_html.value = text
        self.page.children = [self.block_done_html, pw.HBox([self.next_block_button, self.block_back_button])]

    def practice_left(self) -> int:
        return sum(not db.is_complete(self.practice_answers.get(p.panel), self.scale) for p in self.practice)

    def _show_practice_done(self) -> None:
        left = self.practice_left()
        text = ("<h2>Practice done</h2><p>Thank you. The study's panels come next: "
                f"{len(self.assignments)} panels, rated as in the practice, but without the study team's ratings "
                "shown. Your practice answers are not part of the study.</p>")
        if left:
            text = (f"<h2>End of the practice</h2><p>{left} practice panel{'s are' if left > 1 else ' is'} not "
                    f"answered yet; you can go back to {'them' if left > 1 else 'it'} or start the study.</p>")
        self.practice_done_html.value = text
        self.page.children = [self.practice_done_html, pw.HBox([self.study_button, self.practice_back_button])]

    def _show_finish(self) -> None:
        self.answers = db.latest_answers(self.conn, self.rater)  # another window may have answered too
        self.compare_answers = compare.latest_comparison_answers(self.conn, self.rater)
        total = len(self.assignments) + len(self.comparisons)
        unrated = [a for a in self.assignments if not db.is_complete(self.answers.get(a.seq), self.scale)]
        unrated += [c for c in self.comparisons if not compare.is_complete(self.compare_answers.get(c.seq), self.scale)]
        broken = sum(item.panel in self._unavailable for item in unrated)
        left = len(unrated) - broken
        note = (f"<p>{broken} panel{'s' if broken > 1 else ''} could not be shown because of a problem with "
                f"{'their' if broken > 1 else 'its'} images; the study team has been told.</p>") if broken else ""
        if left:
            what = ("panels are not rated" if not self.comparisons else "comparisons are not answered"
                    if not self.assignments else "panels and comparisons are not answered")
            text = f"<h2>Almost there</h2><p>{left} of {total} {what} yet.</p>{note}"
            buttons = [self.finish_unrated_button, self.review_button]
        elif broken:
            text = f"<h2>Thank you!</h2><p>Every panel that could be shown is rated and saved.</p>{note}"
            buttons = [self.review_button]
        else:
            what = "panels are rated" if not self.comparisons else (
                "comparisons are answered" if not self.assignments else "panels and comparisons are answered")
            text = (f"<h2>Thank you!</h2><p>All {total} {what} and saved. "
                    "You can close this window.</p>")
            buttons = [self.review_button]
        self.finish_html.value = text
        self.page.children = [self.finish_html, pw.HBox(buttons)]

    # --- navigation -------------------------------------------------------------------

    # The panels on show are the study's assignments, or the practice panels while the rater
    # practises: the same page and widgets, each answered in its own table.

    @property
    def in_compare(self) -> bool:
        """The items on show are side-by-side comparisons."""
        return not self.in_practice and self.block == "compare"

    def _items(self) -> list:
        return self.practice if self.in_practice else self._block_items(self.block)

    def _answer_of(self, item):
        if self.in_practice:
            return self.practice_answers.get(item.panel)
        return (self.compare_answers if self.in_compare else self.answers).get(item.seq)

    def _complete(self, answer) -> bool:
        return compare.is_complete(answer, self.scale) if self.in_compare else db.is_complete(answer, self.scale)

    def n_rated(self) -> int:
        return sum(self._complete(self._answer_of(a)) for a in self._items())

    def first_unrated(self) -> int:
        """The first panel not rated yet, passing over those that could not be shown."""
        for i, a in enumerate(self._items()):
            if a.panel not in self._unavailable and not self._complete(self._answer_of(a)):
                return i
        return len(self._items())

    def go_to(self, index: int) -> None:
        if self.rater is None or not self._still_admitted():
            return
        if not self._commit_comment():
            return  # the comment was refused: stay, with the reason on the page
        self._shown = None
        items = self._items()
        if index >= len(items):
            self.index = len(items)
            if self.in_practice:
                return self._show_practice_done()
            if self.block in self.blocks and self.blocks.index(self.block) < len(self.blocks) - 1:
                return self._show_block_done()
            return self._show_finish()
        self.index = max(0, index)
        if self.in_compare:
            return self._show_comparison()
        self._show_panel()

    def _show_panel(self) -> None:
        """Show the panel at ``self.index`` whole; if one of its images cannot be shown, say so."""
        assignment = self._items()[self.index]
        try:  # everything that can fail comes before the first widget changes
            pixels = [self._image(token) for token in assignment.image_tokens]
        except PanelUnavailable as exc:
            return self._show_unavailable(assignment, exc)
        if self.in_practice:
            text, answer = assignment.text, self.practice_answers.get(assignment.panel)
        else:
            text = db.prompt_text(self.conn, assignment.panel)
            answer = db.latest_answer(self.conn, self.rater, assignment.seq)  # another window may have answered
            if answer is not None:
                self.answers[assignment.seq] = answer
        self._shown = None  # the value changes below are not the rater's
        self.close_enlarged()
        self.prompt_html.value = f"<div class='mp-prompt'>{html.escape(text)}</div>"
        for i, image in enumerate(self.images):
            image.value = pixels[i] if i < len(pixels) else b""
            image.layout.visibility = "visible" if i < len(pixels) else "hidden"
            self.enlarge_buttons[i].layout.visibility = image.layout.visibility
        for dim, buttons in self.scores.items():
            buttons.value = answer.scores.get(dim) if answer else None
        self.nonsensical.value = bool(answer and answer.nonsensical)
        self.comment.value = answer.comment if answer else ""
        # practice answers have no comment: the box is the study's
        for widget in (self.comment, self.comment_note):
            widget.layout.display = "none" if self.in_practice else None
        self._shown = self.index
        self._unavailable.discard(assignment.panel)  # its images are back
        self._show_saved_state(answer)
        self._show_feedback(answer)
        self._update_progress()
        self._update_navigation()
        self.page.children = [self.panel_page]
        self._shown_at = time.monotonic()

    def _show_comparison(self) -> None:
        """Show the comparison at ``self.index`` whole: both sides' images, or the reason it cannot be."""
        item = self.comparisons[self.index]
        try:  # everything that can fail comes before the first widget changes
            pixels = [self._image(t) for t in item.left_tokens[:4]], [self._image(t) for t in item.right_tokens[:4]]
        except PanelUnavailable as exc:
            return self._show_unavailable(item, exc)
        text = compare.pair_text(self.conn, item.pair)
        answer = compare.latest_comparison_answer(self.conn, self.rater, item.seq)  # another window may have answered
        if answer is not None:
            self.compare_answers[item.seq] = answer
        self._shown = None  # the value changes below are not the rater's
        self.close_enlarged()
        self.prompt_html.value = f"<div class='mp-prompt'>{html.escape(text)}</div>"
        for side, images in enumerate(pixels):
            for i in range(4):
                widget, button = self.cmp_images[side * 4 + i], self.cmp_enlarge[side * 4 + i]
                widget.value = images[i] if i < len(images) else b""
                widget.layout.visibility = button.layout.visibility = "visible" if i < len(images) else "hidden"
        for dim, buttons in self.choices.items():
            buttons.value = answer.choices.get(dim) if answer else None
        self.flag_left.value = bool(answer and answer.left_nonsensical)
        self.flag_right.value = bool(answer and answer.right_nonsensical)
        self.cmp_comment.value = answer.comment if answer else ""
        self._shown = self.index
        self._unavailable.discard(item.pair)
        self.feedback.value = ""
        self._show_saved_state(answer)
        self._update_progress()
        self._update_navigation()
        self.page.children = [self.compare_page]
        self._shown_at = time.monotonic()

    def _show_unavailable(self, assignment: db.Assignment, problem: PanelUnavailable) -> None:
        self._unavailable.add(assignment.panel)
        self._report_unavailable(assignment, problem)
        text = UNAVAILABLE_TEXT.format(number=f"{'Practice ' if self.in_practice else ''}{self.index + 1}")
        if self.in_compare:
            text = text.replace("Panel ", "Comparison ", 1)
        self.unavailable_html.value = f"<div class='mp-error'>{html.escape(text)}</div>"
        self._update_progress()
        self._update_navigation()
        self.page.children = [self.unavailable_page]

    def _report_unavailable(self, assignment: db.Assignment, problem: PanelUnavailable) -> None:
        """Tell the study team which panel and image, and why (file paths are fine here, not on the page)."""
        error = " ".join(f"{type(problem.cause).__name__}: {problem.cause}".split())
        seq = (f"practice {assignment.position + 1}" if self.in_practice
               else f"comparison {assignment.seq}" if self.in_compare else assignment.seq)
        line = "\t".join([now(), "panel not shown", f"rater={self.rater}", f"seq={seq}",
                          f"panel={assignment.panel}", f"image={problem.image_token}",
                          f"file={db.recorded_file(self.conn, problem.image_token)}", f"error={error}"])
        logger.error("%s", line)
        if assignment.panel in self._reported:
            return
        self._reported.add(assignment.panel)
        log = db.study_root(self.conn) / LOG_FILE
        try:
            log.parent.mkdir(exist_ok=True)
            with open(log, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            logger.error("could not append to %s (%s); the line above is the only record", log, exc)

    def _update_navigation(self) -> None:
        self.prev_button.disabled = self.index == 0
        last = self.index == len(self._items()) - 1
        final = not self.in_practice and self.block in self.blocks and self.block != self.blocks[-1]
        self.next_button.description = (("End the practice" if self.in_practice else "End of this part" if final
                                         else "Finish") if last else "Next")
        self.unrated_button.layout.display = "none" if self.in_practice else None

    def enlarge(self, position: int) -> None:
        """Show image ``position`` (0-3) of the panel on show in the viewer, at its full resolution
        (the page fits it to the screen first; zoom and pan are the page's own, see ratings.widgets)."""
        if not self._still_admitted() or self._shown is None:
            return
        tiles = self._tile_images()
        shown = [i for i, image in enumerate(tiles) if image.value]
        if position not in shown:
            return
        self.enlarged = position
        self.big_image.value = tiles[position].value
        title = f"<b>Image {position + 1} of {len(shown)}</b>"
        if self.in_compare:
            title += f" ({'left' if position < 4 else 'right'} {position % 4 + 1})"
        self.viewer_title.value = title
        self._viewer_box().children = [self.viewer_bar, self.stage]

    def _tile_images(self) -> list:
        return self.cmp_images if self.in_compare else self.images

    def _viewer_box(self):
        return self.cmp_viewer if self.in_compare else self.viewer

    def step_enlarged(self, step: int) -> None:
        """The viewer moves to the panel's next (``+1``) or previous (``-1``) image, round the four."""
        if self.enlarged is None:
            return
        shown = [i for i, image in enumerate(self._tile_images()) if image.value] or [0]
        here = shown.index(self.enlarged) if self.enlarged in shown else 0
        self.enlarge(shown[(here + step) % len(shown)])

    def close_enlarged(self) -> None:
        self.enlarged = None
        self.viewer.children = [self.grid]
        self.cmp_viewer.children = [self.cmp_sides]

    def _image(self, image_token: str) -> bytes:
        if image_token not in self._images:
            try:
                pixels = _checked_pixels(self.conn, image_token)
            except Exception as exc:  # whatever the file did (gone, unreadable, damaged), the panel waits
                raise PanelUnavailable(image_token, exc) from exc
            self._images[image_token] = pixels
            if len(self._images) > CACHED_IMAGES:
                self._images.popitem(last=False)
        return self._images[image_token]

    # --- saving -----------------------------------------------------------------------

    def _on_change(self, change) -> None:
        if self._shown is not None and self._given() != self._stored():
            self.save()

    def _commit_comment(self) -> bool:
        """A comment typed but not yet sent (the box sends it when it loses focus) still counts
        when the rater moves on. False when it could not be saved."""
        if self._shown is None or self.in_practice:
            return True
        if self.in_compare:
            return self.cmp_comment.value == self._stored_comparison()[3] or self.save()
        if self.comment.value == self._stored()[2]:
            return True
        return self.save()

    def _on_compare_change(self, change) -> None:
        if self._shown is not None and self.in_compare and self._given_comparison() != self._stored_comparison():
            self.save()

    def _given_comparison(self) -> tuple:
        return ({dim: buttons.value for dim, buttons in self.choices.items()}, bool(self.flag_left.value),
                bool(self.flag_right.value), self.cmp_comment.value)

    def _stored_comparison(self) -> tuple:
        answer = self.compare_answers.get(self.comparisons[self._shown].seq)
        if answer is None:
            return {dim: None for dim in self.choices}, False, False, ""
        return ({dim: answer.choices.get(dim) for dim in self.choices}, answer.left_nonsensical,
                answer.right_nonsensical, answer.comment)

    def _save_comparison(self) -> bool:
        """Commit the comparison on show (a new row; the latest counts); False if refused."""
        item = self.comparisons[self._shown]
        previous = self.compare_answers.get(item.seq)
        choices, left, right, comment = self._given_comparison()
        if len(comment) > COMMENT_CHARS:
            self.saved.value = f"<span class='mp-error'>{html.escape(TOO_LONG_TEXT.format(length=len(comment)))}</span>"
            return False
        seconds = round(time.monotonic() - self._shown_at, 3)
        try:
            answer = compare.save_comparison(self.conn, self.rater, item.seq, choices, left, right, comment, seconds,
                                             self.scale, based_on=previous.answer_id if previous else 0,
                                             session=self.session)
        except db.StaleAnswerError as exc:
            logger.warning("%s", exc)
            self.saved.value = f"<span class='mp-error'>{html.escape(STALE_TEXT)}</span>"
            return False
        except Exception:
            logger.error("comparison not saved: rater %s, comparison %s", self.rater, item.seq, exc_info=True)
            self.saved.value = ("<span class='mp-error'>⚠ Not saved. Please tell the study team; your earlier "
                                "answers are saved.</span>")
            return False
        self.compare_answers[item.seq] = answer
        self._show_saved_state(answer)
        self._update_progress()
        return True

    def _given(self) -> tuple[dict, bool, str]:
        """The answer the widgets hold."""
        return ({dim: buttons.value for dim, buttons in self.scores.items()}, bool(self.nonsensical.value),
                self.comment.value)

    def _stored(self) -> tuple[dict, bool, str]:
        """The saved answer of the panel on show, in the widgets' terms."""
        answer = self._answer_of(self._items()[self._shown])
        if answer is None:
            return {dim: None for dim in self.scores}, False, ""
        return {dim: answer.scores.get(dim) for dim in self.scores}, answer.nonsensical, answer.comment

    def save(self) -> bool:
        """Commit the answer of the panel on show (a new row; the latest counts); False if refused."""
        if self._shown is None or not self._still_admitted():
            return False
        if self.in_practice:
            return self._save_practice()
        if self.in_compare:
            return self._save_comparison()
        assignment = self.assignments[self._shown]
        previous = self.answers.get(assignment.seq)
        scores, nonsensical, comment = self._given()
        if len(comment) > COMMENT_CHARS:
            logger.warning("answer not saved: rater %s, seq %s: a comment of %d characters", self.rater,
                           assignment.seq, len(comment))
            self.saved.value = f"<span class='mp-error'>{html.escape(TOO_LONG_TEXT.format(length=len(comment)))}</span>"
            return False
        seconds = round(time.monotonic() - self._shown_at, 3)
        try:
            answer = db.save_answer(self.conn, self.rater, assignment.seq, scores, nonsensical, comment, seconds,
                                    self.scale, based_on=previous.rating_id if previous else 0, session=self.session)
        except db.StaleAnswerError as exc:  # the same rater in another window: theirs stays
            logger.warning("%s", exc)
            self.saved.value = f"<span class='mp-error'>{html.escape(STALE_TEXT)}</span>"
            return False
        except sqlite3.OperationalError as exc:
            logger.error("answer not saved: rater %s, seq %s: %s", self.rater, assignment.seq, exc)
            reason = ("the study folder has become read-only" if "readonly" in str(exc)
                      else "the study's database cannot be written just now")
            self.saved.value = (f"<span class='mp-error'>⚠ Not saved: {reason}. Please tell the study team; "
                                "your earlier answers are saved.</span>")
            return False
        except Exception:  # the rater must see that an answer did not reach the database; the team, why
            logger.error("answer not saved: rater %s, seq %s", self.rater, assignment.seq, exc_info=True)
            self.saved.value = "<span class='mp-error'>⚠ Not saved. Please tell the study team.</span>"
            return False
        self.answers[assignment.seq] = answer
        self._show_saved_state(answer)
        self._update_progress()
        return True

    def _save_practice(self) -> bool:
        """A practice answer: its own table, never a rating; then the team's reference is shown."""
        item = self.practice[self._shown]
        scores, nonsensical, _ = self._given()
        seconds = round(time.monotonic() - self._shown_at, 3)
        try:
            answer = practice.save_practice_answer(self.conn, self.rater, item.panel, scores, nonsensical, seconds,
                                                   self.scale, session=self.session)
        except Exception:
            logger.error("practice answer not saved: rater %s, practice %s", self.rater, item.position + 1,
                         exc_info=True)
            self.saved.value = "<span class='mp-error'>⚠ Not saved. Please tell the study team.</span>"
            return False
        self.practice_answers[item.panel] = answer
        self._show_saved_state(answer)
        self._show_feedback(answer)
        self._update_progress()
        return True

    def _show_feedback(self, answer: db.Answer | None) -> None:
        """On a practice panel the rater has answered: the study team's rating beside theirs."""
        if not self.in_practice or self._shown is None or not db.is_complete(answer, self.scale):
            self.feedback.value = ""
            return
        item = self.practice[self._shown]
        if item.reference is None:
            self.feedback.value = ("<div class='mp-feedback'>The study team gave no reference rating for this "
                                   "practice panel.</div>")
            return
        team, yours = [], []
        for dim in self.scale["dimensions"]:
            labels = dict(dim["anchors"])
            theirs, mine = item.reference["scores"].get(dim["id"]), answer.scores.get(dim["id"])
            name = html.escape(dim["id"].capitalize())
            team.append(f"{name} <b>{'—' if theirs is None else theirs}</b>"
                        + ("" if theirs is None else f" ({html.escape(labels.get(theirs, ''))})"))
            yours.append(f"{name} <b>{'—' if mine is None else mine}</b>")
        team.append("nonsensical" if item.reference.get("nonsensical") else "not nonsensical")
        yours.append("nonsensical" if answer.nonsensical else "not nonsensical")
        note = f"<div class='mp-anchors'>{html.escape(item.note)}</div>" if item.note else ""
        self.feedback.value = ("<div class='mp-feedback'><div><b>The study team's rating:</b> "
                               f"{' · '.join(team)}</div><div>Yours: {' · '.join(yours)}</div>{note}</div>")

    def _update_progress(self) -> None:
        rated, total = self.n_rated(), len(self._items())
        if self.in_practice:
            self.progress_label.value = (f"<span class='mp-practice-badge'>Practice</span> <b>Practice panel "
                                         f"{self.index + 1} of {total}</b> &nbsp; not part of the study")
        elif self.in_compare:
            part = ("<span class='mp-block-badge'>Side by side</span> " if len(self.blocks) > 1 else "")
            self.progress_label.value = (f"{part}<b>Comparison {self.index + 1} of {total}</b> &nbsp; "
                                         f"{rated} / {total} answered")
        else:
            self.progress_label.value = f"<b>Panel {self.index + 1} of {total}</b> &nbsp; {rated} / {total} rated"
        self.progress_bar.max, self.progress_bar.value = max(total, 1), rated

    def _show_saved_state(self, answer: db.Answer | None) -> None:
        if answer is None:
            self.saved.value = "<span class='mp-unsaved'>Not rated yet</span>"
            return
        # the server's local time: on a hospital server that is the raters' wall clock
        stamp = datetime.fromisoformat(answer.rated_at.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
        if self._complete(answer):
            self.saved.value = f"<span class='mp-saved'>✓ Saved at {stamp}</span>"
        else:
            self.saved.value = (f"<span class='mp-unsaved'>✓ Saved at {stamp}, "
                                "but not complete: please answer both questions</span>")

    def close(self) -> None:
        self.conn.close()
