"""depthmask_utils: the helper package of the depthmask course.

One module per chapter; notebooks explain the idea and call these functions, and the CLI
(``python -m depthmask_utils``) calls the same functions.
"""

__version__ = "0.1.0"

from . import config, pipeline  # noqa: E402,F401  (light: profiles and the "make sure it exists" helpers)
