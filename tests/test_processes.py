"""Commands that start processes (``experiment --jobs``, ``train --nproc``) stop as one: the real
signal goes to the real process tree, and every process of it must be gone within a bound, with the
exit status 128 + the signal and the runs resumable. Ctrl-C is sent as a terminal sends it, to the
command's whole process group; SIGTERM and SIGKILL as a scheduler or ``kill`` send them, to its pid.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alexnet.cli import main
from alexnet.processes import ForwardedSignals
from alexnet.runs import RunFolder
from alexnet.training import TrainConfig, train
from fashion_small import fashion_small_test

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
needs_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree in /proc")
CLI = [sys.executable, "-m", "alexnet"]
GONE_WITHIN = 90  # seconds for every process to save and end after the signal (a step, a checkpoint, exits)


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def parents() -> dict[int, int]:
    """pid -> parent pid of every process now."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry.name)] = int(fields[1])
    return table


def descendants(root: int) -> set[int]:
    table = parents()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in table.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's wait is missing


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.2)


def stop_and_check(command: subprocess.Popen, signum: int, *, group: bool, expected: int | None) -> str:
    """Send ``signum`` (to the process group, as a terminal does, or to the pid), then require the
    command and every process it had started to be gone within ``GONE_WITHIN`` seconds."""
    tree = descendants(command.pid)
    assert tree, "the command had started no process"
    start = time.monotonic()
    if group:
        os.killpg(command.pid, signum)
    else:
        os.kill(command.pid, signum)
    try:
        output, _ = command.communicate(timeout=GONE_WITHIN)
    except subprocess.TimeoutExpired:
        command.kill()
        for pid in tree:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"{command.args} did not end within {GONE_WITHIN} s of {signal.Signals(signum).name}")
    left = GONE_WITHIN - (time.monotonic() - start)
    try:
        wait_for(lambda: not any(alive(pid) for pid in tree), max(left, 5), "every process of the tree ended")
    finally:
        for pid in tree:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    if expected is not None:
        assert command.returncode == expected, output
    return output


def start(arguments: list[str], temporary: Path | None = None) -> subprocess.Popen:
    """The command started in its own session (the test's process group is pytest's, and a Ctrl-C goes
    to the command's group); ``temporary``: its temporary folder (``TMPDIR``)."""
    return subprocess.Popen([*CLI, *arguments], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**env(), **({"TMPDIR": str(temporary)} if temporary else {})},
                            start_new_session=True)


def test_a_signal_is_forwarded_once_and_a_second_ctrl_c_again(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import signal, time\n"
                                "got = []\n"
                                "for each in (signal.SIGINT, signal.SIGTERM):\n"
                                "    signal.signal(each, lambda n, f: got.append(n))\n"
                                "print('ready', flush=True)\n"
                                "deadline = time.time() + 30\n"
                                "while len(got) < 2 and time.time() < deadline: time.sleep(0.05)\n"
                                "print(got)"], stdout=subprocess.PIPE, text=True)
    assert sleeper.stdout.readline().strip() == "ready"
    with ForwardedSignals.installed(lambda: [sleeper.pid]) as forward:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # changes nothing: the children are stopping
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C is passed on
    assert forward.signum == signal.SIGTERM and forward.count == 2
    # each passed on once (both may arrive at once, and the kernel then delivers the lower number first)
    assert sorted(json.loads(sleeper.communicate(timeout=30)[0])) == sorted([signal.SIGTERM, signal.SIGINT])


# -- experiment --jobs (items 1, 2) ------------------------------------------------------------------

# one epoch of 1,800 images an arm: the signal comes as both arms start it, seconds before they could end it
EXPERIMENT = ["experiment", "lrn", "--seeds", "1", "--subset", "0.03", "--epochs", "1", "--jobs", "2",
              "--val-size", "500", "--precision", "fp32", "--device", "cpu", "--data-dir", fashion_small_test()]


def experiment_training(out: Path) -> subprocess.Popen:
    command = start([*EXPERIMENT, "--out", str(out)])
    runs = out / "lrn" / "runs"
    wait_for(lambda: len(list(runs.glob("*/log.txt"))) == 2 or command.poll() is not None, 240,
             "both arms training")
    assert command.poll() is None, command.communicate()[0]
    return command


@needs_fashion
@needs_linux
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_experiment_jobs_stops_as_one_on_a_signal_and_continues(tmp_path, signum, capsys):
    command = experiment_training(tmp_path)
    # Ctrl-C as the terminal sends it (the whole group); SIGTERM as a scheduler sends it (the pid)
    output = stop_and_check(command, signum, group=signum == signal.SIGINT, expected=128 + signum)
    assert f"alexnet: stopped by {signal.Signals(signum).name}" in output
    assert "Traceback" not in output and "leaked" not in output, output
    for folder in (tmp_path / "lrn" / "runs").iterdir():  # the locks went with the workers
        RunFolder(folder).lock().release()
    # continued in this process: the same command, one run at a time (--jobs 1 trains in the calling
    # process; how many run at once is not part of what an experiment measures)
    again = [*EXPERIMENT[:EXPERIMENT.index("--jobs")], *EXPERIMENT[EXPERIMENT.index("--jobs") + 2:], "--jobs", "1"]
    assert main([*again, "--out", str(tmp_path)]) == 0, capsys.readouterr()
    assert (tmp_path / "lrn" / "results.json").is_file()


