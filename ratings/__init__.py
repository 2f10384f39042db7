"""medprobe rating side: the rating scale, blinded rating sessions, the rating app, import/export and
simulated raters; the statistics are the subpackage :mod:`ratings.analysis`."""


def __getattr__(name):
    # RatingApp pulls in ipywidgets; importing ratings for analysis alone should not
    if name == "RatingApp":
        from .app import RatingApp

        return RatingApp
    raise AttributeError(name)


__all__ = ["RatingApp"]
