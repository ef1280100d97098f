"""The checker: binds checks to claim ids, runs them, and reports."""

import verify.checks  # noqa: F401  (registers every check)
