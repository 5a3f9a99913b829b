"""The commands, one module each (``python -m ccl.cli.NAME``); each composes its config, runs the
library below it and prints a problem you can fix as one line (:mod:`ccl.cli.errors`).

- :mod:`~ccl.cli.predict`: code a new note with a trained run; :mod:`~ccl.cli.review`: the review
  page of a run's predictions.
- :mod:`~ccl.cli.spans`: build one span tier into the run cache, with its coverage;
  :mod:`~ccl.cli.mine`: silver mining as a Hydra app, sharded over workers.
- :mod:`~ccl.cli.stats`: what a document source holds; :mod:`~ccl.cli.audit`: the contamination
  audit of a run's data.

The headline command stays ``python -m ccl.run`` (:mod:`ccl.run`, Hydra's app over ``conf/``);
``python -m ccl.report`` and ``python -m ccl.bench`` (with ``ccl.bench.gpu_check``, the GPU path
end to end) are their packages' entry points.
Nothing is imported here, so each command loads only what it needs.
"""
