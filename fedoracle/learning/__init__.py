"""Federated-learning core: data, partitions, models, local training, local DP, TFF evaluation and aggregation.

Importing this package is cheap: TensorFlow and TensorFlow Federated are imported only by the
modules that compute with them (``models``, ``training``, ``evaluation``, ``aggregation``,
``runtime``). ``data``, ``partition`` and ``privacy`` need only numpy, scipy, safetensors and
dp-accounting.
"""
