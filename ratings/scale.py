"""The rating scale: the questions raters answer, their range and anchor labels.

:data:`DEFAULT_SCALE` is the published study's scale (style and content, 0-4, with the same
five anchor labels); a study may bring its own (``python -m ratings build --scale FILE``),
checked by :func:`check_scale`. The session stores the scale in the study; the analysis reads
it (figure labels, the range of scores) from here, without importing the rating app.
"""

from __future__ import annotations

import re
import reprlib

from .errors import RatingError

ANCHORS = [[0, "completely wrong"], [1, "hints of correct"], [2, "clear signs of correct"],
           [3, "mainly correct"], [4, "perfectly correct"]]
DEFAULT_SCALE = {
    "dimensions": [
        {"id": "style", "question": "Rate the best style in the four images", "min": 0, "max": 4,
         "anchors": ANCHORS},
        {"id": "content", "question": "Rate the best content in the four images", "min": 0, "max": 4,
         "anchors": ANCHORS},
    ],
    "nonsensical": "The prompt is nonsensical",
    "comment": "Comment (optional)",
}

DIMENSION_ID = re.compile(r"[a-z][a-z0-9_]*")  # lower case: the wide table's columns are Style_<rater>
SCALE_TEXTS = ("nonsensical", "comment")


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxdict = 6


def _short(value) -> str:
    """repr() cut to a readable length: a scale file may hold anything, of any size."""
    return _SHORT.repr(value)


def check_scale(scale, source: str = "scale") -> dict:
    """The scale with defaults filled in; :class:`RatingError` naming ``source``, the dimension
    and the key for anything a rating could not be stored against."""
    if not isinstance(scale, dict):
        raise RatingError(f"{source}: a scale is a mapping with a `dimensions` list, not "
                          f"{type(scale).__name__}; see DEFAULT_SCALE in ratings/scale.py for an example")
    dims = scale.get("dimensions")
    if not isinstance(dims, list) or not dims:
        raise RatingError(f"{source}: needs a non-empty `dimensions` list (one entry per question, "
                          "e.g. style and content)")
    seen = set()
    for i, dim in enumerate(dims):
        where = f"{source}: dimensions[{i}]"
        if not isinstance(dim, dict):
            raise RatingError(f"{where} is {_short(dim)}; each dimension is a mapping with id, question, min, "
                              "max and anchors")
        missing = [k for k in ("id", "question", "min", "max", "anchors") if k not in dim]
        if missing:
            raise RatingError(f"{where} misses {', '.join(missing)}")
        ident = dim["id"]
        if not isinstance(ident, str) or not DIMENSION_ID.fullmatch(ident):
            raise RatingError(f"{where}: id {_short(ident)} must be one lower-case word of ASCII letters, digits "
                              "or _ (e.g. style); it names the export's columns")
        if ident in seen:
            raise RatingError(f"{where}: id {_short(ident)} is used twice; give each dimension its own id")
        seen.add(ident)
        where = f"{source}: dimension {_short(ident)}"
        if not isinstance(dim["question"], str) or not dim["question"].strip():
            raise RatingError(f"{where}: `question` must be the text raters read, not {_short(dim['question'])}")
        for key in ("min", "max"):
            value = dim[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise RatingError(f"{where}: `{key}` is {_short(value)} ({type(value).__name__}); it must be a "
                                  f"whole number written without quotes, e.g. `{key}: {0 if key == 'min' else 4}`")
        if dim["min"] >= dim["max"]:
            raise RatingError(f"{where}: `min` ({dim['min']}) must be below `max` ({dim['max']})")
        anchors = dim["anchors"]
        if not isinstance(anchors, list):
            raise RatingError(f"{where}: `anchors` must be a list of [value, label] pairs, not {_short(anchors)}")
        for j, anchor in enumerate(anchors):
            if not (isinstance(anchor, (list, tuple)) and len(anchor) == 2 and isinstance(anchor[0], int)
                    and not isinstance(anchor[0], bool) and isinstance(anchor[1], str)):
                raise RatingError(f"{where}: anchors[{j}] is {_short(anchor)}; each anchor is a [value, label] "
                                  "pair, e.g. [0, completely wrong]")
        if [a[0] for a in anchors] != list(range(dim["min"], dim["max"] + 1)):
            raise RatingError(f"{where}: needs one anchor label for each value {dim['min']}..{dim['max']}, "
                              "in order")
    for key in SCALE_TEXTS:
        if key in scale and not isinstance(scale[key], str):
            raise RatingError(f"{source}: `{key}` is the label raters read, a text, not {_short(scale[key])}")
    return {**DEFAULT_SCALE, **scale}


__all__ = ["ANCHORS", "DEFAULT_SCALE", "DIMENSION_ID", "SCALE_TEXTS", "check_scale"]
