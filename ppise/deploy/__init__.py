"""Deploy path: export a static graph, predict with Paddle Inference, index and search a gallery.

Modules, one idea each: ``export`` (static graph + ``inference.yml``), ``model_info``
(``inference.yml`` and model files), ``config`` (deploy YAML + ``-o``), ``images``
(inputs, ids, decoding), ``preprocess`` (batched eval transforms), ``predictor`` (Paddle
Inference), ``gallery`` (faiss index + id map), ``search`` (ranking and metrics),
``visualize`` (PNG of ranked hits), ``pipeline`` (the flows the deploy scripts run).
Nothing here imports paddle at package import time.
"""