@needs_fashion
@needs_linux
@pytest.mark.slow
def test_experiment_workers_do_not_outlive_a_killed_experiment(tmp_path):
    command = experiment_training(tmp_path)
    stop_and_check(command, signal.SIGKILL, group=False, expected=-signal.SIGKILL)


# -- train --nproc (items 3, 4) --------------------------------------------------------------------

NPROC = ["train", "--nproc", "2", "--subset", "0.03", "--epochs", "1", "--batch-size", "64", "--val-size", "500",
         "--precision", "fp32", "--device", "cpu", "--quiet", "--no-report",
         "--no-flip-test", "--data-dir", fashion_small_test()]


def nproc_training(out: Path, temporary: Path | None = None) -> subprocess.Popen:
    command = start([*NPROC, "--out", str(out), "--name", "d"], temporary)
    log = RunFolder(out / "d").log
    wait_for(lambda: (log.is_file() and "2 processes" in log.read_text()) or command.poll() is not None, 240,
             "the two ranks training")
    assert command.poll() is None, command.communicate()[0]
    ranks = [pid for pid in descendants(command.pid) if "-m alexnet train" in _command_line(pid)]
    assert len(ranks) >= 2, [(pid, _command_line(pid)) for pid in descendants(command.pid)]
    return command


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@needs_fashion
@needs_linux
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_train_nproc_passes_a_signal_to_every_rank_and_the_run_continues(tmp_path, signum, capsys):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    command = nproc_training(tmp_path, temporary)
    output = stop_and_check(command, signum, group=signum == signal.SIGINT, expected=128 + signum)
    assert f"alexnet: stopped by {signal.Signals(signum).name}" in output
    assert "SignalException" not in output, output
    assert list(temporary.iterdir()) == []  # torchrun's folder for the ranks' error files went with it
    folder = RunFolder(tmp_path / "d")
    assert f"{signal.Signals(signum).name}: stopped in epoch" in folder.log.read_text()
    folder.lock().release()  # rank 0's lock went with it
    assert main(["train", "--resume", str(folder.directory), "--quiet", "--no-report"]) == 0, capsys.readouterr()
    assert folder.weights.is_file()


@needs_fashion
@needs_linux
@pytest.mark.slow
def test_torchrun_and_its_ranks_do_not_outlive_a_killed_train_nproc(tmp_path):
    command = nproc_training(tmp_path)
    stop_and_check(command, signal.SIGKILL, group=False, expected=-signal.SIGKILL)


@pytest.mark.parametrize("flags, message", [
    (["--nproc", "0"], "--nproc must be at least 1 (processes on this machine), got 0"),
    (["--nproc", "-1"], "--nproc must be at least 1"),
    (["--nproc", "2", "--lr", "inf"], "lr must be a positive number, got inf"),
    (["--nproc", "2", "--batch-size", "255"], "batch size 255 does not divide evenly over 2 processes"),
])
def test_train_nproc_refuses_bad_flags_once_before_torchrun(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.setattr(subprocess, "Popen", None)  # torchrun must not be started
    assert main(["train", "--out", str(tmp_path), "--name", "r", *flags]) == 2
    error = capsys.readouterr().err
    assert error.count("alexnet: error:") == 1 and message in error, error
    assert not (tmp_path / "r").exists()


@needs_fashion
def test_train_nproc_refuses_a_taken_name_and_a_finished_run_before_torchrun(tmp_path, capsys, monkeypatch):
    train(TrainConfig(subset=0.02, epochs=1, val_size=500, batch_size=64, precision="fp32", quiet=True,
                      flip_test=False, data_dir=fashion_small_test(), out=str(tmp_path), name="base"))
    monkeypatch.setattr(subprocess, "Popen", None)
    folder = tmp_path / "base"
    for flags, message in (
        (["--out", str(tmp_path), "--name", "base"], f"{folder} already holds a run; continue it with --resume"),
        (["--resume", str(folder)], f"{folder} has finished: 1 epoch trained and tested"),
        (["--resume", str(tmp_path / "nothing")], "is not a run folder (no config.yaml)"),
    ):
        capsys.readouterr()
        assert main(["train", "--nproc", "2", *flags]) == 2
        error = capsys.readouterr().err
        assert error.count("alexnet: error:") == 1 and message in error, error


@needs_fashion
def test_train_nproc_starts_torchrun_without_torchvision(tmp_path):
    # the launching process only checks the configuration: torchvision, and torch._dynamo with it,
    # are the ranks' to import (they were 2 s of the launcher's start before torchrun's)
    script = (
        "import subprocess, sys\n"
        "popen = subprocess.Popen\n"
        "def launch(command, *args, **kwargs):\n"
        "    if 'run_torchrun' not in ' '.join(map(str, command)):  # ctypes asking ldconfig, say\n"
        "        return popen(command, *args, **kwargs)\n"
        "    print(sorted(m for m in ('torchvision', 'torch._dynamo', 'matplotlib') if m in sys.modules))\n"
        "    raise SystemExit(0)\n"
        "subprocess.Popen = launch\n"
        "from alexnet.cli import main\n"
        f"main({[*NPROC, '--out', str(tmp_path)]!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env(), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
