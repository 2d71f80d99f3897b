"""The bridge's own asyncio MQTT client (client.py) and its packet codec (codec.py), internal to the MQTT edge.

client.py still imports the codec under its old module name: the file is kept as it was while the
MQTT-bounds work edits it, and this alias goes with the next edit of its import lines.
"""

import sys

from bridge.mqtt import codec

sys.modules.setdefault("bridge.mqtt_codec", codec)
