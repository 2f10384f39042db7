"""Interactive prompt exploration for JupyterLab (notebooks/00_explore.ipynb).

Type a prompt or pick one from a catalog, pick presets, a seed and a count, press Generate,
look at the grid, and keep the good ones in a study. Images get the same per-image seeds as
a probe run would give them, so a kept image is exactly the one a run would have made.
"""

from __future__ import annotations

import io

import ipywidgets as w
from tqdm.auto import tqdm

from . import catalog as cat
from .generators import create_generator, load_presets
from .generators.base import GeneratedImage
from .run import record_image
from .seeds import image_seed
from .store import Study


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class Explorer:
    """The exploration panel; display it with ``explorer.widget``."""

    def __init__(self, study: str | None = None, catalog: str = "oncology", presets: list[str] | None = None,
                 presets_file: str | None = None, device: str | None = None):
        self.study_path = study
        self.device = device
        self.known = load_presets(presets_file)
        self._generators: dict = {}
        self.results: list[tuple[str, str, int, GeneratedImage]] = []  # (preset, prompt, index, image)

        self.catalog_box = w.Text(value=str(catalog), description="Catalog")
        self.pick = w.Dropdown(options=[], description="From catalog", layout=w.Layout(width="70%"))
        self.prompt = w.Textarea(placeholder="Type a prompt, or pick one above", description="Prompt",
                                 layout=w.Layout(width="70%", height="4em"))
        self.presets = w.SelectMultiple(options=list(self.known), value=tuple(presets or ["tiny"]),
                                        description="Presets", rows=min(6, len(self.known)))
        self.seed = w.IntText(value=0, description="Seed")
        self.count = w.IntSlider(value=4, min=1, max=8, description="Images")
        self.generate_button = w.Button(description="Generate", button_style="primary", icon="play")
        self.keep_button = w.Button(description="Keep in study", icon="save", disabled=True)
        self.status = w.HTML()
        self.grid = w.VBox()

        self.catalog_box.observe(lambda _: self._load_catalog(), names="value")
        self.pick.observe(lambda change: setattr(self.prompt, "value", change["new"] or self.prompt.value),
                          names="value")
        self.generate_button.on_click(lambda _: self.generate())
        self.keep_button.on_click(lambda _: self.keep())
        self._load_catalog()
        self.widget = w.VBox([self.catalog_box, self.pick, self.prompt,
                              w.HBox([self.presets, w.VBox([self.seed, self.count])]),
                              w.HBox([self.generate_button, self.keep_button]), self.status, self.grid])

    def _load_catalog(self) -> None:
        try:
            self.catalog = cat.load_catalog(self.catalog_box.value)
        except Exception as exc:
            self.status.value = f"<b style='color:#b00'>{exc}</b>"
            return
        self.pick.options = [""] + list(cat.expand(self.catalog).text)
        self.status.value = f"catalog {self.catalog.name}: {len(self.pick.options) - 1} prompts"

    def _generator(self, preset: str):
        if preset not in self._generators:
            self._generators[preset] = create_generator(preset, self.known, device=self.device)
        return self._generators[preset]

    def generate(self) -> None:
        text = self.prompt.value.strip()
        if not text:
            self.status.value = "<b style='color:#b00'>Type a prompt or pick one from the catalog first.</b>"
            return
        pid = cat.prompt_id(text)
        self.results = []
        self.generate_button.disabled = True
        try:
            bar = tqdm(total=len(self.presets.value) * self.count.value, desc="generating", unit="img")
            for preset in self.presets.value:
                seeds = [image_seed(self.seed.value, pid, preset, i) for i in range(self.count.value)]
                for index, made in enumerate(self._generator(preset).generate([text] * len(seeds), seeds)):
                    self.results.append((preset, text, index, made))
                    bar.update(1)
            bar.close()
        except Exception as exc:
            self.status.value = f"<b style='color:#b00'>{type(exc).__name__}: {exc}</b>"
            return
        finally:
            self.generate_button.disabled = False
        self._show()
        self.keep_button.disabled = self.study_path is None
        self.status.value = f"{len(self.results)} images" + ("" if self.study_path else
                                                             " (give Explorer a study folder to keep them)")

    def _show(self) -> None:
        rows = []
        for preset in self.presets.value:
            mine = [r for r in self.results if r[0] == preset]
            label = getattr(self._generators[preset], "label", None) or preset
            # the browser scales the full-size image into the tile, keeping its shape (FLUX's 1024 x 768)
            tiles = [w.VBox([w.Image(value=_png(m.image), width=160, height=160,
                                     layout=w.Layout(object_fit="contain")),
                             w.HTML(f"<small>#{i} seed {m.seed}</small>")]) for _, _, i, m in mine]
            rows.append(w.VBox([w.HTML(f"<b>{label}</b>"), w.HBox(tiles)]))
        self.grid.children = rows

    def keep(self) -> int:
        """Store the shown images in the study, as a probe run would; returns how many were added."""
        if not self.results or self.study_path is None:
            return 0
        text = self.results[0][1]
        match = cat.match_prompt(self.catalog, text)
        style = self.catalog.style(match.style) if match and match.style in {s.id for s in self.catalog.styles} else None
        topic = self.catalog.topic(match.topic) if match and match.topic in {t.id for t in self.catalog.topics} else None
        row = {"prompt_id": cat.prompt_id(text), "text": text,
               "style": match.style if match else "custom", "style_group": style.group if style else "other",
               "topic": match.topic if match else "custom", "topic_group": topic.group if topic else "custom",
               "detail": match.detail if match else "custom",
               "catalog": self.catalog.name if match else "explore"}
        import pandas as pd

        with Study(self.study_path) as st:
            st.add_prompts(pd.DataFrame([row]))
            for preset, _, index, made in self.results:
                info = self._generators[preset].describe()
                settings_hash = st.register_preset(preset, info["backend"], info["settings"])
                record_image(st, info, settings_hash, row["prompt_id"], text, preset, self.seed.value,
                             index, made, "explore", None, getattr(self._generators[preset], "label", None))
        self.status.value = f"kept {len(self.results)} images in {self.study_path}"
        return len(self.results)
