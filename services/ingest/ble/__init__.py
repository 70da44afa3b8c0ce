"""BLE ingest: pure GATT decoders, declarative device profiles and a bleak device manager.

The decoders (:mod:`.hrs`, :mod:`.profiles`) are pure: bytes in, typed samples out. Only
:mod:`.manager` and :mod:`.cli` talk to Bluetooth (through ``bleak``) and MQTT.
"""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
