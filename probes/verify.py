"""Regenerate a sample of a study's images and compare them with the stored files.

A study's images should be reproducible: every image has its own seed, and the settings each
preset actually used are recorded in the study (``presets.settings_json``). ``verify_study``
remakes a sample of the images alone (one prompt, its recorded seed), with those recorded
settings, and compares pixels with the PNG in the study. Before that it checks that each
file is there, that its SHA-256 is still the one the manifest recorded (an edited or planted
PNG), and that the weights loaded here have the digests the image recorded.

Differences are grouped by the batch size an image was made in (``meta_json["batch"]``): on
some devices a pipeline call of four images rounds differently from a call of one, so images
made in a batch may drift by a few levels of 255 while those made alone match bit for bit.
A different device, dtype or library version explains drift too; the report names them.

Nothing is written to the study: it is opened read-only.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .errors import PresetError, ProbeError, StoreError
from .generators import BACKENDS, backend_class, read_preset_file
from .generators.base import pick_device
from .store import NON_IMAGE_SETTINGS, Study

#: settings that only say where a preset's weights are on this machine: a --presets-file may
#: change them. That the weights found there are the recorded ones is checked by their digests.
WEIGHT_LOCATION_SETTINGS = NON_IMAGE_SETTINGS | {"model", "checkpoints", "checkpoint_dir", "cache_dir",
                                                 "local_files_only"}
#: the per-image columns of the report and of its CSV, in order
COLUMNS = ["prompt_id", "preset", "image_index", "seed", "file", "batch", "identical", "max_diff",
           "share_differing", "status"]
IDENTICAL, DIFFERS, WEIGHTS_DIFFER = "identical", "differs", "made with other weights"
CHANGED, MISSING = "file changed since it was recorded", "missing"
FAILED = "failed"  # status "failed: <error>"
UNKNOWN = "unknown"  # batch size of an image made before medprobe recorded it


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_study`: one row per sampled image, and what explains drift.

    ``images`` holds :data:`COLUMNS` (``status`` is one of identical, differs, "made with other
    weights", "file changed since it was recorded", missing, "failed: ...") and, after them, the
    prompt text, study seed, recorded device and dtype, whether the weights matched, and whether
    the image was made in deterministic mode (None where not recorded).
    """

    study: Path
    images: pd.DataFrame
    available: dict[str, int]  # images of each verified preset in the study
    sample: int | None  # per preset; None: all
    seed: int
    notes: dict[str, list[str]] = field(default_factory=dict)  # per preset: environment, weights
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every sampled image was there, unchanged, and regenerated bit for bit."""
        return bool((self.images["status"] == IDENTICAL).all())

    def table(self) -> pd.DataFrame:
        """One row per preset and recorded batch size, then a total row."""
        groups = []
        for (preset, _order), rows in self.images.groupby(["preset", _batch_order(self.images)], sort=True):
            groups.append(_group_row(preset, rows["batch"].iloc[0], rows))
        groups.append(_group_row("total", "", self.images))
        return pd.DataFrame(groups)

    def summary(self) -> str:
        """Plain words: per preset how many matched, what did not, and what may explain it."""
        lines = []
        for preset, rows in self.images.groupby("preset", sort=True):
            lines.append(_preset_sentence(preset, rows))
            for row in rows[rows["status"] != IDENTICAL].head(10).itertuples():
                lines.append("  " + _image_line(row))
            if (rows["status"] != IDENTICAL).sum() > 10:
                lines.append(f"  ... and {(rows['status'] != IDENTICAL).sum() - 10} more (write them all with -o)")
            lines += [f"  {note}" for note in _batch_notes(rows) + self.notes.get(preset, [])]
        lines += [f"{p}: no images in the study" for p, count in self.available.items() if not count]
        n, matched = len(self.images), int((self.images["status"] == IDENTICAL).sum())
        sampled = ", ".join(f"{len(rows)} of {self.available[p]} images of {p}"
                            for p, rows in self.images.groupby("preset", sort=True))
        how = "all images" if self.sample is None else f"up to {self.sample} per preset, sampling seed {self.seed}"
        lines.append(f"checked {sampled} ({how}) in {self.seconds:.1f} s")
        if n == 0:
            lines.append("no images to check")
        elif matched == n:
            lines.append("the sampled image regenerated bit for bit" if n == 1
                         else f"all {n} sampled images regenerated bit for bit")
        else:
            lines.append(f"{n - matched} of {n} sampled images did not match")
        return "\n".join(lines)

    def __str__(self) -> str:
        return format_table(self.table()) + "\n\n" + self.summary()

    def write(self, output: str | Path) -> Path:
        """One row per image as CSV (XLSX or parquet by the suffix), spreadsheet-safe."""
        from .tables import write_table

        return write_table(self.images[COLUMNS], output)


def verify_study(study: Study | str | Path, sample: int | None = 20, seed: int = 0,
                 presets: list[str] | str | None = None, device: str | None = None,
                 presets_file: str | Path | None = None, allow_custom_backends: bool = False,
                 progress: bool = True) -> VerifyReport:
    """Regenerate a sample of a study's images with its recorded settings and compare pixels.

    Parameters
    ----------
    study : the study folder (opened read-only) or an open :class:`Study`
    sample : images per preset, drawn at random but spread over the prompts; None: every image
    seed : seed of the sampling (the same seed draws the same images)
    presets : presets to check, a list or "a,b" (default: every preset with images)
    device : run on this device instead of the recorded one ("cpu", "cuda:1")
    presets_file : a presets YAML that says where the weights are on this machine; only settings
        that locate weights (``model``, ``cache_dir``, ``checkpoint_dir``, ``checkpoints``,
        ``local_files_only``, ...) may differ from what the study recorded
    allow_custom_backends : import a "package.module:Class" backend the study recorded
    progress : show a progress bar
    """
    from tqdm.auto import tqdm

    from .plan import as_list

    started = time.perf_counter()
    if sample is not None and (isinstance(sample, bool) or int(sample) < 1):
        raise ProbeError(f"sample is {sample}; sample at least 1 image per preset (or all of them: --all)")
    st, own = (study, False) if isinstance(study, Study) else (Study(study, readonly=True,
                                                                     require_current=False), True)
    try:
        recorded = _recorded_presets(st)
        manifest = _manifest(st)
        wanted = as_list(presets) or sorted(manifest["preset"].unique())
        unknown = [p for p in wanted if p not in recorded]
        if unknown:
            raise ProbeError(f"{st.path}: preset {', '.join(map(repr, unknown))} is not in this study; it has "
                             f"{', '.join(sorted(recorded)) or 'no presets yet'}. Pass --presets with those names.")
        overrides = _read_overrides(presets_file)
        settings = {p: _settings_for(st.path, p, recorded[p], overrides.get(p), presets_file, device,
                                     allow_custom_backends or _trusted(overrides, recorded[p]))
                    for p in wanted}
        available = {p: int((manifest["preset"] == p).sum()) for p in wanted}
        chosen = pd.concat([_sample(manifest[manifest["preset"] == p], sample, seed, p) for p in wanted]
                           + [manifest.iloc[:0]], ignore_index=True)
        rows, notes = [], {}
        with tqdm(total=len(chosen), unit="img", desc="verifying", disable=not progress) as bar:
            for preset in wanted:
                mine = chosen[chosen["preset"] == preset]
                if mine.empty:
                    continue
                bar.set_postfix_str(f"loading {preset}")
                found, notes[preset] = _verify_preset(st, preset, settings[preset], mine, bar)
                rows += found
        images = pd.DataFrame(rows, columns=COLUMNS + ["text", "study_seed", "recorded_device",
                                                       "recorded_dtype", "weights_match", "deterministic",
                                                       "generator_device"])
        images["max_diff"] = images["max_diff"].astype("Int64")
        return VerifyReport(st.path, images, available, None if sample is None else int(sample), int(seed),
                            notes, time.perf_counter() - started)
    finally:
        if own:
            st.close()


# --- what the study recorded --------------------------------------------------------------

def _recorded_presets(st: Study) -> dict[str, dict]:
    found = {}
    for row in st.db.execute("SELECT preset, backend, settings_json FROM presets"):
        try:
            settings = json.loads(row["settings_json"])
        except ValueError:
            raise StoreError(f"{st.path}: the recorded settings of preset {row['preset']!r} are not valid JSON; "
                             "the study database was changed outside medprobe") from None
        if not isinstance(settings, dict):
            raise StoreError(f"{st.path}: the recorded settings of preset {row['preset']!r} are not a mapping")
        settings.setdefault("backend", row["backend"])
        found[row["preset"]] = settings
    return found


def _manifest(st: Study) -> pd.DataFrame:
    """Every image, in a fixed order (so a sample does not depend on the order rows were written)."""
    return pd.read_sql_query(
        "SELECT prompt_id, text, preset, study_seed, image_index, seed, sha256, file, device, dtype, "
        "versions_json, digests_json, meta_json FROM images ORDER BY preset, prompt_id, study_seed, image_index",
        st.db)


def _read_overrides(presets_file) -> dict[str, dict]:
    if not presets_file:
        return {}
    if not Path(presets_file).is_file():
        raise PresetError(f"{presets_file}: no such presets file; check the path given to --presets-file")
    return read_preset_file(Path(presets_file))


def _trusted(overrides: dict, settings: dict) -> bool:
    """A custom backend is trusted when the user's own presets file names the same module (as in run)."""
    module = settings["backend"].partition(":")[0]
    return any(str(s["backend"]).partition(":")[0] == module for s in overrides.values())


