"""The study team's gallery: what a study holds, panel by panel (notebooks/50_gallery.ipynb).

:func:`gallery_table` gives one row per panel-like unit (the images of one prompt made with
one preset and study seed, as ``ratings build`` makes panels): the prompt, its style, topic
and detail, the preset, the study seed, each image's file and own seed, the automated scores
(mean over the panel's images per metric, where the study was scored) and whether it was
rated (the raters who answered it; whether it is in a built panel). :func:`pair_presets`
puts two presets of one prompt side by side (the study's own question: GLIDE with and
without CLIP guidance). :class:`Gallery` is the JupyterLab page over both: filters, a grid of
panels with thumbnails, a viewer at full resolution, side by side, pages.

It unblinds everything (preset, seeds, scores), so it is for the study team only: the rating
server serves notebooks/20_rate.ipynb and nothing else, and the rating app never imports
this module. Everything here only reads: the study is opened read-only (its schema checked,
links refused) and image files are read without following links (:mod:`probes.safepath`).
"""

from __future__ import annotations

import html
import io
import json
import os
from pathlib import Path

import pandas as pd
from PIL import Image

from probes.errors import NotInside
from probes.safepath import open_folder, read_regular
from probes.scoretable import open_for_reading, panel_scores

from .db import RATINGS_MIGRATIONS  # noqa: F401  (registers the rating tables, so their schema is checked)
from .errors import RatingError
from .scale import DEFAULT_SCALE
from .session import too_many_pixels

__all__ = ["CLIP_PAIR", "FILTERS", "GALLERY_COLUMNS", "PAGE_SIZE", "RATED_CHOICES", "Gallery", "filter_table",
           "gallery_table", "pair_presets", "read_image", "resolve_study", "show_gallery"]

FILTERS = ("style", "topic", "detail", "preset")
#: the columns of :func:`gallery_table`, before one ``score_<metric>`` column per scored metric
GALLERY_COLUMNS = ["prompt_id", "text", "style", "topic", "detail", "preset", "study_seed", "n_images",
                   "image_index", "seeds", "files", "panel", "in_panel", "n_assigned", "n_raters"]
#: the side by side default: GLIDE with classifier-free guidance only, and with CLIP guidance
CLIP_PAIR = ("glide-cfg", "glide-clip")
#: the gallery's "Rated" filter: label -> (rated, in_panel) for :func:`filter_table`
RATED_CHOICES = {"all": (None, None), "rated": (True, None), "not rated": (False, None),
                 "not in a panel": (None, False)}
PAGE_SIZE = 12  # panels per page
ALL = ""  # a filter's "all" (a Dropdown shows no label for None); no style, topic, detail or preset is ""
THUMB_PX = 104
CARD_PX = 2 * THUMB_PX + 34  # two thumbnails a row, the gap and the card's padding and border
MAX_IMAGE_BYTES = 64 * 1024 * 1024
PROJECT_ROOT = Path(__file__).resolve().parents[1]


# --- the table ------------------------------------------------------------------------------

def resolve_study(study: str | Path | None) -> Path:
    """The study folder a user means: ``None`` is ``$MEDPROBE_STUDY`` (else ``demo-study``); a
    relative path is looked for where Python runs, then at the project root (a notebook runs in
    notebooks/). Returns the absolute path; RatingError naming the places looked at."""
    given = study if study is not None else os.environ.get("MEDPROBE_STUDY") or "demo-study"
    path = Path(given).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, PROJECT_ROOT / path]
    for candidate in candidates:
        if (candidate / "study.sqlite").is_file():
            return candidate.resolve()
    looked = " and ".join(str(c.resolve()) for c in dict.fromkeys(candidates))
    raise RatingError(f"study {str(given)!r}: no study folder (a folder with study.sqlite) at {looked}; give "
                      "the study folder's path, e.g. study = \"studies/oncology\" (make one with python -m probes run)")


