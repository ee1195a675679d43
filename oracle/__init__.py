"""The oracle role: follows submissions on-chain and scores them on the hidden test set with TFF.

It posts verdicts, aggregates the accepted updates and drives the task's rounds to the end.
"""
