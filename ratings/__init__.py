"""medprobe rating side: blinded rating sessions, the rating app, import/export and analysis."""


def __getattr__(name):
    # RatingApp pulls in ipywidgets; importing ratings for analysis alone should not
    if name == "RatingApp":
        from .app import RatingApp

        return RatingApp
    raise AttributeError(name)


__all__ = ["RatingApp"]