def gallery_table(study: str | Path | None, style=None, topic=None, detail=None, preset=None, rated=None,
                  in_panel=None) -> pd.DataFrame:
    """One row per panel-like unit of a study: the images of one prompt from one preset and seed.

    Parameters
    ----------
    study : str or Path
        A study folder (see :func:`resolve_study`). It is only read.
    style, topic, detail, preset : str or list of str, optional
        Keep rows with these values; each must be one the study holds (RatingError naming them).
    rated : bool, optional
        True: rows at least one rater answered; False: rows nobody answered yet.
    in_panel : bool, optional
        True: rows built into a rating panel (``ratings build``); False: rows in no panel.

    Returns
    -------
    pandas.DataFrame
        :data:`GALLERY_COLUMNS`: prompt_id, text, style, topic, detail, preset, study_seed,
        n_images, and per image (lists in image order) image_index, seeds (each image's own
        seed) and files (``images/<sha256>.png``); panel (its token, None if not built),
        in_panel, n_assigned (raters it is assigned to), n_raters (raters whose latest answer
        is complete: every question scored, or the prompt flagged nonsensical). Then one
        ``score_<metric>`` column per automated metric (``score_<metric>:<scorer>`` where a
        metric has several scorers), NaN where a panel has no such score. Rows in catalog
        order of the prompts, then preset and study seed.

    Examples
    --------
    >>> gallery_table("studies/oncology", style="xray", rated=False)  # doctest: +SKIP
    """
    check_flag("rated", rated)
    check_flag("in_panel", in_panel)
    table = _read_table(resolve_study(study))
    return filter_table(table, style=style, topic=topic, detail=detail, preset=preset, rated=rated,
                        in_panel=in_panel)


def check_flag(name: str, value) -> None:
    if value is not None and not isinstance(value, bool):
        raise RatingError(f"{name}={value!r}: give True, False or None (no filter)")


def filter_table(table: pd.DataFrame, style=None, topic=None, detail=None, preset=None, rated=None,
                 in_panel=None) -> pd.DataFrame:
    """The rows of a :func:`gallery_table` that match; every value is checked against the table's own
    (RatingError: ``style='xrya' is not in this study; its styles: histopathology, poster, xray``)."""
    check_flag("rated", rated)
    check_flag("in_panel", in_panel)
    keep = pd.Series(True, index=table.index)
    for column, wanted in zip(FILTERS, (style, topic, detail, preset), strict=True):
        if wanted is None:
            continue
        values = [wanted] if isinstance(wanted, str) else list(wanted)
        known = sorted(table[column].dropna().unique())
        unknown = [v for v in values if v not in known]
        if unknown or not values:
            raise RatingError(f"{column}={unknown[0] if unknown else values!r} is not in this study; its "
                              f"{column}s: {', '.join(known) or 'none (the study has no images yet)'}")
        keep &= table[column].isin(values)
    if rated is not None:
        keep &= (table.n_raters > 0) == rated
    if in_panel is not None:
        keep &= table.in_panel == in_panel
    return table[keep].reset_index(drop=True)


def _read_table(folder: Path) -> pd.DataFrame:
    st, _ = open_for_reading(folder)  # read-only: the schema is checked, links refused, nothing written
    try:
        st.db.execute("BEGIN")  # one snapshot: images, panels, answers and scores of one moment
        try:
            images = pd.read_sql_query(
                "SELECT i.prompt_id, p.text, p.style, p.topic, p.detail, i.preset, i.study_seed, i.image_index, "
                "i.seed, i.file FROM images i JOIN prompts p USING (prompt_id) "
                "ORDER BY p.rowid, i.preset, i.study_seed, i.image_index", st.db)
            rating = _rating_state(st.db)
            scores = panel_scores(st)
        finally:
            st.db.execute("COMMIT")
    finally:
        st.close()
    key = ["prompt_id", "preset", "study_seed"]
    grouped = images.groupby(key, sort=False)
    table = grouped[["text", "style", "topic", "detail"]].first().reset_index()
    table["n_images"] = grouped.size().to_numpy()
    for column, source in (("image_index", "image_index"), ("seeds", "seed"), ("files", "file")):
        table[column] = grouped[source].agg(list).to_numpy()
    table["study_seed"] = table["study_seed"].astype("int64")
    table = table.merge(rating, on=key, how="left")
    table["in_panel"] = table["panel"].notna()
    table["panel"] = table["panel"].astype(object).where(table["in_panel"], None)
    for column in ("n_assigned", "n_raters"):
        table[column] = table[column].fillna(0).astype("int64")
    table = table[GALLERY_COLUMNS]
    if len(scores):
        several = scores.groupby("metric")["scorer"].nunique()
        scores = scores.assign(column=["score_" + (m if several[m] == 1 else f"{m}:{s}")
                                       for m, s in zip(scores.metric, scores.scorer, strict=True)])
        wide = scores.pivot_table(index=key, columns="column", values="value", aggfunc="mean").reset_index()
        wide.columns.name = None
        table = table.merge(wide, on=key, how="left")
    return table


