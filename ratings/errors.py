"""Every error of the rating side, under one root: :class:`RatingError`.

A :class:`RatingError` is a mistake a user can make or meet on the clinicians' side (an unknown
rater, a score off the scale, a file that cannot be imported, a study that cannot be written):
its message says what was wrong, where, and what to do, and ``python -m ratings`` prints it as
one line. It is not a :class:`probes.errors.ProbeError`: the generation side and the rating side
each have their own root, so code that wants both catches ``(ProbeError, RatingError)``.

:class:`PanelUnavailable` is no user's mistake: it is how the rating app learns that one panel's
image cannot be shown, so that it can skip the panel and say so; it stays an ``Exception``.
"""

from __future__ import annotations

__all__ = [
    "AnalysisError",
    "ImportFormatError",
    "PanelUnavailable",
    "RatingError",
    "ReadOnlyStudyError",
    "StaleAnswerError",
    "TamperError",
]


class RatingError(Exception):
    """Bad rating input: unknown rater, score off the scale, no such panel."""


class ImportFormatError(RatingError):
    """A wide rating table that cannot be imported; nothing of it was written."""


class AnalysisError(RatingError):
    """Data that the requested analysis cannot be run on."""


class StaleAnswerError(RatingError):
    """An answer based on an older state of its panel: the same rater answered it elsewhere."""


class TamperError(RatingError):
    """Rating rows changed outside medprobe: a rater's hash chain is broken."""

    def __init__(self, database: str, broken: dict[str, int], what: str = "ratings", row: str = "rating_id"):
        self.broken = dict(broken)  # rater -> rating_id (answer_id) of the first row that fails
        where = "; ".join(f"rater {rater!r} from {row} {rating_id}" for rater, rating_id in broken.items())
        super().__init__(
            f"{database}: the {what} fail the tamper check ({where}): that row, or one before it, was changed, "
            "added or removed outside medprobe, so these ratings from that row on cannot be trusted. Restore the "
            "study folder from its backup (keep the damaged copy for the study's records) and try again.")


class ReadOnlyStudyError(RatingError):
    """A study folder (or its database) this process cannot write to."""


class PanelUnavailable(Exception):  # control flow inside the app, not an error a user sees
    """One of a panel's images cannot be shown: missing, unreadable, changed or undecodable."""

    def __init__(self, image_token: str, cause: BaseException):
        self.image_token, self.cause = image_token, cause
        super().__init__(f"image {image_token}: {type(cause).__name__}: {cause}")
