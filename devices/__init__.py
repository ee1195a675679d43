"""The device role: MQTT-connected clients, alone or in fleets.

A client trains locally with differential privacy, submits its updates on-chain and claims its
rewards; a fleet runs honest, malicious and unreliable devices for the experiments.
"""
