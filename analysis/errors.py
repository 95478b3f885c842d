"""The one exception type of the analysis package."""

from __future__ import annotations


class AnalysisError(ValueError):
    """A mistake the user can fix: the message names the field, shows the value and says the fix.

    The command line turns it into one line on stderr and exit code 2.
    """
