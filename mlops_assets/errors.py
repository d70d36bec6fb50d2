"""The platform's input error: names the field, the problem and what to do.

Domain packages subclass it (``EvaluationInputError``, ``DriftInputError``), so a failed Dagster run
or API call is actionable from its message alone and the HTTP layer can map one type to a 422.
"""

from __future__ import annotations


class FieldError(ValueError):
    """An input is missing, mis-shaped or inconsistent; ``field`` names the argument or column."""

    def __init__(self, field: str, problem: str, hint: str = "") -> None:
        self.field = field
        self.problem = problem
        self.hint = hint
        super().__init__(f"{field}: {problem}" + (f" ({hint})" if hint else ""))
