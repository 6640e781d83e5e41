"""Video input: probing and batched decoding (decord + PyAV), and shot detection (PySceneDetect)."""
