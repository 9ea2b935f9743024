"""The one exception type a user can cause: it carries a one-line message naming cause and fix."""


class UserError(Exception):
    """A failure the user can fix (bad config, unreachable meter, wrong key).

    The CLI prints ``str(error)`` as a single line, without a traceback, and exits with ``exit_code``.
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
