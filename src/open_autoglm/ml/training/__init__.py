"""One training facility for every training task type: distribution, precision, checkpoints.

A task type describes *what* to train as a :class:`~open_autoglm.ml.training.job.TrainJob`;
:func:`~open_autoglm.ml.training.fit.fit` decides *how* (one process, DDP or FSDP over gloo,
fp32 or bf16 autocast), and :func:`~open_autoglm.ml.training.task.run_training` connects it
to a task (progress events, checkpoints as artifacts, resume after a killed worker).
"""
