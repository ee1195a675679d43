"""Reproducing the paper's Fig. 4 and Fig. 5, and experiments beyond it.

Core subpackage: it imports neither ``oracle`` nor ``devices``. The fast path
(:mod:`~fedoracle.experiments.simulate`) runs a task in-process through
:mod:`fedoracle.learning.rounds`, the functions the protocol's roles compute with; the protocol
path (:mod:`~fedoracle.experiments.protocol`) runs the same config through :class:`fedoracle.demo.Demo`
(chain, relay, oracle and fleet processes) and compares the two.
"""