def _rating_state(conn) -> pd.DataFrame:
    """Per built panel (prompt_id, preset, study_seed): panel, n_assigned, n_raters."""
    columns = ["prompt_id", "preset", "study_seed", "panel", "n_assigned", "n_raters"]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"panels", "assignments", "ratings", "rating_config"} <= tables:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "study_seed" else object) for c in columns})
    panels = pd.read_sql_query("SELECT panel, prompt_id, preset, study_seed FROM panels "
                               "WHERE kind != 'imported' AND study_seed IS NOT NULL", conn)
    assigned = pd.read_sql_query("SELECT panel, COUNT(DISTINCT rater) AS n_assigned FROM assignments "
                                 "GROUP BY panel", conn)
    latest = pd.read_sql_query(
        "SELECT r.rater, r.panel, r.scores, r.nonsensical FROM ratings r "
        "JOIN (SELECT rater, seq, MAX(rating_id) AS last FROM ratings GROUP BY rater, seq) l "
        "ON r.rating_id = l.last", conn)
    row = conn.execute("SELECT value FROM rating_config WHERE key = 'scale'").fetchone()
    dims = [d["id"] for d in (json.loads(row[0]) if row else DEFAULT_SCALE)["dimensions"]]
    complete = pd.Series([bool(flag) or all(json.loads(s).get(d) is not None for d in dims)
                          for s, flag in zip(latest.scores, latest.nonsensical, strict=True)],
                         index=latest.index, dtype=bool)
    answered = (latest[complete].groupby("panel")["rater"].nunique().rename("n_raters").reset_index())
    out = panels.merge(assigned, on="panel", how="left").merge(answered, on="panel", how="left")
    out["study_seed"] = out["study_seed"].astype("int64")
    return out[columns]


def pair_presets(table: pd.DataFrame, left: str, right: str) -> pd.DataFrame:
    """Two presets of the same prompt side by side: one row per (prompt_id, study_seed) that has both.

    Columns prompt_id, text, style, topic, detail, study_seed, ``left`` and ``right`` (the row
    labels of ``table`` for each preset). RatingError if a preset is not in the table, or
    the two are one.
    """
    known = sorted(table.preset.unique())
    for side, name in (("left", left), ("right", right)):
        if name not in known:
            raise RatingError(f"{side} preset {name!r} is not among these panels' presets: {', '.join(known) or 'none'}")
    if left == right:
        raise RatingError(f"side by side needs two different presets, not {left!r} twice; these panels have "
                          f"{', '.join(known)}")
    key = ["prompt_id", "study_seed"]
    sides = [table[table.preset == name].reset_index(names="row")[[*key, "row"]] for name in (left, right)]
    pairs = sides[0].merge(sides[1], on=key, suffixes=("_left", "_right"))
    about = table.drop_duplicates(key).set_index(key)[["text", "style", "topic", "detail"]]
    pairs = pairs.join(about, on=key)
    pairs = pairs.rename(columns={"row_left": "left", "row_right": "right"}).sort_values("left", ignore_index=True)
    return pairs[["prompt_id", "text", "style", "topic", "detail", "study_seed", "left", "right"]]


def default_pair(presets: list[str]) -> tuple[str | None, str | None]:
    if set(CLIP_PAIR) <= set(presets):
        return CLIP_PAIR
    return (presets[0] if presets else None, presets[1] if len(presets) > 1 else None)


def read_image(folder: str | Path, file: str) -> bytes:
    """The bytes of a study image (``images/<name>``), read without following links, at most
    MAX_IMAGE_BYTES; :class:`probes.errors.NotInside` (or OSError) if it cannot be."""
    sub, _, name = str(file).partition("/")
    if sub != "images" or not name or "/" in name:
        raise NotInside(f"{file!r} is not a file in the study's images folder")
    fd = open_folder(folder, "images")
    try:
        return read_regular(fd, name, MAX_IMAGE_BYTES)[0]
    finally:
        os.close(fd)


def _checked_size(image: Image.Image) -> None:
    problem = too_many_pixels(*image.size)
    if problem:
        raise NotInside(f"the image {problem}")