def _same(a, b) -> bool:
    if a == b:
        return True
    try:
        return float(a) == float(b)  # steps: "8" and 8 make the same images
    except (TypeError, ValueError):
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _settings_for(study: Path, preset: str, recorded: dict, override: dict | None, presets_file,
                  device: str | None, allow_custom: bool) -> dict:
    """The recorded settings, with a presets file's weight locations and the --device applied."""
    settings = dict(recorded)
    backend = str(settings["backend"])
    if backend not in BACKENDS and not allow_custom:
        raise PresetError(
            f"{study}: preset {preset!r} was made with the custom backend {backend!r}, Python code that "
            "would be imported and run. A study folder is data and may come from someone else, so nothing "
            "was imported. If you trust this code, allow it with --allow-custom-backends (Python: "
            "allow_custom_backends=True), or name the same backend in your own --presets-file.")
    if override:
        # a setting the record leaves out had its default (e.g. `deterministic: false` is not recorded)
        defaults = _defaults(backend) if override.get("backend") == backend else {}
        changed = []
        for key, value in override.items():
            if key in WEIGHT_LOCATION_SETTINGS:
                continue
            was = recorded.get(key, defaults.get(key))
            if key == "backend" and not _same(value, backend):
                changed.append(f"backend ({backend!r} in the study, {value!r} in the file)")
            elif value is not None and not _same(value, was):
                changed.append(f"{key} ({was!r} in the study, {value!r} in the file)")
        if changed:
            hint = " To run on another device, use --device." if any(c.startswith(("device", "dtype"))
                                                                      for c in changed) else ""
            raise PresetError(
                f"{presets_file}: preset {preset!r} changes settings that make the images, not only where "
                f"the weights are: {'; '.join(changed)}. verify remakes images with the settings the study "
                f"recorded; a presets file may only say where the weights are on this machine "
                f"({', '.join(sorted(WEIGHT_LOCATION_SETTINGS - {'description', 'safety_checker_reason'}))}). "
                f"Remove the other settings from the file, or leave out --presets-file.{hint}")
        settings.update({k: v for k, v in override.items() if k in WEIGHT_LOCATION_SETTINGS})
    if device:
        settings["device"] = device
    return settings


