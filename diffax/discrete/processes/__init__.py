"""Forward processes: per-token independent CTMCs on t in [0, 1] (row-stochastic convention).

`PROCESSES` maps a config name to a process class ("masked", "uniform", "general"); any object
implementing the `Process` Protocol works with the losses and samplers its math allows.
"""

from diffax.core import Registry
from diffax.discrete.processes.base import PREDICTIONS, Process, prior_kl_from_marginal
from diffax.discrete.processes.general import General
from diffax.discrete.processes.masked import Masked
from diffax.discrete.processes.spectrum import validate_rate_matrix
from diffax.discrete.processes.uniform import Uniform

PROCESSES: Registry = Registry("process")
PROCESSES.register("masked")(Masked)
PROCESSES.register("uniform")(Uniform)
PROCESSES.register("general")(General)
processes = PROCESSES  # the lower-case name from before the registries were renamed

__all__ = [
    "PREDICTIONS",
    "PROCESSES",
    "General",
    "Masked",
    "Process",
    "Uniform",
    "prior_kl_from_marginal",
    "processes",
    "validate_rate_matrix",
]
