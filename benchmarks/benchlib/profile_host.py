"""``python -m benchlib.profile_host run -c FILE THREADS_FILE``: ``sv_host`` that names its threads.

Runs ``benchlib.sv_host`` (the supervisor with the stamping client; with
``BENCH_PROFILE`` set, its main thread under ``cProfile``) and, from a
daemon thread, rewrites ``THREADS_FILE`` every half second (every
``BENCH_THREAD_NAMES_EVERY`` seconds if set) with the time of writing and
the native id and name of every thread of the process, so
``benchmarks/parent_profile.py`` can tell the poller, the reporters and the main
loop apart in the CPU times the kernel keeps per thread.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from benchlib import sv_host


def _name_threads(path: str) -> None:
    every = float(os.environ.get("BENCH_THREAD_NAMES_EVERY", "0.5"))
    while True:
        # The time is taken before the threads are listed: a reader that
        # waits for a file written after time T sees every thread alive at T.
        written_at = time.time()
        names = {str(t.native_id): t.name for t in threading.enumerate()}
        tmp = f"{path}.tmp"
        with open(tmp, "w") as fh:
            json.dump({"written_at": written_at, "names": names}, fh)
        os.replace(tmp, path)
        time.sleep(every)


def main() -> int:
    *argv, threads_file = sys.argv[1:]
    threading.Thread(
        target=_name_threads, args=(threads_file,), name="profile-host", daemon=True
    ).start()
    return sv_host.main(argv)


if __name__ == "__main__":
    sys.exit(main())
