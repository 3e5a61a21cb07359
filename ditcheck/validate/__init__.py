"""Validate third-party attention and DiT code against ditcheck's reference (``ditcheck validate``).

``attention(fn, ...)`` and ``dit(model, ...)`` return a :class:`Report`, ``scheduler(target, ...)`` a
:class:`SchedulerReport` (a diffusers scheduler's own step loop driven by exact scores); the command
line is ``ditcheck validate attention|dit|scheduler MODULE:ATTR`` (ditcheck/validate/cli.py), the pytest plugin
``pytest --ditcheck-attention MODULE:ATTR`` (ditcheck/plugin.py).
"""

from ._attention import attention
from ditcheck.loader import LoadError, load as load_target, load_function, load_module

from ._target import TargetError, TargetTimeoutError
from .models import dit, diffusers_state_dict, params_from_diffusers, recognise
from .report import Check, Report
from ._scheduler import SchedulerReport, scheduler

__all__ = ["attention", "dit", "scheduler", "Report", "Check", "SchedulerReport", "TargetError", "TargetTimeoutError",
           "LoadError", "load_target", "load_function", "load_module", "recognise", "diffusers_state_dict", "params_from_diffusers"]
