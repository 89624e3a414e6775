"""Training, evaluation, extraction and inference engine."""
