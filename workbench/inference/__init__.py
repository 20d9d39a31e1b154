"""Inference stage: the flip-TTA forward (tta), cleanup and probabilities -> labels (postprocess),
a model file as a function from images to masks (predictor), the batch pipeline and the file plan of
``inference.py`` (batch_pipeline, jobs) and its command line (cli)."""