def thumbnail(data: bytes, px: int = THUMB_PX) -> bytes:
    """A PNG at most 2 x ``px`` on its longer side (sharp on a HiDPI screen)."""
    with Image.open(io.BytesIO(data)) as image:
        _checked_size(image)
        image.thumbnail((2 * px, 2 * px))
        out = io.BytesIO()
        image.convert("RGB").save(out, format="PNG")
    return out.getvalue()


# --- the page -------------------------------------------------------------------------------

CSS = """
<style>
.gp-card { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px; background: #fff; box-sizing: border-box; }
.gp-text { font-weight: 600; line-height: 1.3; }
.gp-meta, .gp-scores, .gp-rated { color: #444; font-size: 12px; line-height: 1.4; }
.gp-rated.gp-yes { color: #1a7f37; }
.gp-hit { background: transparent !important; border: 0 !important; box-shadow: none !important;
          width: 100% !important; height: 100% !important; padding: 0 !important; margin: 0 !important;
          cursor: zoom-in; color: transparent !important; }
.gp-hit:hover, .gp-hit:focus { outline: 3px solid #0969da; outline-offset: -3px; }
.gp-missing { width: 104px; height: 104px; display: flex; align-items: center; justify-content: center;
              text-align: center; font-size: 11px; color: #8a1f11; background: #fbeaea; }
.gp-viewer { position: fixed !important; inset: 0; z-index: 10000; background: #fff; padding: 10px 16px;
             overflow: auto; box-sizing: border-box; }
.gp-pair-head { font-weight: 600; margin-bottom: 4px; }
.gp-status { color: #444; }
.gp-error { color: #b00; font-weight: 600; }
</style>
"""


def _e(value) -> str:
    return html.escape("" if value is None or value != value else str(value))


def _widgets():
    import ipywidgets as w  # JupyterLab's side only: the table above needs no widgets

    return w


