"""Privacy of the people in the training log.

- :mod:`nextaction.privacy.dp`: user-level differentially private training (DP-SGD on Opacus's accountant,
  noise calibration and clipping optimiser; per-user gradients with ``torch.func``).
- :mod:`nextaction.privacy.audit`: membership inference on users — does the model give away who it was
  trained on?
"""
