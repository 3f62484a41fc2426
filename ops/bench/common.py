"""What every benchmark shares: a throwaway stack on free loopback ports, processes stopped
by pid, and one report format (our figure beside the same-run baseline)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ops.config import Config, load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(home: Path, **tp) -> tuple[Config, Path]:
    ports = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("ingest", "pub", "ctl")}
    tp = {**ports, **tp}
    rdb = f"tcp://127.0.0.1:{free_port()}"
    lines = ["[tickerplant]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in tp.items()]
    lines += ["[rdb]", f'query = "{rdb}"', "[eod]", 'time = "00:00"', 'tz = "UTC"']
    path = home / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return load(path, home), path  # the bench reads the very file the TP process is given


@contextlib.contextmanager
def tickerplant(**tp):
    """A TP process in a temp home; yields its Config; killed by pid on the way out."""
    from tickerplant.protocol import control
    with tempfile.TemporaryDirectory(prefix="tsbench") as d:
        cfg, path = config(Path(d), **tp)
        p = subprocess.Popen([sys.executable, "-m", "tickerplant", "--config", str(path), "--home", d],
                             stdout=subprocess.DEVNULL, stderr=open(Path(d) / "tp.err", "wb"),
                             start_new_session=True)
        try:
            end = time.monotonic() + 30
            while True:
                try:
                    control(cfg.tickerplant.ctl, "status", timeout=0.5)
                    break
                except Exception:
                    if p.poll() is not None or time.monotonic() > end:
                        raise RuntimeError((Path(d) / "tp.err").read_text()[-2000:])
            yield cfg
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait()


def report(what: str, ours: float, base: float, unit: str, target: str = "", higher_is_better=True) -> None:
    ratio = ours / base if base else float("nan")
    print(f"{what:<44} tickstack {ours:>14,.0f} {unit:<8} baseline {base:>14,.0f} {unit:<8} "
          f"ratio {ratio:5.2f}{'  target ' + target if target else ''}", flush=True)
