"""Errors raised by the evaluation harness.

Every error names the offending field and says what to do, so a failed Dagster run or API call
is actionable from its message alone.
"""

from __future__ import annotations


class EvaluationInputError(ValueError):
    """An input to the evaluation harness is missing, mis-shaped or inconsistent.

    ``field`` names the argument or column that was wrong.
    """

    def __init__(self, field: str, problem: str, hint: str = "") -> None:
        self.field = field
        self.problem = problem
        self.hint = hint
        message = f"{field}: {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)
