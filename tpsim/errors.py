"""Errors that the command line turns into one line and exit code 2.

Every problem a user can fix (a malformed file, a missing field, an impossible
parallelism, a model that does not fit) is raised as :class:`InputError` with a
message that names the file, line or field and says what to do.  The CLI prints
``tpsim: error: <message>`` and exits with status 2, never a traceback.
"""


class InputError(Exception):
    """A user-fixable problem with the inputs; printed as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class InfeasibleError(InputError):
    """The configuration is well-formed but cannot run (e.g. the model does not fit).

    Campaigns record these runs as *infeasible* instead of failing
    (``tpsim run --record-infeasible``).  ``memory_needed`` (GB per GPU: weights, activations,
    reserve, one KV block, their sum and the budget), when memory is the reason, goes into the
    infeasible run's summary as numbers.
    """

    def __init__(self, message: str, memory_needed: dict | None = None):
        super().__init__(message)
        self.memory_needed = memory_needed


class NotSupportedError(InputError):
    """A feature of LLMServingSim (or of the inputs) that tpsim does not model."""