class Gallery:
    """The gallery page for one study; display ``gallery.widget`` (or call :func:`show_gallery`).

    Filters (style, topic, detail, preset, rated) choose the panels; the grid shows a page of
    them (:data:`PAGE_SIZE`), each with its prompt, style, topic and detail, preset, study seed,
    the thumbnails of its images (each image's own seed on hover), its automated scores and
    whether it was rated. A click on a thumbnail opens it at full resolution, with the panel's
    other images a click away. *Side by side* shows two presets of each prompt next to each other.
    """

    def __init__(self, study: str | Path | None = None, page_size: int = PAGE_SIZE):
        w = _widgets()
        self.path = resolve_study(study)
        self.page_size = int(page_size)
        self.table = _read_table(self.path)
        self.shown = self.table
        self.page = 0
        self._thumbs: dict[str, bytes] = {}
        self.viewing: tuple[int, int] | None = None  # (row of the table, image position)

        dropdown = dict(layout=w.Layout(width="auto", min_width="150px"), style={"description_width": "initial"})
        self.filters = {name: w.Dropdown(description=name.capitalize(), **dropdown) for name in FILTERS}
        self.rated = w.Dropdown(description="Rated", options=list(RATED_CHOICES), value="all", **dropdown)
        self.mode = w.ToggleButtons(options=["Grid", "Side by side"], value="Grid",
                                    tooltips=["one panel per card", "two presets of each prompt next to each other"],
                                    style={"button_width": "110px"})
        self.left = w.Dropdown(description="Left", **dropdown)
        self.right = w.Dropdown(description="Right", **dropdown)
        self.reload_button = w.Button(description="Reload", icon="refresh", tooltip="read the study again",
                                      layout=w.Layout(width="auto"))
        self.previous_button = w.Button(description="Previous page", icon="chevron-left", layout=w.Layout(width="auto"))
        self.next_button = w.Button(description="Next page", icon="chevron-right", layout=w.Layout(width="auto"))
        self.page_label = w.HTML()
        self.header = w.HTML()
        self.status = w.HTML()
        self.grid = w.GridBox(layout=w.Layout(grid_template_columns=f"repeat(auto-fill, {CARD_PX}px)",
                                              grid_gap="10px", width="100%"))
        self.big_image = w.Image(format="png")
        self.big_caption = w.HTML()
        self.fit = w.ToggleButtons(options=["Fit", "1:1"], value="Fit", tooltips=["fit to the page", "actual pixels"],
                                   style={"button_width": "60px"})
        self.previous_image = w.Button(description="Previous image", icon="arrow-left", layout=w.Layout(width="auto"))
        self.next_image = w.Button(description="Next image", icon="arrow-right", layout=w.Layout(width="auto"))
        self.close_button = w.Button(description="Back to the gallery", icon="th", button_style="primary",
                                     layout=w.Layout(width="auto"))
        self.viewer = w.VBox([w.HBox([self.close_button, self.previous_image, self.next_image, self.fit],
                                     layout=w.Layout(flex_flow="row wrap", grid_gap="6px")),
                              self.big_caption,
                              w.Box([self.big_image], layout=w.Layout(overflow="auto", max_width="100%"))],
                             layout=w.Layout(display="none"))
        self.viewer.add_class("gp-viewer")  # over the whole window; the grid stays where it was beneath
        self.pair_box = w.HBox([self.left, self.right], layout=w.Layout(display="none", grid_gap="6px"))
        self.pager = w.HBox([self.previous_button, self.page_label, self.next_button],
                            layout=w.Layout(align_items="center", grid_gap="8px"))
        self.results = w.VBox([self.pager, self.grid])

        for widget in (*self.filters.values(), self.rated, self.left, self.right):
            widget.observe(lambda _: self.refresh(), names="value")
        self.mode.observe(lambda _: self._mode_changed(), names="value")
        self.fit.observe(lambda _: self._show_big(), names="value")
        self.previous_button.on_click(lambda _: self.go_to_page(self.page - 1))
        self.next_button.on_click(lambda _: self.go_to_page(self.page + 1))
        self.previous_image.on_click(lambda _: self.step_image(-1))
        self.next_image.on_click(lambda _: self.step_image(1))
        self.close_button.on_click(lambda _: self.close_viewer())
        self.reload_button.on_click(lambda _: self.reload())

        self._set_options()
        controls = w.HBox([*self.filters.values(), self.rated],
                          layout=w.Layout(flex_flow="row wrap", grid_gap="6px"))
        modes = w.HBox([self.mode, self.pair_box, self.reload_button],
                       layout=w.Layout(flex_flow="row wrap", align_items="center", grid_gap="6px"))
        self.widget = w.VBox([w.HTML(CSS), self.header, controls, modes, self.status, self.viewer, self.results],
                             layout=w.Layout(padding="4px", width="100%"))
        self.refresh()

    # --- state --------------------------------------------------------------------------

    def _set_options(self) -> None:
        self._quiet = True
        try:
            for name, widget in self.filters.items():
                counts = self.table[name].value_counts()
                options = [("all", ALL)] + [(f"{value} ({counts[value]})", value) for value in sorted(counts.index)]
                keep = widget.value if widget.value in counts.index else ALL
                widget.options = options
                widget.value = keep
            presets = sorted(self.table.preset.unique())
            left, right = default_pair(presets)
            for widget, value in ((self.left, left), (self.right, right)):
                keep = widget.value if widget.value in presets else value
                widget.options = presets
                widget.value = keep
        finally:
            self._quiet = False
        n, rated = len(self.table), int((self.table.n_raters > 0).sum())
        self.header.value = (f"<div class='gp-status'><b>{html.escape(str(self.path))}</b>"
                             f": {n} panels of {int(self.table.n_images.sum())} images, {int(self.table.in_panel.sum())}"
                             f" in rating panels, {rated} rated. For the study team: it shows presets, seeds and "
                             "scores, so never show it to raters.</div>")

    def filtered(self) -> pd.DataFrame:
        """The panels the filters choose (side by side ignores the preset filter: it names its own two)."""
        chosen = {name: None if widget.value == ALL else widget.value for name, widget in self.filters.items()}
        if self.mode.value == "Side by side":
            chosen["preset"] = None
        rated, in_panel = RATED_CHOICES[self.rated.value]
        return filter_table(self.table, **chosen, rated=rated, in_panel=in_panel)

    def units(self) -> list:
        """What the grid pages through: row labels of :attr:`shown` (grid), or pairs (side by side)."""
        if self.mode.value == "Side by side":
            if self.left.value is None or self.right.value is None or self.left.value == self.right.value:
                return []
            return list(pair_presets(self.shown, self.left.value, self.right.value)[["left", "right"]]
                        .itertuples(index=False, name=None))
        return list(range(len(self.shown)))

    def per_page(self) -> int:
        return max(1, self.page_size // 2) if self.mode.value == "Side by side" else self.page_size

    def pages(self) -> int:
        return max(1, -(-len(self.units()) // self.per_page()))

    # --- actions ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Apply the filters and show their first page."""
        if getattr(self, "_quiet", False):
            return
        self.shown = self.filtered()
        self.page = 0
        self.close_viewer()
        self._draw()

    def reload(self) -> None:
        """Read the study again (answers given since), keeping the filters where they still apply."""
        self.table = _read_table(self.path)
        self._thumbs.clear()
        self._set_options()
        self.refresh()

    def go_to_page(self, page: int) -> None:
        self.page = min(max(0, page), self.pages() - 1)
        self.close_viewer()
        self._draw()

    def _mode_changed(self) -> None:
        self.pair_box.layout.display = "flex" if self.mode.value == "Side by side" else "none"
        self.filters["preset"].disabled = self.mode.value == "Side by side"
        self.refresh()

    def _draw(self) -> None:
        units = self.units()
        start = self.page * self.per_page()
        page = units[start:start + self.per_page()]
        if self.mode.value == "Side by side":
            self.grid.layout.grid_template_columns = f"repeat(auto-fill, minmax(min({2 * CARD_PX + 24}px, 100%), 1fr))"
            self.grid.children = [self._pair_card(left, right) for left, right in page]
            what = "prompts with both presets"
            if self.left.value == self.right.value:
                self.status.value = "<span class='gp-error'>Choose two different presets for Left and Right.</span>"
            else:
                self.status.value = ""
        else:
            self.grid.layout.grid_template_columns = f"repeat(auto-fill, {CARD_PX}px)"
            self.grid.children = [self._card(row) for row in page]
            what = "panels"
            self.status.value = ""
        if not units:
            self.status.value = self.status.value or "<span class='gp-status'>No panels match these filters.</span>"
        shown = f"{start + 1}-{start + len(page)} of {len(units)} {what}" if units else f"0 {what}"
        self.page_label.value = f"Page {self.page + 1} of {self.pages()} · {shown}"
        self.previous_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= self.pages() - 1

    # --- cards ----------------------------------------------------------------------------

    def _card(self, row: int):
        w = _widgets()
        r = self.shown.iloc[row]
        head = w.HTML(f"<div class='gp-text'>{html.escape(r.text)}</div>"
                      f"<div class='gp-meta'>{_e(r['style'])} · {_e(r.topic)} · "
                      f"{_e(r.detail)}</div>")
        card = w.VBox([head, *self._panel_parts(row)], layout=w.Layout(grid_gap="4px"))
        card.add_class("gp-card")
        return card

    def _pair_card(self, left: int, right: int):
        w = _widgets()
        r = self.shown.iloc[left]
        head = w.HTML(f"<div class='gp-pair-head'>{html.escape(r.text)}</div>"
                      f"<div class='gp-meta'>{_e(r['style'])} · {_e(r.topic)} · "
                      f"{_e(r.detail)} · study seed {int(r.study_seed)}</div>")
        halves = [w.VBox(self._panel_parts(row), layout=w.Layout(grid_gap="4px", flex="1 1 0", min_width="0"))
                  for row in (left, right)]
        card = w.VBox([head, w.HBox(halves, layout=w.Layout(grid_gap="12px"))], layout=w.Layout(grid_gap="4px"))
        card.add_class("gp-card")
        card.add_class("gp-pair")
        return card

    def _panel_parts(self, row: int) -> list:
        w = _widgets()
        r = self.shown.iloc[row]
        meta = w.HTML(f"<div class='gp-meta'>preset <b>{html.escape(r.preset)}</b> · study seed {int(r.study_seed)}"
                      "</div>")
        tiles = [self._tile(row, position) for position in range(len(r.files))]
        thumbs = w.GridBox(tiles, layout=w.Layout(grid_template_columns=f"repeat(2, {THUMB_PX}px)", grid_gap="4px"))
        scores = [(c[len("score_"):], r[c]) for c in self.shown.columns if c.startswith("score_") and pd.notna(r[c])]
        score_text = " · ".join(f"{html.escape(name)} {value:.3g}" for name, value in scores) or "no automated scores"
        if r.n_raters:
            rated = (f"<div class='gp-rated gp-yes'>rated by {r.n_raters} of {r.n_assigned} rater"
                     f"{'s' if r.n_assigned != 1 else ''}</div>")
        elif r.in_panel:
            rated = f"<div class='gp-rated'>in a rating panel, not rated yet ({r.n_assigned} assigned)</div>"
        else:
            rated = "<div class='gp-rated'>not in a rating panel</div>"
        return [meta, thumbs, w.HTML(f"<div class='gp-scores'>{score_text}</div>{rated}")]

    def _tile(self, row: int, position: int):
        w = _widgets()
        r = self.shown.iloc[row]
        file, seed = r.files[position], r.seeds[position]
        try:
            data = self._thumb(file)
        except (OSError, NotInside, Image.DecompressionBombError, ValueError) as exc:
            why = "missing" if isinstance(exc, FileNotFoundError) else "cannot be shown"
            return w.HTML(f"<div class='gp-missing' title='{html.escape(file)}: {html.escape(str(exc))}'>"
                          f"image {position + 1}<br>{why}</div>")
        image = w.Image(value=data, format="png", width=THUMB_PX, height=THUMB_PX,
                        layout=w.Layout(grid_area="tile", object_fit="contain", width=f"{THUMB_PX}px",
                                        height=f"{THUMB_PX}px"))
        hit = w.Button(description=f"Enlarge image {position + 1}", tooltip=f"Enlarge image {position + 1} of {r.preset} (image seed {seed})",
                       layout=w.Layout(grid_area="tile", width=f"{THUMB_PX}px", height=f"{THUMB_PX}px"))
        hit.add_class("gp-hit")
        hit.on_click(lambda _, row=row, position=position: self.enlarge(row, position))
        tile = w.GridBox([image, hit], layout=w.Layout(grid_template_areas='"tile"', width=f"{THUMB_PX}px",
                                                      height=f"{THUMB_PX}px"))
        tile.add_class("gp-tile")
        return tile

    def _thumb(self, file: str) -> bytes:
        if file not in self._thumbs:
            self._thumbs[file] = thumbnail(read_image(self.path, file))
        return self._thumbs[file]

    # --- the viewer -----------------------------------------------------------------------

    def enlarge(self, row: int, position: int) -> None:
        """Show image ``position`` of the shown row ``row`` at full resolution, over the page."""
        self.viewing = (row, position)
        self.viewer.layout.display = "flex"
        self._show_big()

    def step_image(self, step: int) -> None:
        """The panel's next (1) or previous (-1) image in the viewer, round the panel."""
        if self.viewing is None:
            return
        row, position = self.viewing
        self.viewing = (row, (position + step) % len(self.shown.iloc[row].files))
        self._show_big()

    def close_viewer(self) -> None:
        self.viewing = None
        if hasattr(self, "viewer"):
            self.viewer.layout.display = "none"
            self.big_image.value = b""

    def _show_big(self) -> None:
        if self.viewing is None:
            return
        row, position = self.viewing
        r = self.shown.iloc[row]
        file = r.files[position]
        where = (f"<b>{html.escape(r.text)}</b><br><span class='gp-meta'>preset {html.escape(r.preset)} · study seed "
                 f"{int(r.study_seed)} · image {position + 1} of {len(r.files)} · image seed {r.seeds[position]} · "
                 f"{html.escape(file)}")
        try:
            data = read_image(self.path, file)
            with Image.open(io.BytesIO(data)) as image:
                _checked_size(image)
                width, height = image.size
        except (OSError, NotInside, Image.DecompressionBombError, ValueError) as exc:
            self.big_image.value = b""
            self.big_caption.value = where + f"</span><div class='gp-error'>This image cannot be shown: {html.escape(str(exc))}</div>"
            return
        self.big_caption.value = where + f" · {width} x {height} px</span>"
        self.big_image.value = data
        if self.fit.value == "Fit":  # the whole image in the window, however small or large it was made
            self.big_image.layout = _widgets().Layout(width="auto", height="calc(100vh - 110px)", max_width="100%",
                                                      object_fit="contain")
        else:
            self.big_image.layout = _widgets().Layout(width=f"{width}px", height=f"{height}px", max_width="none",
                                                      object_fit="none")


def show_gallery(study: str | Path | None = None, page_size: int = PAGE_SIZE) -> Gallery | None:
    """Display the gallery of ``study`` (notebooks/50_gallery.ipynb); returns it. A study that
    cannot be opened is said in one line on the page, no traceback; returns None then."""
    from IPython.display import HTML, display

    from probes.errors import ProbeError

    try:
        gallery = Gallery(study, page_size=page_size)
    except (ProbeError, RatingError) as exc:
        display(HTML(f"<p style='color:#b00;font-weight:600'>{html.escape(str(exc))}</p>"))
        return None
    display(gallery.widget)
    return gallery
