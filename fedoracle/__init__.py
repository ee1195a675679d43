"""fedoracle: the shared protocol core of the secure federated-learning marketplace.

What both roles (``oracle/`` and ``devices/``) use lives here: settings, the model codec and
content hashes, the content-addressed blob store, test-set commitments, MQTT topics and the typed
contract client. The core imports neither role, and nothing here imports TensorFlow at module
level (``fedoracle.learning`` is the only subpackage that computes with it).

Importing the package sets TensorFlow's C++ log level (``TF_CPP_MIN_LOG_LEVEL``) before anything can
import TensorFlow, in every process that runs our code (the CLI, the roles it spawns, the tests):
TF 2.14 logs three "Unable to register cuDNN/cuFFT/cuBLAS factory" errors at import on every
machine, GPU or not, and only level 3 hides them. Set the variable yourself (e.g. to 0) to see
TensorFlow's native logs again; the children (TFF's ``worker_binary``) inherit it.
"""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
