"""Checks of Oymak et al. (ICML 2023), "On the Role of Attention in Prompt-tuning", under OUR
formalization (notes/oymak.md). One module per claim (c1 .. c4), the shared statistics and decision
rules in ``stats``, the figures in ``figures``; importing this package registers the four checks."""

from verify.checks.oymak import c1, c2, c3, c4  # noqa: F401
