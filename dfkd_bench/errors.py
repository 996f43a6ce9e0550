"""User-facing errors: one line that says what is wrong and what the choices are."""


class UserError(ValueError):
    """Bad input from a user; the CLI prints its message on one line and exits with status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
