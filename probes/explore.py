"""Interactive prompt exploration for JupyterLab (notebooks/00_explore.ipynb).

Type a prompt or pick one from a catalog, pick presets, a study seed and a count, press
Generate, watch each preset's images arrive, and keep the good ones in a study. Images get the
same per-image seeds as a probe run would give them, so a kept image is exactly the one a run
would have made.

A relative study path is taken from the project root (the nearest folder at or above the
current directory holding ``pyproject.toml``; the current directory if there is none), so
``study = "demo-study"`` in ``notebooks/00_explore.ipynb`` is the ``demo-study`` that
``make demo`` builds, not a new ``notebooks/demo-study``. A study folder that does not exist is
only made when asked (``create=True``, or the "create" tick box).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import ipywidgets as w

from . import catalog as cat
from .errors import MissingDependencyError, PresetError, ProbeError, StoreError, WeightsError
from .generators import backend_class, create_generator, load_presets
from .generators.base import GeneratedImage, pick_device
from .run import record_image
from .seeds import image_seed
from .store import DB_NAME, Study

__all__ = ["Explorer", "PresetReadiness", "cannot_run_line", "preset_readiness", "project_root",
           "resolve_study", "study_state"]

RED = "#a00"
#: failures that stay until the weights change: trying again would only fail again (slowly)
LASTING = (WeightsError, MissingDependencyError, PresetError)


def project_root(start: str | Path | None = None) -> Path:
    """The folder relative study paths start from: the nearest folder at or above ``start`` (the
    current directory) holding ``pyproject.toml``; ``start`` itself if there is none."""
    here = Path(start or Path.cwd()).expanduser().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return here


def resolve_study(study: str | Path, root: str | Path | None = None) -> Path:
    """The absolute study folder a user means: an absolute path as given (``~`` expanded), a
    relative one under ``root`` (default :func:`project_root`)."""
    path = Path(str(study).strip()).expanduser()
    return (path if path.is_absolute() else Path(root or project_root()) / path).resolve()


def study_state(path: Path) -> tuple[str, int | None]:
    """("study", images), ("missing", None) or ("not a study", None) for a folder without a
    study database."""
    if not (path / DB_NAME).exists():
        return ("not a study" if path.exists() else "missing"), None
    with Study(path, readonly=True) as st:
        return "study", int(st.db.execute("SELECT COUNT(*) FROM images").fetchone()[0])


@dataclass
class PresetReadiness:
    """Whether a preset can run here: its weights (as `python -m probes presets` says) and device."""

    preset: str
    ready: bool
    weights: str
    device: str

    @property
    def label(self) -> str:
        """The preset list's line: ✓/✗, name, device, where the weights are (short)."""
        mark, where = ("✓", self.weights) if self.ready else ("✗", "weights not here")
        where = where if len(where) <= 40 else where[:39] + "…"
        return f"{mark} {self.preset} · {self.device} · {where}"


def preset_readiness(preset: str, settings: dict, device: str | None = None) -> PresetReadiness:
    """The weights line of `python -m probes presets` and the device the preset would run on
    (``device`` overrides the preset's own, as in :class:`Explorer`)."""
    try:
        weights = backend_class(settings["backend"]).weights_status(settings)
    except ProbeError as exc:
        weights = f"not here: {exc}"
    ready = not (weights.startswith(("not here", "refiner not here")) or "not installed" in weights)
    asked = device or settings.get("device") or "auto"
    try:
        where = str(pick_device(asked)).split(":")[0] if asked == "auto" else str(pick_device(asked))
    except PresetError:
        where, ready = f"{asked} (not available here)", False
    return PresetReadiness(preset, ready, weights, where)


def cannot_run_line(preset: str, weights: str, exc: BaseException) -> str:
    """One sentence for a preset that could not run: what is missing and how to get it."""
    how = weights.split(": ", 1)[1] if ": " in weights else weights
    if weights.startswith(("not here", "refiner not here")) and how.startswith("huggingface-cli download"):
        return (f"{preset} cannot run here: its weights are not on this machine. Get them with "
                f"`{how}` on a machine with internet (accept the model licence on its hub page first) and "
                "copy ~/.cache/huggingface here, or set `model:` to a local folder in a presets file.")
    if weights.startswith("not here") and "files, " in how:
        count, folder = how.split(", ", 1)
        return (f"{preset} cannot run here: its GLIDE checkpoints are not on this machine ({count} "
                f"missing in {folder}). Download them on a machine with internet (the details name each "
                "file's address) and put them there.")
    if weights.startswith("not here"):
        return f"{preset} cannot run here: its weights are not here; {how}."
    if "not installed" in weights:
        return f"{preset} cannot run here: {weights} (pip install -e '.[glide]')."
    first = " ".join(str(exc).split())
    first = first if len(first) <= 240 else first[:first.rfind(" ", 0, 240)] + " …"
    return f"{preset} could not run: {type(exc).__name__}: {first}"


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _error(text: str) -> str:
    return f"<span style='color:{RED}'>{html.escape(text)}</span>"


