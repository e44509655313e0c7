"""Run one command and report its wall time and its own peak memory, from a small process.

`python benchmarks/launch.py LIMIT_S RESULT LOG -- COMMAND...` runs COMMAND in a session of
its own (output appended to LOG), kills it with everything it started after LIMIT_S seconds,
and writes to RESULT (JSON) its seconds, its exit code, whether it passed the limit, and its
peak resident memory in KiB (`wait4`'s `ru_maxrss`: the largest of the command and the
processes it waited for).

Why a launcher: Linux carries a process's peak memory across `exec` into `ru_maxrss`, so a
command started straight from a large process (a benchmark run that has loaded data, a
test runner) reports at least that process's peak. Started from this script, which imports
only the standard library, it reports its own. Run as a file, not as a module of the
`benchmarks` package, so that nothing else is imported.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    limit_s, result, log = float(argv[0]), argv[1], argv[2]
    command = argv[argv.index("--") + 1 :]
    started = time.perf_counter()
    with open(log, "ab") as out:
        child = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        timed_out = False
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > limit_s:
                os.killpg(child.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(child.pid, 0)
                timed_out = True
                break
            time.sleep(0.2)
        child.returncode = os.waitstatus_to_exitcode(status)
    figures = {
        "seconds": time.perf_counter() - started,
        "returncode": child.returncode,
        "timed_out": timed_out,
        "peak_kib": usage.ru_maxrss,
    }
    with open(result, "w") as out:
        json.dump(figures, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