def _defaults(backend: str) -> dict:
    """The settings a shipped backend fills in; nothing for a custom one (not imported for this)."""
    if backend not in BACKENDS:
        return {}
    cls = backend_class(backend)
    return {**cls.common, **cls.defaults}


# --- sampling --------------------------------------------------------------------------------

def _sample(rows: pd.DataFrame, n: int | None, seed: int, preset: str) -> pd.DataFrame:
    """``n`` images drawn at random, spread over the prompts: each prompt gives one before any gives two."""
    if n is None or n >= len(rows):
        return rows
    rng = random.Random(f"medprobe-verify:{int(seed)}:{preset}")  # str seeds hash the same in every process
    by_prompt = {prompt: list(group.index) for prompt, group in rows.groupby("prompt_id", sort=True)}
    for indices in by_prompt.values():
        rng.shuffle(indices)
    prompts = list(by_prompt)
    rng.shuffle(prompts)
    picked, depth = [], 0
    while len(picked) < n:
        picked += [by_prompt[p][depth] for p in prompts if depth < len(by_prompt[p])][: n - len(picked)]
        depth += 1
    return rows.loc[sorted(picked)]


# --- regeneration -------------------------------------------------------------------------

def _verify_preset(st: Study, preset: str, settings: dict, rows: pd.DataFrame, bar) -> tuple[list[dict], list[str]]:
    settings = {**settings, "device": _recorded_device(settings, rows)}
    try:
        generator = backend_class(settings["backend"])(preset, settings)
    except ProbeError as exc:
        raise ProbeError(f"preset {preset!r} with the settings recorded in {st.path}: {exc}. To check the "
                         "other presets, leave this one out of --presets; to run on another device, use "
                         "--device; to point at weights kept elsewhere on this machine, give a "
                         "--presets-file with model / cache_dir / checkpoint_dir for it.") from None
    try:
        here = generator.describe()
        found = []
        for row in rows.itertuples(index=False):
            bar.set_postfix_str(f"{preset}: {row.text[:40]}")
            found.append(_verify_image(st, generator, here, row))
            bar.update(1)
    finally:
        generator.close()
    return found, _environment_notes(rows, here, found)


