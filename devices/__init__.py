"""The device role: MQTT-connected clients that train locally with differential privacy,
submit their updates on-chain and claim their rewards; fleets of honest, malicious and
unreliable devices for experiments.
"""
