"""The rating app's widgets, which take from the page only what a rater can give.

Every message the browser sends a widget (a score, a tick, a comment, a click) is checked
before any trait or observer sees it: each widget names the values the page may set and the
events it may send, and anything else (a score index of 99, a string or 2.5 for a score, a
lone surrogate in a comment, a key the widget does not take from the page, a binary buffer)
is dropped, logged for the study team, and the page is sent the kernel's own state back. Nothing
that goes wrong while handling a message leaves the kernel as a traceback: it goes to the
server's log (``_log_to_server_console`` in :mod:`ratings.app`), never to the page.

:func:`connection_watch` is the page's own check that the kernel is still there;
:func:`keyboard` the rater's keys and the image viewer's zoom and pan, in the page.
"""

from __future__ import annotations

import logging

import ipywidgets as w
from ipywidgets.widgets.trait_types import InstanceDict
from ipywidgets.widgets.widget import widget_serialization

__all__ = ["Box", "Button", "Checkbox", "Dropdown", "GridBox", "HBox", "HTML", "Image", "IntProgress", "Layout", "Password",
           "Text", "Textarea", "ToggleButtons", "VBox", "CONNECTION_LOST_TEXT", "connection_watch", "keyboard",
           "quiet_comm_errors"]

logger = logging.getLogger("ratings.app")
SHOWN_CHARS = 60  # of a dropped value, in the log
PAGE_TEXT_CHARS = 10_000_000  # a text box's value above this is not even looked at (the WebSocket caps it too)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def _index(widget, value) -> bool:
    """A selection: None, or the position of one of the widget's options."""
    return value is None or (type(value) is int and 0 <= value < len(widget.options))


def _flag(widget, value) -> bool:
    return type(value) is bool


def _text(widget, value) -> bool:
    """Text that can be stored: a str that is valid Unicode (no lone surrogate)."""
    if not isinstance(value, str) or len(value) > PAGE_TEXT_CHARS:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


CLICK = {"event": "click"}


class _FromPage:
    """Check each message from the page against ``_page_values`` (name -> check) and
    ``_page_events`` (the custom messages it may send); drop whatever does not pass."""

    _page_values: dict = {}
    _page_events: list = []

    def _handle_msg(self, msg):
        try:
            problem = self._page_problem(msg)
            if problem is None:
                return self._take(msg["content"]["data"], msg.get("buffers") or [])
        except Exception as exc:  # the app's own handling failed: the study team gets the traceback
            logger.error("a message from the page to %s could not be handled", type(self).__name__, exc_info=True)
            problem = f"{type(exc).__name__} while handling it"
        logger.warning("dropped a message from the page to %s %s: %s", type(self).__name__, self.model_id, problem)
        try:  # the page goes back to what the kernel holds
            self.send_state()
        except Exception:
            logger.error("could not send %s's state back to the page", type(self).__name__, exc_info=True)

    def _take(self, data: dict, buffers) -> None:
        """ipywidgets' own dispatch (Widget._handle_msg), without its wrapper and callback
        dispatchers, which send any exception to the page as a traceback: here it reaches
        _handle_msg, and the log."""
        if data["method"] == "update":
            self.set_state(data["state"])
        elif data["method"] == "request_state":
            self.send_state()
        else:  # not through self._msg_callbacks, whose dispatcher also shows failures on the page
            for callback in list(self._msg_callbacks.callbacks):
                callback(self, data["content"], buffers)

    def _page_problem(self, msg) -> str | None:
        content = msg.get("content") if isinstance(msg, dict) else None
        data = content.get("data") if isinstance(content, dict) else None
        if not isinstance(data, dict):
            return "not a widget message"
        method = data.get("method")
        if method == "request_state":
            return None
        if method == "custom":
            return None if data.get("content") in self._page_events else f"event {_short(data.get('content'))}"
        if method != "update":
            return f"unknown method {_short(method)}"
        state = data.get("state")
        if not isinstance(state, dict):
            return "an update without a state"
        if data.get("buffer_paths") or msg.get("buffers"):
            return "binary buffers are not taken from the page"
        for name, value in state.items():
            check = self._page_values.get(name)
            if check is None:
                return f"{_short(name)} is not set from the page"
            if not check(self, value):
                return f"{name} = {_short(value)} is not a value it takes"
        return None


_PARTS: dict = {}  # ipywidgets' Layout and Style classes -> their checked versions


