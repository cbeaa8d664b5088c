"""Imported by the fork server when ``preload_handlers`` is on.

It imports the handler modules named in ``$ROCHALLOR_PRELOAD_MODULES`` (and
the hooks module), then freezes the garbage collector's view of everything
loaded (``gc.freeze``). Never import it anywhere else: importing it is what
loads the handler code. Any error is swallowed here on purpose: the fork
server dies on anything but an ImportError, which would leave the
supervisor unable to start any worker. Each worker imports the modules
again and reports the real error.

Why freeze: every object the preload made (a model's arrays' headers, its
trees, the modules' dicts) lives in pages that the workers share with the
fork server copy-on-write. The collector of each worker would otherwise
walk those objects and write to their headers (the GC links live in every
object's header), and each page it writes becomes a private copy in that
worker: the sharing melts away over the first collections. Frozen objects
are moved to a permanent generation that the collector never visits.
"""

from __future__ import annotations

import gc
import importlib
import os

# Imported first: it sets up the metric value class before a handler module
# can create a metric (see multiproc.install_value_class).
from workflow_sdk.supervisor.worker.main import ENV_PRELOAD_MODULES
from workflow_sdk.supervisor.worker.process_setup import release_free_heap

for _name in filter(None, os.environ.get(ENV_PRELOAD_MODULES, "").split(",")):
    try:
        importlib.import_module(_name)
    except BaseException:  # the workers import it again and report the error
        pass

# Collect the garbage of the imports first: frozen garbage would never go.
gc.collect()
gc.freeze()

# The heap the imports freed goes back to the system before any worker is
# forked (see process_setup.release_free_heap).
release_free_heap()
