"""powersweep: learning-rate laws for language-model pretraining from muP proxy sweeps.

One import name holds the libraries, `powersweep.proxy_models` (one proxy run), `powersweep.sweeps` (specs,
planning, Ray Tune execution, the results store), `powersweep.analysis` (fits, plots, export) and
`powersweep.cluster` (multi-node Ray), and the entry points over them: the command line (`powersweep.cli`) and
the Ray job driver (`powersweep.job_driver`). Importing this package imports none of them.
"""

import os

# An installed wheel holds the libraries inside this package. A source tree keeps them in folders beside it
# (sweeps/, proxy_models/, analysis/, cluster/; pyproject.toml maps them here for a wheel): found there, they
# import under the same names, so a checkout on PYTHONPATH (a Ray job's working directory) runs its own code.
_SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_SOURCE_TREE, "pyproject.toml")) and os.path.isfile(
    os.path.join(_SOURCE_TREE, "sweeps", "__init__.py")
):
    __path__.append(_SOURCE_TREE)