def _recorded_device(settings: dict, rows: pd.DataFrame) -> str:
    """A preset's ``device: auto`` means the device the images were made on, where this machine has it.

    "auto" picks CUDA where there is one: a study made on a CPU would otherwise be remade on a GPU
    in float16 when verified there, and differ for that reason alone.
    """
    device = settings.get("device") or "auto"
    kinds = {_device_type(d) for d in rows["device"] if d}
    if device != "auto" or len(kinds) != 1:
        return device
    kind = kinds.pop()
    try:
        pick_device(kind)
    except ProbeError:
        return device  # not here: "auto" it is, and the report says the device differs
    return kind


def _verify_image(st: Study, generator, here: dict, row) -> dict:
    meta = _loads(row.meta_json)
    batch = meta.get("batch")
    recorded_digests = _loads(row.digests_json)
    weights_match = not recorded_digests or recorded_digests == here["digests"]
    result = {"prompt_id": row.prompt_id, "preset": row.preset, "image_index": int(row.image_index),
              "seed": int(row.seed), "file": row.file,
              "batch": int(batch) if isinstance(batch, (int, float)) and not isinstance(batch, bool) else UNKNOWN,
              "identical": False, "max_diff": None, "share_differing": None, "text": row.text,
              "study_seed": int(row.study_seed), "recorded_device": row.device, "recorded_dtype": row.dtype,
              "weights_match": weights_match, "deterministic": meta.get("deterministic"),
              "generator_device": meta.get("generator_device")}
    try:
        path = st.resolve(row.file)
        data = path.read_bytes()
    except (StoreError, OSError):
        return {**result, "status": MISSING}
    try:
        made = generator.generate([row.text], [int(row.seed)])[0].image
        with Image.open(path) as stored:
            max_diff, share = compare(stored, made)
    except Exception as exc:  # one image failing must not end the check of the others
        return {**result, "status": f"{FAILED}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
    identical = max_diff == 0
    if hashlib.sha256(data).hexdigest() != row.sha256:
        status = CHANGED
    elif not weights_match:
        status = WEIGHTS_DIFFER  # even with equal pixels: the record and the weights disagree
    else:
        status = IDENTICAL if identical else DIFFERS
    return {**result, "identical": identical, "max_diff": max_diff, "share_differing": share, "status": status}


def compare(stored: Image.Image, made: Image.Image) -> tuple[int, float]:
    """(largest absolute difference of any RGB value, 0-255; share of pixels differing anywhere)."""
    a = np.asarray(stored.convert("RGB"), dtype=np.int16)
    b = np.asarray(made.convert("RGB"), dtype=np.int16)
    if a.shape != b.shape:
        return 255, 1.0  # another size: nothing corresponds
    diff = np.abs(a - b)
    return int(diff.max(initial=0)), float((diff.max(axis=2) > 0).mean()) if diff.size else 0.0


def _loads(text) -> dict:
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# --- report ---------------------------------------------------------------------------------

def _batch_order(images: pd.DataFrame) -> pd.Series:
    """Batch sizes sort as numbers, "unknown" last."""
    return images["batch"].map(lambda b: float("inf") if b == UNKNOWN else float(b))


def _failed(status: pd.Series) -> int:
    return sum(str(s).startswith(FAILED) for s in status)


def _group_row(preset: str, batch, rows: pd.DataFrame) -> dict:
    status = rows["status"]
    differing = rows[rows["max_diff"].fillna(0) > 0]
    return {"preset": preset, "batch": batch, "n": len(rows), "identical": int((status == IDENTICAL).sum()),
            "differ": int(status.isin([DIFFERS, WEIGHTS_DIFFER]).sum()),  # in pixels or in weights
            "changed": int((status == CHANGED).sum()),
            "missing": int((status == MISSING).sum()), "failed": _failed(status),
            "max_diff": int(differing["max_diff"].max()) if len(differing) else None,
            "share_differing": float(differing["share_differing"].mean()) if len(differing) else None}


def format_table(table: pd.DataFrame) -> str:
    """The per preset x batch table as aligned text ("-" where nothing differed)."""
    width = max([len("preset")] + [len(str(p)) for p in table["preset"]])
    head = (f"{'preset':<{width}}  {'batch':>7}  {'n':>5}  {'identical':>9}  {'differ':>6}  {'changed':>7}  "
            f"{'missing':>7}  {'failed':>6}  {'max |diff|':>10}  {'pixels differing':>16}")
    lines = [head]
    for row in table.itertuples(index=False):
        if row.preset == "total":
            lines.append("-" * len(head))
        share = "-" if pd.isna(row.share_differing) else f"{100 * row.share_differing:.2f}%"
        diff = "-" if pd.isna(row.max_diff) else str(int(row.max_diff))
        lines.append(f"{row.preset:<{width}}  {row.batch!s:>7}  {row.n:>5}  {row.identical:>9}  {row.differ:>6}  "
                     f"{row.changed:>7}  {row.missing:>7}  {row.failed:>6}  {diff:>10}  {share:>16}")
    lines.append("(batch: images in the pipeline call that made each image; max |diff| of 255 and the mean "
                 "share of pixels differing, over the images that differ)")
    return "\n".join(lines)


def _preset_sentence(preset: str, rows: pd.DataFrame) -> str:
    status = rows["status"]
    text = f"{preset}: {int((status == IDENTICAL).sum())} of {len(rows)} regenerated bit for bit"
    differ = rows[rows["max_diff"].fillna(0).gt(0) & status.isin([DIFFERS, WEIGHTS_DIFFER]).to_numpy()]
    if len(differ):
        text += (f"; {len(differ)} differ{'s' if len(differ) == 1 else ''} (largest difference "
                 f"{int(differ['max_diff'].max())} of 255, {100 * differ['share_differing'].mean():.2f}% of "
                 "their pixels on average)")
    for label, count in ((f"{WEIGHTS_DIFFER} than those loaded here", (status == WEIGHTS_DIFFER).sum()),
                         (CHANGED, (status == CHANGED).sum()), (MISSING, (status == MISSING).sum()),
                         (FAILED, _failed(status))):
        if count:
            text += f"; {count} {label}"
    return text


def _image_line(row) -> str:
    where = (f"prompt {row.prompt_id} ({row.text[:60]!r}), preset {row.preset}, image {row.image_index}, "
             f"seed {row.seed}: {row.file}")
    if row.status == MISSING:
        return f"missing: {where} (the file is gone from the study folder; `python -m probes run` makes it again)"
    if row.status == CHANGED:
        return (f"file changed since it was recorded: {where} (its SHA-256 is not the manifest's; "
                f"max |diff| to the regenerated image {row.max_diff})")
    if row.status.startswith(FAILED):
        return f"{row.status}: {where}"
    return f"{row.status}: {where} (max |diff| {row.max_diff}, {100 * row.share_differing:.2f}% of pixels)"


def _batch_notes(rows: pd.DataFrame) -> list[str]:
    notes = []
    if (rows["status"] == IDENTICAL).all():
        return notes
    if (rows["batch"] == UNKNOWN).all():
        return ["the batch size of these images was not recorded (made by an older medprobe): drift by batch "
                "size cannot be told apart"]
    compared = rows[rows["status"].isin([IDENTICAL, DIFFERS])]
    differ = compared[compared["status"] == DIFFERS]
    batches = [b for b in differ["batch"]]
    if batches and all(b != UNKNOWN and b > 1 for b in batches):
        also = " while those made alone match" if any(b == 1 for b in compared["batch"]) else ""
        notes.append(f"every image that differs was made in a batch (of {', '.join(map(str, sorted(set(batches))))}) "
                     f"and is remade alone here{also}: batch-size drift is the likely cause (the device rounds a "
                     "batch differently; `batch_invariant: true` in a preset makes every image alone)")
    loose = sum(_device_type(d) != "cpu" and made is False
                for d, made in zip(differ["recorded_device"], differ["deterministic"], strict=True))
    if loose:
        notes.append(f"{loose} of the images that differ were made on a GPU without `deterministic: true`: "
                     "its kernels may round differently from run to run")
    gpu_noise = sum(_device_type(d) not in ("cpu", "mps") and (pd.isna(where) or not where)
                    for d, where in zip(differ["recorded_device"], differ["generator_device"], strict=True))
    if gpu_noise:
        notes.append(f"{gpu_noise} of the images that differ were made on a GPU by a medprobe that drew their "
                     "starting noise on the GPU (no generator_device recorded); medprobe now draws it on the CPU "
                     "for every device, so these cannot be remade: their seeds give other noise")
    return notes


def _device_type(device) -> str:
    """"cuda:0" and "cuda" are the same kind of device (which card is not recorded per image)."""
    return str(device).split(":")[0]


def _environment_notes(rows: pd.DataFrame, here: dict, found: list[dict]) -> list[str]:
    """What differs between where the images were made and here, which would explain drift."""
    notes = []
    recorded_devices = sorted({f"{_device_type(d)} {t}" for d, t in zip(rows["device"], rows["dtype"], strict=True)})
    here_device = f"{_device_type(here['device'])} {here['dtype']}"
    if recorded_devices != [here_device]:
        notes.append(f"made on {' / '.join(recorded_devices)}, regenerated here on {here_device} "
                     f"({here.get('device_name', '')}): differences are expected from that alone")
    versions: dict[str, set] = {}
    for text in rows["versions_json"]:
        for name, version in _loads(text).items():
            versions.setdefault(name, set()).add(str(version))
    mine = {k: str(v) for k, v in here["versions"].items()}
    changed = [f"{name} {' / '.join(sorted(v))} (here {mine.get(name, 'not installed')})"
               for name, v in sorted(versions.items()) if v != {mine.get(name)}]
    if changed:
        notes.append("library versions differ from those recorded: " + ", ".join(changed))
    weights = [r for r in found if not r["weights_match"]]
    if weights:
        recorded = set()
        for text in rows["digests_json"]:
            recorded |= {f"{k}={v[:12]}" for k, v in _loads(text).items()}
        mine = {f"{k}={v[:12]}" for k, v in here["digests"].items()}
        notes.append(f"the weights loaded here are not the ones {len(weights)} of these images were made with "
                     f"(recorded {', '.join(sorted(recorded - mine)) or '-'}; here {', '.join(sorted(mine - recorded)) or '-'}): "
                     "a match is not expected; point --presets-file at the original weights")
    return notes
