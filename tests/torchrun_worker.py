"""What torchrun runs in test_distributed.py: ``alexnet train`` with two test-only changes.

- The HTML report is not built: its figures take ~50 s of a 2-core machine per run and say
  nothing about data parallelism (test_report.py tests them).
- ``ALEXNET_TEST_KILL=RANK:EPOCH:STEP`` makes that rank SIGKILL itself before that optimiser step
  (epoch counted from 0), in the first attempt only (``TORCHELASTIC_RESTART_COUNT`` 0): a process
  dying the hardest way, at a point where rank 0 has certainly finished the previous epoch's
  checkpoint (the step's gradient all-reduce cannot start without it).

Usage: torchrun ... tests/torchrun_worker.py train --out DIR --name NAME ...
"""

import os
import signal
import sys
from pathlib import Path

import alexnet.report
from alexnet.cli import main
from alexnet.training import loop

alexnet.report.build_report = lambda directory, **_: Path(directory) / "report.html (not built in tests)"

kill = os.environ.get("ALEXNET_TEST_KILL")
if kill and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
    rank, epoch, step = (int(part) for part in kill.split(":"))
    original = loop._Trainer._optimizer_step

    def dying_step(self, batches):
        if (self.group.rank, self.epoch, self.step) == (rank, epoch, step):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, batches)

    loop._Trainer._optimizer_step = dying_step

sys.exit(main(sys.argv[1:]))
