"""The relay role: the chain→MQTT relay (``fedoracle relay``) and the blob server (``fedoracle blobs``).

The relay republishes the registry's lifecycle events on MQTT; the blob server holds model bytes by
content hash for roles on other hosts. Nobody trusts either: devices check every message against the
chain and every blob by its hash.
"""
