"""The MQTT broker side: the embedded broker of the demo and the community's Mosquitto setup.

- ``embedded``: :class:`~peerwatt.broker.embedded.EmbeddedBroker`, amqtt in a thread (demo and
  unit tests only)
- ``access``: who may read and write what: one account per node and per meter, and the ACL
- ``mosquitto``: ``mosquitto.conf``, the ACL and password files, the systemd drop-in
- ``certs``: the community CA, broker and client certificates, the revocation list
- ``files``: writing private files and sharing them with the user Mosquitto runs as

Import the modules themselves: this package imports nothing, so ``peerwatt broker config`` does
not load amqtt.
"""
