"""Imported by the fork server when ``preload_handlers`` is on.

It imports the handler modules named in ``$ROCHALLOR_PRELOAD_MODULES``. Never import
it anywhere else: importing it is what loads the handler code. Any
error is swallowed here on purpose: the fork server dies on anything but an
ImportError, which would leave the supervisor unable to start any worker.
Each worker imports the modules again and reports the real error.
"""

from __future__ import annotations

import importlib
import os

# Imported first: it sets up the metric value class before a handler module
# can create a metric (see multiproc.install_value_class).
from workflow_sdk.supervisor.worker.main import ENV_PRELOAD_MODULES

for _name in filter(None, os.environ.get(ENV_PRELOAD_MODULES, "").split(",")):
    try:
        importlib.import_module(_name)
    except BaseException:  # the workers import it again and report the error
        pass
