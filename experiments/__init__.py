"""Reproducing the paper's Fig. 4 and Fig. 5, and experiments beyond it.

The research harness (not a role, not in the shared core). The fast path
(:mod:`~experiments.simulate`) runs a task in-process through
:mod:`fedoracle.learning.rounds`, the functions the protocol's roles compute with; the protocol
path (:mod:`~experiments.protocol`) runs the same config through :class:`demo.run.Demo`
(chain, relay, oracle and fleet processes) and compares the two.
"""
