"""The oracle role: follows submissions on-chain, scores them on the hidden test set with TFF,
posts verdicts, aggregates the accepted updates and drives the task's rounds to the end.
"""
