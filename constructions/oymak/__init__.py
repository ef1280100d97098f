"""Oymak et al. (ICML 2023), "On the Role of Attention in Prompt-tuning": our formalization.

Only the paper's abstract is available; the models and the data generator here are the
project's own formalization (notes/oymak.md), not the paper's definitions.

- ``models``: softmax prompt-attention (PA), softmax self-attention (SA, mean-pooled and
  first-token-query variants), linear prompt-attention (LPA) and the uniform-attention baseline,
  each as a batched numpy function and as a torch module, plus a small logistic trainer.
- ``data``: the contextual mixture generator (seeded, explicit knobs) and digit-image sequences
  (scikit-learn ``load_digits``) for the real-data experiment.
"""
