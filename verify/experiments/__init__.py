"""Training experiments of Petrov et al. (Sec. 5-6, appendices): a small GPT, digit tasks, training
with checkpoints, run records keyed by the hash of their producing code and config, scales."""
