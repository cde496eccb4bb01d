"""Fine-tuning a text encoder with a classification head.

The torch-free parts (``dataset``, ``split``, ``bucketing``, ``metrics``) are plain functions
a test drives without a model; ``job`` is the :class:`~open_autoglm.ml.training.job.TrainJob`
the shared training facility runs, and ``export`` writes the trained model directory.
"""
