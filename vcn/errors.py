"""The one exception type for errors a user can cause; its message names the input and the fix."""


class VcnError(Exception):
    """A bad input, missing model, unreadable video or bad config. The CLI prints it without a traceback."""
