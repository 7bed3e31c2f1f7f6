"""Forward processes: per-token independent CTMCs on t in [0, 1] (row-stochastic convention)."""

from diffax.core import Registry
from diffax.discrete.processes.base import Process
from diffax.discrete.processes.general import General, validate_rate_matrix
from diffax.discrete.processes.masked import Masked
from diffax.discrete.processes.uniform import Uniform

processes: Registry = Registry("process")
processes.register("masked")(Masked)
processes.register("uniform")(Uniform)
processes.register("general")(General)

__all__ = ["General", "Masked", "Process", "Uniform", "processes", "validate_rate_matrix"]
