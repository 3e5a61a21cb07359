"""Fast attention: exact, certified polynomial (AS1-AS4) and random-feature (PF1) backends,
low-rank attention-weight gradients (LD7, LD8) and the LD6 efficiency criterion per layer."""
