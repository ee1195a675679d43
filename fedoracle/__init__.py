"""fedoracle: the shared protocol core of the secure federated-learning marketplace.

What both roles (``oracle/`` and ``devices/``) use lives here: settings, the model codec and
content hashes, the content-addressed blob store, test-set commitments, MQTT topics and the typed
contract client. The core imports neither role, and nothing here imports TensorFlow at module
level (``fedoracle.learning`` is the only subpackage that computes with it).
"""

__version__ = "0.1.0"
