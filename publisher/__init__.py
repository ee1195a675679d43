"""The publisher role ("Bob"): deploys a registry, publishes and manages tasks.

A task carries its escrow, hidden test set, initial model, threshold and DP parameters
(``fedoracle deploy``, ``fedoracle task publish | cancel | refund``).
"""
