"""The bridge's own asyncio MQTT client (client.py) and its packet codec (codec.py), internal to the MQTT edge."""
