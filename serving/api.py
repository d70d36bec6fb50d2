"""The management API's previous module name, ``uvicorn serving.api:app``: kept for one release.

Start it as ``uvicorn serving.management.main:app`` (or ``mlops serve``); this name goes in the next
release.
"""

import warnings

from serving.management.main import app

warnings.warn("serving.api:app is now serving.management.main:app; the old name goes in the next release",
              FutureWarning, stacklevel=2)

__all__ = ["app"]
