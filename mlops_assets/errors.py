"""The platform's one error vocabulary: what was wrong, with which field, and what to do.

Domain code raises these four types; each app and the CLI map them by *type*, in one place each
(never by matching message text):

=============== ============ ========= =======================================================
type            HTTP         CLI exit  meaning
=============== ============ ========= =======================================================
``InvalidInput`` 422          2         a value is missing, mis-shaped or inconsistent
``NotFound``     404          3         the named thing does not exist
``Conflict``     409          4         the request is valid but the state refuses it (a gate)
``Forbidden``    403          5         the caller's role may not do this
=============== ============ ========= =======================================================

Every error carries ``field`` (the argument, column or path part it is about) and ``reasons`` (one
or more sentences). ``FieldError(field, problem, hint)`` is the older spelling of ``InvalidInput``
that the evaluation and drift packages subclass.
"""

from __future__ import annotations

from collections.abc import Sequence


class PlatformError(Exception):
    """Base of the vocabulary: ``field`` names what was wrong, ``reasons`` say why."""

    http_status = 400
    exit_code = 1

    def __init__(self, field: str, reasons: str | Sequence[str], hint: str = "") -> None:
        self.field = field
        self.reasons = [reasons] if isinstance(reasons, str) else list(reasons)
        self.hint = hint
        super().__init__(f"{field}: {'; '.join(self.reasons)}" + (f" ({hint})" if hint else ""))

    @property
    def problem(self) -> str:
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"field": self.field, "reasons": self.reasons}
        if self.hint:
            body["hint"] = self.hint
        return body


class InvalidInput(PlatformError, ValueError):
    """A value is missing, mis-shaped or inconsistent (HTTP 422, CLI exit 2)."""

    http_status = 422
    exit_code = 2


class NotFound(PlatformError, LookupError):
    """The named model, version, template, request or file does not exist (HTTP 404, CLI exit 3)."""

    http_status = 404
    exit_code = 3


class Conflict(PlatformError):
    """Valid, but the current state refuses it: a gate, a duplicate, a stale version (409, exit 4)."""

    http_status = 409
    exit_code = 4


class Forbidden(PlatformError, PermissionError):
    """The caller's role or identity may not do this (HTTP 403, CLI exit 5)."""

    http_status = 403
    exit_code = 5


class MessageError(PlatformError):
    """Mixin for an error raised with one whole sentence (``reasons == [message]``) that already names what
    it is about: ``str()`` stays the message itself, without the ``field: `` prefix. A domain family whose
    members are different vocabulary types puts it first, e.g. ``class PromptNotFound(PromptRegistryError,
    NotFound)`` with ``class PromptRegistryError(MessageError)``."""

    def __str__(self) -> str:
        return "; ".join(self.reasons)


class MessageInput(MessageError, InvalidInput):
    """``InvalidInput`` raised with one message, as the domain's older error classes are: ``field`` is the
    class's ``subject`` unless given, and ``str()`` stays the message itself."""

    subject = "input"

    def __init__(self, message: str = "", field: str | None = None) -> None:
        super().__init__(field or self.subject, message)


class FieldError(InvalidInput):
    """``InvalidInput`` with one problem and a hint (the evaluation and drift input errors)."""

    def __init__(self, field: str, problem: str, hint: str = "") -> None:
        super().__init__(field, problem, hint)
