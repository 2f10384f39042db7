"""Errors a user can cause on the rating side: what was wrong, where, and what to do."""

from probes.errors import ProbeError


class RatingError(ProbeError):
    """Bad rating input: unknown rater, score off the scale, no such panel."""


class ImportFormatError(RatingError):
    """A wide rating table that cannot be imported; nothing of it was written."""


class AnalysisError(RatingError):
    """Data that the requested analysis cannot be run on."""
