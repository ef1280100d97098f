"""Importing this package registers every check with ``verify.registry``."""

from verify.checks import (  # noqa: F401
    oymak,
    petrov_appC,
    petrov_forgetting,
    petrov_sec3,
    petrov_sec4,
    petrov_sec4_finetune,
    petrov_sec4_real,
    petrov_sec4_rotation,
    petrov_sec5,
    petrov_sec5_elicit,
    petrov_sec5_skills,
)
