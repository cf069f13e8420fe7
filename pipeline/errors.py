"""Errors that end one episode (recorded on its row) rather than the run."""


class EpisodeError(ValueError):
    """An episode cannot be scored; the message says what, where and why."""
