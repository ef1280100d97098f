"""Optimisation searches that look for a counterexample to a claim: a search finding none is
evidence, never proof (the certificates in verify/certificates/ are the proofs)."""
