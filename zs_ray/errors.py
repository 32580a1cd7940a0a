"""The one exception type zs-ray raises for problems the user can fix.

The CLI and the job entrypoint print a ``ZsRayError`` as a single line
(``zs-ray: error: <message>``) and exit with status 2, without a traceback.
Anything else that escapes is a bug and keeps its traceback.
"""


class ZsRayError(Exception):
    """A user-facing error: bad input, a missing model or dataset, a refused setting."""