class _Clicks:
    """A button's click handlers, called so that what fails in one reaches ``_handle_msg`` (and
    the log): ipywidgets' own dispatcher shows it on the page as a traceback."""

    def _handle_button_msg(self, _, content, buffers):
        if content == CLICK:
            for callback in list(self._click_handlers.callbacks):
                callback(self)


def _from_page(base, values: dict | None = None, events: tuple = (), extra: tuple = ()):
    namespace = {"_page_values": dict(values or {}), "_page_events": list(events), "__module__": __name__}
    # a widget's layout and style are widgets of their own, with their own channel from the page
    for name in ("layout", "style"):
        trait = base.class_traits().get(name)
        if isinstance(trait, InstanceDict) and isinstance(trait.klass, type):
            if trait.klass not in _PARTS:
                _PARTS[trait.klass] = _from_page(trait.klass)
            namespace[name] = InstanceDict(_PARTS[trait.klass]).tag(sync=True, **widget_serialization)
    return type(base.__name__, (_FromPage, *extra, base), namespace)


Layout = _from_page(w.Layout)
_PARTS[w.Layout] = Layout


ToggleButtons = _from_page(w.ToggleButtons, {"index": _index}, events=(CLICK,))  # it sends a click too
Dropdown = _from_page(w.Dropdown, {"index": _index})
Checkbox = _from_page(w.Checkbox, {"value": _flag})
Textarea = _from_page(w.Textarea, {"value": _text})
Text = _from_page(w.Text, {"value": _text})
Password = _from_page(w.Password, {"value": _text})
Button = _from_page(w.Button, events=(CLICK,), extra=(_Clicks,))
# what the page only shows: it sets nothing
HTML = _from_page(w.HTML)
Image = _from_page(w.Image)
IntProgress = _from_page(w.IntProgress)
VBox = _from_page(w.VBox)
HBox = _from_page(w.HBox)
Box = _from_page(w.Box)
GridBox = _from_page(w.GridBox)


def quiet_comm_errors(handler: logging.Handler) -> None:
    """Send what the kernel's comm layer logs (a message it could not handle, with its traceback)
    to ``handler`` (the server's terminal) only: without a handler of its own, Python's logging
    writes it to sys.stderr, which in a kernel is the page."""
    for name in ("Comm", "comm", "ipykernel.comm"):
        comm_logger = logging.getLogger(name)
        if handler not in comm_logger.handlers:
            comm_logger.addHandler(handler)
        comm_logger.propagate = False


CONNECTION_LOST_TEXT = ("⚠ Your last answer was not saved, because this page lost its connection to the rating "
                        "app: please reload the page, and you will continue where you left off.")

# The page watches its own kernel: once the kernel dies, restarts or the connection is given up
# (Voilà's kernel connection says so, or ipywidgets marks the app's widgets disconnected), the
# saved state is taken off the page and one sentence says the last answer was not saved. Plain
# DOM and the kernel connection's own signals; it sends nothing anywhere.
_WATCH_JS = """
(function () {
  if (window.medprobeWatch) { return; }
  window.medprobeWatch = true;
  var TEXT = %s;
  var LOST_STATES = ["dead", "restarting", "autorestarting", "terminating"];
  var lost = false, watched = null;
  function say(where, cls) {
    var note = document.createElement("div");
    note.className = "mp-error mp-connection-lost " + cls;
    note.setAttribute("role", "alert");
    note.textContent = TEXT;
    where.appendChild(note);
  }
  function showLost(why) {
    if (lost) { return; }
    lost = true;
    console.warn("medprobe: the rating app's kernel is gone (" + why + ")");
    document.querySelectorAll(".mp-app").forEach(function (app) { app.classList.add("mp-lost"); });
    // on the page's body: inside the app, Lumino's panels (CSS contain: strict) would pin a fixed
    // banner to the panel, scrolled out of sight, instead of to the window
    var banner = document.createElement("div");
    banner.className = "mp-lost-banner";
    document.body.appendChild(banner);
    say(banner, "mp-lost-top");
    document.querySelectorAll(".mp-saved-slot").forEach(function (slot) { say(slot, "mp-lost-here"); });
  }
  function check(kernel) {
    if (kernel.isDisposed) { return showLost("disposed"); }
    if (LOST_STATES.indexOf(kernel.status) >= 0) { return showLost(kernel.status); }
    if (kernel.connectionStatus === "disconnected") { return showLost("disconnected"); }
  }
  function watch(kernel) {
    watched = kernel;
    kernel.statusChanged.connect(function () { check(kernel); });
    kernel.connectionStatusChanged.connect(function () { check(kernel); });
    if (kernel.disposed) { kernel.disposed.connect(function () { showLost("disposed"); }); }
    check(kernel);
  }
  setInterval(function () {
    if (lost) { return; }
    if (document.querySelector(".mp-app.jupyter-widgets-disconnected, .mp-app .jupyter-widgets-disconnected")) {
      return showLost("widgets disconnected");
    }
    var app = window.jupyterapp, manager = app && app.widgetManager, kernel = manager && manager.kernel;
    if (kernel && kernel !== watched) { watch(kernel); }
    if (watched) { check(watched); }
  }, 500);
})();
"""


