"""Importing this package registers every check with ``verify.registry``."""

from verify.checks import petrov_sec3, petrov_sec4, petrov_sec4_finetune  # noqa: F401
