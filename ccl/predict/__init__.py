"""Predicting ICD codes, on top of the generation layer (:mod:`ccl.generation`):

- :mod:`~ccl.predict.serving`: the model a run predicts with (built for the run's data, trained,
  or served by vLLM, an adapter merged where vLLM cannot load it);
- :mod:`~ccl.predict.parser`: the answer -> evidence and codes; :mod:`~ccl.predict.scores`: code
  scores from token log-probabilities; :mod:`~ccl.predict.constrained`: only valid codes at code
  positions; :mod:`~ccl.predict.span_recode`: each evidence phrase coded with the span prompt.

The predict stage (:mod:`ccl.stages.predict`) and ``python -m ccl.cli.predict`` use them; their
settings are the ``infer`` config group.
"""