def connection_watch():
    """The page's check of its own kernel, to display once in the notebook (an IPython
    Javascript output; Voilà runs it in the page)."""
    import json

    from IPython.display import Javascript

    return Javascript(_WATCH_JS % json.dumps(CONNECTION_LOST_TEXT))


# The rater's keyboard and the image viewer's zoom and pan: plain DOM, in the page. A key does
# exactly what a click on the same widget does (it clicks it, so the same message reaches the
# kernel and the same save runs); nothing here talks to the kernel itself, and nothing reaches
# the page from here that the widgets did not already show. Keys act on the panel on show only:
# none while a comment, a text box or a list has the focus, none held down (auto-repeat), none
# with Ctrl, Alt or Cmd, and none between a click on Previous / Next / First unrated and the
# next panel on the page (so a digit typed ahead never lands on the panel that comes next).
_KEYS_JS = """
(function () {
  if (window.medprobeKeys) { return; }
  window.medprobeKeys = true;
  var WAIT_MS = 4000;  // the longest a move to another panel holds the keys back
  var here = null, active = 0, movingSince = 0, enlargeArmed = 0;
  var view = {src: null, zoom: 1, fit: 1, x: 0, y: 0, drag: null};
  function q(sel, root) { return (root || document).querySelector(sel); }
  function qa(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  // a page the app does not show is not in the document at all (ipywidgets removes its views), so
  // being there is being shown: no layout is forced by asking (this runs every 200 ms)
  function shown(el) { return !!(el && el.isConnected); }
  function panel() { var p = q(".mp-app .mp-panel"); return shown(p) ? p : null; }
  function scales() { return qa(".mp-app .mp-panel .mp-scale"); }
  function answered(scale) { return !!q(".widget-toggle-button.mod-active", scale); }
  function where() {  // which panel is on show: "Panel N of M" (its rated count changes with each answer)
    var label = q(".mp-app .mp-progress"), m = shown(label) && /(Panel|Comparison) \\d+ of \\d+/.exec(label.textContent);
    return m ? m[0] : (panel() ? "panel" : "");
  }
  function highlight() {
    scales().forEach(function (s, i) { s.classList.toggle("mp-scale-active", i === active); });
  }
  function tick() {
    var now = where();
    if (now !== here) {  // another panel (or page): the keys start again at its first open question
      here = now; movingSince = 0; enlargeArmed = 0;
      var all = scales(), open = all.findIndex(function (s) { return !answered(s); });
      active = open >= 0 ? open : Math.max(all.length - 1, 0);
    }
    highlight();
    var img = q(".mp-app .mp-stage img");
    if (img && img.naturalWidth && img.src !== view.src) { fit(img); }
  }
  function click(el) { if (el && !el.disabled) { el.click(); return true; } return false; }
  function go(button) {
    if (click(button)) { movingSince = Date.now(); }
  }
  function comparing() { return !!q(".mp-app .mp-panel.mp-compare"); }
  function complete() {  // a side-by-side comparison is answered by its choices; a flag does not stand for them
    var flag = q(".mp-app .mp-panel .mp-flag input");
    return (!comparing() && flag && flag.checked) || scales().every(answered);
  }
  function say(text) {
    var hint = q(".mp-app .mp-panel .mp-keys-said");
    if (!hint) {
      var keys = q(".mp-app .mp-panel .mp-side .mp-keys");
      if (!keys) { return; }
      hint = document.createElement("div");
      hint.className = "mp-keys-said mp-unsaved";
      hint.setAttribute("role", "status");
      keys.parentNode.insertBefore(hint, keys);
    }
    hint.textContent = text;
    clearTimeout(hint.medprobeTimer);
    hint.medprobeTimer = setTimeout(function () { hint.textContent = ""; }, 3000);
  }
  // --- the viewer ---
  function stage() { var s = q(".mp-app .mp-stage"); return shown(s) ? s : null; }
  function place(img) {
    var s = stage(); if (!s || !img.naturalWidth) { return; }
    var W = s.clientWidth, H = s.clientHeight, w = img.naturalWidth * view.zoom, h = img.naturalHeight * view.zoom;
    view.x = w <= W ? (W - w) / 2 : Math.min(0, Math.max(W - w, view.x));
    view.y = h <= H ? (H - h) / 2 : Math.min(0, Math.max(H - h, view.y));
    img.style.width = w + "px"; img.style.height = h + "px";
    img.style.transform = "translate(" + view.x + "px," + view.y + "px)";
    img.style.imageRendering = view.zoom >= 3 ? "pixelated" : "auto";
    s.dataset.zoom = view.zoom.toFixed(4);
  }
  function fit(img) {
    var s = stage(); if (!s || !img.naturalWidth) { return; }
    view.src = img.src;
    view.fit = Math.min(s.clientWidth / img.naturalWidth, s.clientHeight / img.naturalHeight);
    view.zoom = view.fit; place(img);
  }
  function zoomTo(z, cx, cy) {
    var s = stage(), img = s && q("img", s); if (!img || !img.naturalWidth) { return; }
    if (cx === undefined) { cx = s.clientWidth / 2; cy = s.clientHeight / 2; }
    z = Math.max(Math.min(view.fit, 1) / 2, Math.min(32, z));
    view.x = cx - (cx - view.x) * z / view.zoom; view.y = cy - (cy - view.y) * z / view.zoom;
    view.zoom = z; place(img);
  }
  function zoomBy(f) { zoomTo(view.zoom * f); }
  function zoomCommand(what) {
    var img = q(".mp-app .mp-stage img");
    if (what === "in") { zoomBy(1.25); } else if (what === "out") { zoomBy(0.8); }
    else if (what === "fit" && img) { fit(img); } else if (what === "actual") { zoomTo(1); }
  }
  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest(".mp-zoom");
    if (b) { zoomCommand(b.dataset.zoom); return; }
    var move = e.target.closest && e.target.closest(".mp-go");
    if (move && e.isTrusted) { movingSince = Date.now(); }  // a mouse click moves to another panel too
  }, true);
  document.addEventListener("load", function (e) {
    if (e.target.closest && e.target.closest(".mp-stage")) { fit(e.target); }
  }, true);
  window.addEventListener("resize", function () {
    var img = q(".mp-app .mp-stage img"); if (img) { fit(img); }
  });
  document.addEventListener("wheel", function (e) {
    var s = e.target.closest && e.target.closest(".mp-stage"); if (!s) { return; }
    e.preventDefault();
    var r = s.getBoundingClientRect();
    zoomTo(view.zoom * Math.pow(1.0015, -e.deltaY), e.clientX - r.left, e.clientY - r.top);
  }, {passive: false});
  document.addEventListener("pointerdown", function (e) {
    var s = e.target.closest && e.target.closest(".mp-stage"); if (!s || e.button !== 0) { return; }
    e.preventDefault();
    view.drag = {x: e.clientX - view.x, y: e.clientY - view.y}; s.classList.add("mp-dragging");
  });
  document.addEventListener("pointermove", function (e) {
    if (!view.drag) { return; }
    var img = q(".mp-app .mp-stage img"); if (!img) { view.drag = null; return; }
    view.x = e.clientX - view.drag.x; view.y = e.clientY - view.drag.y; place(img);
  });
  document.addEventListener("pointerup", function () {
    view.drag = null; qa(".mp-stage.mp-dragging").forEach(function (s) { s.classList.remove("mp-dragging"); });
  });
  // --- the keys ---
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    var t = e.target, tag = t && t.tagName;
    if (tag === "TEXTAREA" || tag === "INPUT" && t.type !== "checkbox" || tag === "SELECT" ||
        (t && t.isContentEditable)) {
      if (e.key === "Escape" && tag === "TEXTAREA") { t.blur(); e.preventDefault(); }  // and the comment is sent
      return;
    }
    var start = q(".mp-app .mp-start");
    if (!panel()) {
      if (e.key === "Enter" && !e.repeat && shown(start) && t === document.body) { e.preventDefault(); click(start); }
      return;
    }
    tick();
    var key = e.key, viewing = !!stage(), done = true;
    if (e.repeat) {  // held down: only zooming repeats; nothing that answers or moves on
      if (viewing && (key === "+" || key === "=" || key === "-" || key === "_")) { zoomBy(key === "+" || key === "=" ? 1.1 : 0.9); }
      e.preventDefault();
      return;
    }
    if (movingSince && Date.now() - movingSince < WAIT_MS) { e.preventDefault(); return; }  // the next panel is coming
    if (enlargeArmed && Date.now() - enlargeArmed < 3000 && /^[1-8]$/.test(key)) {
      enlargeArmed = 0;
      say("");
      var tiles = qa(".mp-app .mp-panel .mp-enlarge"), target = tiles[Number(key) - 1], count = tiles.length || 4;
      if (viewing && Number(key) <= count) {  // the viewer is open: step until image k is on show
        var want = Number(key), title = q(".mp-app .mp-viewer-bar .widget-html-content");
        var m = title && /Image (\\d+)/.exec(title.textContent), now = m ? Number(m[1]) : want;
        for (var n = (want - now + count) % count; n > 0; n--) { click(q(".mp-app .mp-image-next")); }
      } else if (viewing || !click(target)) { say("There is no image " + key + " here."); }
      e.preventDefault();
      return;
    }
    enlargeArmed = 0;
    var all = scales();
    if (/^[0-9]$/.test(key) && all.length) {
      var row = all[Math.min(active, all.length - 1)];
      var button = qa(".widget-toggle-button", row).find(function (b) {  // "3", or "3 Both good" side by side
        var text = b.textContent.trim(); return text === key || text.indexOf(key + " ") === 0;
      });
      if (!button) { say(key + " is not on this scale."); }
      else {
        if (!button.classList.contains("mod-active")) { button.click(); }  // a second press keeps it (no toggle off)
        if (active < all.length - 1) { active += 1; }
        highlight();
      }
    } else if (key === "ArrowDown" && all.length) { active = Math.min(active + 1, all.length - 1); highlight(); }
    else if (key === "ArrowUp" && all.length) { active = Math.max(active - 1, 0); highlight(); }
    else if (key === "n" || key === "N") { click(q(".mp-app .mp-panel .mp-flag input")); }
    else if ((key === "m" || key === "M") && comparing()) { click(q(".mp-app .mp-panel .mp-flag-right input")); }
    else if (key === "e" || key === "E") {
      enlargeArmed = Date.now();
      say(comparing() ? "Enlarge which image? Press 1-4 (left) or 5-8 (right)." : "Enlarge which image? Press 1, 2, 3 or 4.");
    }
    else if (key === "Escape" && viewing) { click(q(".mp-app .mp-viewer-close")); }
    else if (viewing && key === "ArrowRight") { click(q(".mp-app .mp-image-next")); }
    else if (viewing && key === "ArrowLeft") { click(q(".mp-app .mp-image-prev")); }
    else if (viewing && (key === "+" || key === "=")) { zoomBy(1.25); }
    else if (viewing && (key === "-" || key === "_")) { zoomBy(0.8); }
    else if (viewing && (key === "f" || key === "F")) { zoomCommand("fit"); }
    else if (key === "Enter" || key === "ArrowRight") {
      if (complete()) { go(q(".mp-app .mp-panel .mp-next")); }
      else { say(comparing() ? "Please answer both questions before the next comparison."
                 : "Please answer both questions (or tick nonsensical) before the next panel."); }
    }
    else if (key === "ArrowLeft") { go(q(".mp-app .mp-panel .mp-prev")); }
    else { done = false; }
    if (done) { e.preventDefault(); }
  }, true);  // before the widgets: ipywidgets' text boxes keep their keys from the page
  setInterval(tick, 200);
})();
"""


def keyboard():
    """The rater's keyboard shortcuts and the viewer's zoom and pan, to display once in the
    notebook (an IPython Javascript output, as :func:`connection_watch`)."""
    from IPython.display import Javascript

    return Javascript(_KEYS_JS)
