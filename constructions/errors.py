"""The errors a user can cause. The CLI turns each into one line on stderr and exit code 2."""


class PromptproofError(ValueError):
    """Bad input: a malformed spec, an impossible request, a corrupt file."""


class SpecError(PromptproofError):
    """A transformer spec with wrong shapes, non-finite values or inconsistent parts."""


class ConstructionError(PromptproofError):
    """A construction asked for something it cannot do (target too long, unknown character...)."""


class ExportError(PromptproofError):
    """A missing, corrupt or inconsistent export directory."""
