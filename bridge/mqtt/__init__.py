"""The bridge's own asyncio MQTT client (client.py) and its packet codec (codec.py), internal to the MQTT edge.

client.py still imports the codec and the broker configuration under their old module names:
the file is kept as it was while the MQTT-bounds work edits it, and these aliases go with the
next edit of its import lines (`bridge.mqtt.codec`, `core.broker`).
"""

import sys

from bridge.mqtt import codec
from core import broker

sys.modules.setdefault("bridge.mqtt_codec", codec)
sys.modules.setdefault("bridge.client", broker)
