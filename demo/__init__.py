"""The demo machinery (``fedoracle demo``): it starts the roles and watches them, and is not a role itself.

Local services (anvil, broker, Redis), the roles as separate processes, progress, and the run's report.
"""
