"""Distillation of the k-fold teacher ensemble into one student (``python distill.py``), one module per step:

- :mod:`.teachers`       find the teacher model files, rebuild their OOF predictions when missing, publish them;
- :mod:`.ensemble`       OOF report of teachers, families and ensembles; which families may teach;
- :mod:`.soft_labels`    the ensemble's flip-TTA probabilities on the student's images, cached as float16 logs;
- :mod:`.student`        the KD loss hook, one student run, and finding/training its hard-label twin;
- :mod:`.postprocessing` flip TTA, exclusive part groups and per-class cleanup chosen on OOF predictions;
- :mod:`.retune`         the same choice made again for an existing model file (`distill.py --postprocess`);
- :mod:`.pipeline`       the whole ``distill.py`` run.
"""
