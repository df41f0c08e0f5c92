"""The small exception hierarchy that the CLI turns into one-line errors."""


class RocqcotError(Exception):
    """An error the user can act on; the CLI prints its message and exits with code 1."""


class DatabaseUnavailable(RocqcotError):
    """The database cannot be reached (bad `DATABASE_URL`, server down)."""


class UnknownStage(RocqcotError):
    """A stage name that no module registers."""


class UnknownTheorem(RocqcotError):
    """A fully qualified name with no row in `theorems`."""


class LeaseLost(RocqcotError):
    """A worker tried to finish a row it no longer holds (its lease expired, another took it)."""
