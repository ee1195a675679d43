"""The relay role: republishes the registry's lifecycle events on MQTT (``fedoracle relay``), and
the blob server that holds model bytes by content hash for roles on other hosts (``fedoracle blobs``).
Nobody trusts either: devices check every message against the chain and every blob by its hash.
"""
