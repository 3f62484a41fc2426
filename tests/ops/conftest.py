"""The CLI as an operator runs it: `python -m ops --home H --config C ...` as a process, the
processes it starts stopped by pid when the test ends (also when it fails)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import write_config
from ops import processes as procs
from ops.config import load

# Runs the code after it with `import pandas` failing, as on an install without the test extra.
# (Putting None into sys.modules would break pyarrow's own pandas probe instead.)
NO_PANDAS = """
import sys
class _NoPandas:
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoPandas())
"""


@dataclass
class CliStack:
    home: Path
    config: Path
    cfg: object
    others: list = field(default_factory=list)   # extra processes a test starts, killed by pid

    def argv(self, *args) -> list[str]:
        return ["-m", "ops", "--home", str(self.home), "--config", str(self.config), *map(str, args)]

    def ts(self, *args, ok: bool = True, timeout: float = 120, no_pandas: bool = False):
        """Run `tickstack ARGS`; with `no_pandas`, in an interpreter where pandas cannot load."""
        if no_pandas:
            code = NO_PANDAS + f"import runpy; sys.argv = {['tickstack', *self.argv(*args)[2:]]!r}\n" \
                               "runpy.run_module('ops', run_name='__main__')"
            cmd = [sys.executable, "-c", code]
        else:
            cmd = [sys.executable, *self.argv(*args)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if ok:
            assert r.returncode == 0, r.stderr + r.stdout
        return r

    def status(self) -> dict:
        import json
        return {r["name"]: r for r in json.loads(self.ts("status", "--json").stdout)}


def _cleanup(s: CliStack) -> None:
    from ops.supervisor import shutdown
    shutdown(s.cfg, timeout=5)   # first, so it does not restart what is stopped here
    procs.stop(s.cfg, timeout=5)
    for name in [*procs.process_names(s.cfg, procs.running_strategies(s.cfg)), procs.SUPERVISOR]:
        # whatever a failed test left behind: killed by pid
        pid = procs.pid_of(s.cfg, name)
        if pid and procs.alive(pid, name, s.cfg.root):
            os.kill(pid, signal.SIGKILL)
    for p in s.others:
        if p.poll() is None:
            p.kill()
            p.wait(10)


@pytest.fixture
def no_pandas() -> str:
    """Python code after which `import pandas` fails."""
    return NO_PANDAS


@pytest.fixture
def cli(tmp_path):
    """A home and a config on free ports, and `tickstack` run against them."""
    made = []

    def make(name="home", **sections) -> CliStack:
        h = tmp_path / name
        path = write_config(h, **sections)
        s = CliStack(h, path, load(path, h))
        made.append(s)
        return s
    yield make
    for s in made:
        _cleanup(s)