class Explorer:
    """The exploration panel; display it with ``explorer.widget``.

    ``study`` is where "Keep in study" stores images (relative paths start at ``root``, default
    :func:`project_root`); ``create=True`` allows making it when it does not exist yet.
    """

    def __init__(self, study: str | None = None, catalog: str = "oncology", presets: list[str] | None = None,
                 presets_file: str | None = None, device: str | None = None, create: bool = False,
                 root: str | Path | None = None):
        self.device = device
        self.root = Path(root).resolve() if root else project_root()
        self.known = load_presets(presets_file)
        self._generators: dict = {}
        self._lasting: dict[str, tuple[str, str, str]] = {}  # preset -> (weights, line, details)
        self.results: list[tuple[str, str, int, GeneratedImage]] = []  # (preset, prompt, index, image)
        self.failed: dict[str, str] = {}  # preset -> its one line, for the last Generate
        self.shown_seed = 0
        self.readiness = {name: preset_readiness(name, s, device) for name, s in self.known.items()}

        self.catalog_box = w.Text(value=str(catalog), description="Catalog")
        self.pick = w.Dropdown(options=[], description="From catalog", layout=w.Layout(width="70%"))
        self.prompt = w.Textarea(placeholder="Type a prompt, or pick one above", description="Prompt",
                                 layout=w.Layout(width="70%", height="4em"))
        wide = {"description_width": "initial"}
        self.presets = w.SelectMultiple(options=[(r.label, n) for n, r in self.readiness.items()],
                                        value=tuple(presets or ["tiny"]), description="Presets",
                                        rows=min(8, len(self.known)), layout=w.Layout(width="34em"))
        self.presets_legend = w.HTML(
            "<small>✓ weights here, ✗ not here (as <code>python -m probes presets</code> says); "
            "then the device each would run on</small>")
        self.seed = w.IntText(value=0, description="Study seed", style=wide, layout=w.Layout(width="14em"),
                              tooltip="The study seed. Each image's own seed comes from it, the prompt, "
                                      "the preset and the image's number: hover an image to see it.")
        self.seed_help = w.HTML("<div style='line-height:1.3'><small>each image's own seed comes from "
                                "the study seed:<br>hover an image to see it</small></div>")
        self.count = w.IntSlider(value=4, min=1, max=8, description="Images")
        self.study_box = w.Text(value=str(study or ""), description="Study", placeholder="a study folder",
                                layout=w.Layout(width="70%"))
        self.create = w.Checkbox(value=bool(create), description="create a new study at this path",
                                 indent=False)
        self.study_info = w.HTML()
        self.generate_button = w.Button(description="Generate", button_style="primary", icon="play")
        self.keep_button = w.Button(description="Keep in study", icon="save", disabled=True)
        self.status = w.HTML()
        self.grid = w.VBox()

        self.catalog_box.observe(lambda _: self._load_catalog(), names="value")
        self.pick.observe(lambda change: setattr(self.prompt, "value", change["new"] or self.prompt.value),
                          names="value")
        self.study_box.observe(lambda _: self._show_study(), names="value")
        self.create.observe(lambda _: self._show_study(), names="value")
        self.generate_button.on_click(lambda _: self.generate())
        self.keep_button.on_click(lambda _: self.keep())
        self._load_catalog()
        self._show_study()
        self.widget = w.VBox([self.catalog_box, self.pick, self.prompt,
                              w.HBox([self.presets, w.VBox([self.seed, self.seed_help, self.count])]),
                              self.presets_legend, self.study_box, self.study_info, self.create,
                              w.HBox([self.generate_button, self.keep_button]), self.status, self.grid])

    # --- the study --------------------------------------------------------------------

    @property
    def study_path(self) -> Path | None:
        """The absolute study folder "Keep in study" writes to; None when no study is named."""
        text = self.study_box.value.strip()
        return resolve_study(text, self.root) if text else None

    def _show_study(self) -> None:
        path = self.study_path
        rule = f"relative paths start at the project root {html.escape(str(self.root))}"
        self.create.layout.display = "none"
        if path is None:
            self.study_info.value = f"<small>no study named: images cannot be kept ({rule})</small>"
        else:
            try:
                state, images = study_state(path)
            except ProbeError as exc:
                state, images = "error", None
                self.study_info.value = _error(str(exc))
            shown = f"<code>{html.escape(str(path))}</code>"
            if state == "study":
                self.study_info.value = f"<small>keeps into {shown}: a study with {images} images ({rule})</small>"
            elif state != "error":
                what = "no folder there yet" if state == "missing" else "a folder that is not a study (no study.sqlite)"
                self.study_info.value = (f"<small>{shown}: {what}; images are kept only when you tick "
                                         f"“create” ({rule})</small>")
                self.create.layout.display = None
        self._update_keep()

    def _can_keep(self) -> bool:
        path = self.study_path
        if path is None:
            return False
        return (path / DB_NAME).exists() or self.create.value

    def _update_keep(self) -> None:
        self.keep_button.disabled = not (self.results and self._can_keep())

    # --- the catalog ------------------------------------------------------------------

    def _load_catalog(self) -> None:
        try:
            self.catalog = cat.load_catalog(self.catalog_box.value)
        except Exception as exc:
            self.status.value = _error(str(exc))
            return
        self.pick.options = [""] + list(cat.expand(self.catalog).text)
        self.status.value = f"catalog {html.escape(self.catalog.name)}: {len(self.pick.options) - 1} prompts"

    def _prompt_row(self, text: str) -> dict:
        match = cat.match_prompt(self.catalog, text)
        style = self.catalog.style(match.style) if match and match.style in {s.id for s in self.catalog.styles} else None
        topic = self.catalog.topic(match.topic) if match and match.topic in {t.id for t in self.catalog.topics} else None
        return {"prompt_id": cat.prompt_id(text), "text": text,
                "style": match.style if match else "custom", "style_group": style.group if style else "other",
                "topic": match.topic if match else "custom", "topic_group": topic.group if topic else "custom",
                "detail": match.detail if match else "custom",
                "catalog": self.catalog.name if match else "explore"}

    # --- generating -------------------------------------------------------------------

    def _generator(self, preset: str):
        if preset not in self._generators:
            self._generators[preset] = create_generator(preset, self.known, device=self.device)
        return self._generators[preset]

    def generate(self) -> None:
        """Make each selected preset's images, showing each as it comes; a preset that cannot run
        gets one line, and the others' images stay."""
        text = self.prompt.value.strip()
        if not text:
            self.status.value = _error("Type a prompt or pick one from the catalog first.")
            return
        pid, seed, count = cat.prompt_id(text), int(self.seed.value), int(self.count.value)
        self.results, self.failed, self.shown_seed = [], {}, seed
        self.keep_button.disabled = True
        row = self._prompt_row(text)
        where = (f"{row['catalog']}: style {row['style']}, topic {row['topic']}, detail {row['detail']}"
                 if row["catalog"] != "explore" else f"free text, not in catalog {self.catalog.name}")
        caption = w.HTML(f"<b>Images of the prompt</b> “{html.escape(text)}” <small>({html.escape(where)}; "
                         f"study seed {seed}, {count} per preset)</small>")
        rows = {preset: self._preset_row(preset, count) for preset in self.presets.value}
        self.grid.children = [caption, *(r["box"] for r in rows.values())]
        self.generate_button.disabled = True
        self.status.value = "generating …"
        try:
            for preset, parts in rows.items():
                self._generate_preset(preset, parts, text, pid, seed, count)
        finally:
            self.generate_button.disabled = False
        made = len(self.results)
        summary = f"{made} images of “{html.escape(text)}”"
        if self.failed:
            summary += " · " + _error(f"{len(self.failed)} preset{'s' if len(self.failed) > 1 else ''} "
                                      f"could not run: {', '.join(self.failed)} (see its row)")
        if made and not self.study_path:
            summary += " (name a study folder to keep them)"
        self.status.value = summary
        self._update_keep()

    def _preset_row(self, preset: str, count: int) -> dict:
        label = self.readiness[preset].label if preset in self.readiness else preset
        header = w.HTML(f"<b>{html.escape(preset)}</b> <small>{html.escape(label.split(' · ', 1)[-1])}</small>")
        bar = w.IntProgress(value=0, min=0, max=count, description=f"0 of {count}",
                            style={"description_width": "initial"}, layout=w.Layout(width="24em"))
        note = w.HTML()
        tiles = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        return {"box": w.VBox([w.HBox([header, bar]), note, tiles]), "header": header, "bar": bar,
                "note": note, "tiles": tiles}

    def _generate_preset(self, preset: str, parts: dict, text: str, pid: str, seed: int, count: int) -> None:
        weights = self.readiness[preset].weights if preset in self.readiness else "unknown"
        if preset in self._lasting and self._lasting[preset][0] == self._weights_now(preset):
            self._fail(preset, parts, *self._lasting[preset][1:])
            return
        try:
            parts["note"].value = "<small>loading the model …</small>"
            generator = self._generator(preset)
            parts["header"].value = (f"<b>{html.escape(preset)}</b> <small>"
                                     f"{html.escape(getattr(generator, 'label', None) or '')} on "
                                     f"{html.escape(str(generator.device))}</small>")
            parts["note"].value = ""
            seeds = [image_seed(seed, pid, preset, i) for i in range(count)]
            # one image per call where the generator is batch-invariant (CPU): the same pixels as a
            # run, shown as they come; on a GPU a panel is one batch, as a run makes it
            chunks = [[i] for i in range(count)] if generator.batch_invariant else [list(range(count))]
            for chunk in chunks:
                if len(chunk) > 1:
                    parts["note"].value = f"<small>one batch of {len(chunk)} images …</small>"
                made = generator.generate([text] * len(chunk), [seeds[i] for i in chunk])
                for index, image in zip(chunk, made, strict=True):
                    self.results.append((preset, text, index, image))
                    parts["tiles"].children = (*parts["tiles"].children, self._tile(text, seed, index, image))
                    parts["bar"].value += 1
                    parts["bar"].description = f"{parts['bar'].value} of {count}"
            parts["note"].value = ""
            parts["bar"].bar_style = "success"
        except Exception as exc:  # one preset's failure never costs the other presets' images
            weights = self._weights_now(preset) or weights
            line, details = cannot_run_line(preset, weights, exc), " ".join(str(exc).split())
            if isinstance(exc, LASTING):
                self._generators.pop(preset, None)
                self._lasting[preset] = (weights, line, details)
            self._fail(preset, parts, line, details)

    def _weights_now(self, preset: str) -> str:
        return preset_readiness(preset, self.known[preset], self.device).weights if preset in self.known else ""

    def _fail(self, preset: str, parts: dict, line: str, details: str) -> None:
        self.failed[preset] = line
        parts["bar"].bar_style = "danger"
        parts["bar"].description = f"{parts['bar'].value} of {parts['bar'].max}: stopped"
        parts["note"].value = (f"<div style='white-space:normal;max-width:60em'>{_error(line)}"
                               f"<details><summary><small>details</small></summary><small style="
                               f"'overflow-wrap:anywhere'>{html.escape(details)}</small></details></div>")

    def _tile(self, text: str, seed: int, index: int, made: GeneratedImage):
        hover = html.escape(f"image #{index} of “{text}”: its own seed {made.seed} (from study seed {seed})",
                            quote=True)
        data = base64.b64encode(_png(made.image)).decode("ascii")
        # an <img> (not a widgets.Image, whose view cannot take a tooltip) so that hovering the image
        # shows its own seed; the browser scales it into the tile, keeping its shape (FLUX's 1024 x 768)
        return w.HTML(f"<figure style='margin:0 6px 6px 0'><img src='data:image/png;base64,{data}' "
                      f"width='160' height='160' style='object-fit:contain;display:block' title='{hover}' "
                      f"alt='image #{index}, seed {made.seed}'><figcaption title='{hover}'><small>#{index} · "
                      f"seed {made.seed}</small></figcaption></figure>")

    # --- keeping ----------------------------------------------------------------------

    def keep(self) -> int:
        """Store the shown images in the study, as a probe run would; returns how many were added.

        Images the study already holds (same prompt, preset, study seed and number) are counted,
        not written again. A study folder that does not exist is made only with ``create``.
        """
        path = self.study_path
        if not self.results:
            return 0
        if path is None:
            self.status.value = _error("Name a study folder in the Study box to keep these images.")
            return 0
        if not self._can_keep():
            self.status.value = _error(f"No study at {path}: nothing was kept. Check the path, or tick "
                                       "“create a new study at this path” to make one there.")
            return 0
        text, seed = self.results[0][1], self.shown_seed
        row = self._prompt_row(text)
        import pandas as pd

        try:
            with Study(path, create=True) as st:
                st.add_prompts(pd.DataFrame([row]))
                present = st.done_keys(seed, sorted({r[0] for r in self.results}))
                new = [r for r in self.results if (row["prompt_id"], r[0], r[2]) not in present]
                for preset, _, index, made in new:
                    generator = self._generators[preset]
                    info = generator.describe()
                    settings_hash = st.register_preset(preset, info["backend"], info["settings"])
                    record_image(st, info, settings_hash, row["prompt_id"], text, preset, seed,
                                 index, made, "explore", None, getattr(generator, "label", None))
        except StoreError as exc:
            self.status.value = _error(f"Nothing more was kept: {exc}")
            return 0
        already = len(self.results) - len(new)
        message = f"kept {len(new)} new images in {html.escape(str(path))}" if new else ""
        if already:
            message += ("; " if new else "") + f"already in the study: {already} images"
            message += "" if new else f" (nothing new kept in {html.escape(str(path))})"
        self.status.value = message
        self._show_study()
        return len(new)
