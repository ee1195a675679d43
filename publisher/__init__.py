"""The publisher role ("Bob"): deploys a registry, publishes a task (escrow, hidden test set,
initial model, threshold, DP parameters) and manages it (``fedoracle deploy``, ``fedoracle task``).
"""
