"""The demo machinery (``fedoracle demo``): local services (anvil, broker, Redis), the roles as
separate processes, progress, and the run's report. Not a role: it only starts and watches them.
"""
