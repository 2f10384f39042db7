"""The rating app's widgets, which take from the page only what a rater can give.

Every message the browser sends a widget (a score, a tick, a comment, a click) is checked
before any trait or observer sees it: each widget names the values the page may set and the
events it may send, and anything else (a score index of 99, a string or 2.5 for a score, a
lone surrogate in a comment, a key the widget does not take from the page, a binary buffer)
is dropped, logged for the study team, and the page is sent the kernel's own state back. Nothing
that goes wrong while handling a message leaves the kernel as a traceback: it goes to the
server's log (``_log_to_server_console`` in :mod:`ratings.app`), never to the page.

:data:`CONNECTION_WATCH` is the page's own check that the kernel is still there (see
:func:`connection_watch`).
"""

from __future__ import annotations

import logging

import ipywidgets as w
from ipywidgets.widgets.trait_types import InstanceDict
from ipywidgets.widgets.widget import widget_serialization

__all__ = ["Button", "Checkbox", "Dropdown", "GridBox", "HBox", "HTML", "Image", "IntProgress", "Layout", "Password",
           "Text", "Textarea", "ToggleButtons", "VBox", "CONNECTION_LOST_TEXT", "connection_watch",
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
