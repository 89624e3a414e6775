"""Deploy path: export a static graph, predict with Paddle Inference, index and search a gallery.

Nothing here imports paddle at package import time.
"""
