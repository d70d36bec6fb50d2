"""Errors raised by the evaluation harness.

Every error names the offending field and says what to do, so a failed Dagster run or API call
is actionable from its message alone.
"""

from __future__ import annotations

from mlops_assets.errors import FieldError


class EvaluationInputError(FieldError):
    """An input to the evaluation harness is missing, mis-shaped or inconsistent.

    ``field`` names the argument or column that was wrong.
    """
