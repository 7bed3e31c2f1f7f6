"""diffax: continuous-time diffusion on discrete (CTMC) and continuous (SDE) data in JAX.

The math layer (`diffax.core`, `diffax.continuous`, `diffax.discrete`) is pure JAX and takes
models as plain callables. The training stack (`diffax.nn`, `diffax.data`, `diffax.training`) is
imported explicitly, so `import diffax` stays light.
"""

__version__ = "0.1.0"

from diffax import core  # noqa: E402,F401
from diffax.core.compilation import enable_compilation_cache  # noqa: E402,F401
