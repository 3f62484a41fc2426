"""The supervisor behind `tickstack start`: one detached process per home that starts the stack's
processes in dependency order, restarts any that exits without being asked to, and runs the
scheduled jobs (ops.jobs.JobRunner) in-process.

    python -m ops.supervisor --home H [--config C]      # what `tickstack start` launches
    start(cfg, names, config_path, args)                # the CLI side: launch/ask, wait until ready
    stop(cfg, names); shutdown(cfg)                     # stop on purpose (never restarted); end it

Contract
  * One per home: its pid is in <home>/run/supervisor.pid (a hint, checked against /proc like
    every pid file, see ops.processes), its log <home>/logs/supervisor.log. `ensure()` starts
    it under a lock file, so two `tickstack start` at once make one supervisor.
  * Order: the processes go in `processes.process_names` order; a process is launched once no
    process before it is still coming up (waiting to launch, or launched and not yet ready by
    `processes.ready`). A process in backoff or failed holds nothing up: a crash loop never keeps
    the rest of the stack down. Ports are tried first (`processes.port_conflict`).
  * Restarts: a process that exits (or is killed, kill -9 included) while wanted is relaunched
    after a backoff starting at `[supervisor] backoff_initial_s`, doubling to `backoff_max_s`,
    back to the start once it has run `healthy_after_s`. Not ready within `start_timeout_s`:
    killed, and that counts as an exit. `max_crashes` exits within `crash_window_s`: "failed",
    no more restarts until it is asked for again. A process stopped on purpose (`stop`) is
    never restarted. Its own children are reaped with Popen.poll; processes adopted from pid
    files (left by a supervisor that was killed, or started by `processes.start`) are watched
    through /proc (`processes.alive`).
  * Its own end: on SIGTERM/SIGINT or `exit` it stops the jobs and leaves, and the processes
    run on: the next supervisor adopts them (so does one started after a kill -9 of this one;
    the processes run in their own sessions). `tickstack stop` stops them first.
  * State in one place: <home>/run/supervisor.json, rewritten whole (tmp file + rename) on every
    change: {pid, ctl, config, updated, jobs: {name: next run}, processes: {name: {pid, state
    (starting|running|backoff|stopped|failed), started_at, ready_at, restarts, last_exit
    ("code N" | "signal KILL" | "exited (adopted: code unknown)"), exited_at, last_error (the
    last line of its log at exit, or why it could not launch), next_start_at, wanted}}}.
    `processes.status` merges it into its rows.

Control socket: a ROUTER bound on `[supervisor] ctl` (loopback, any free port by default; the
bound endpoint is in supervisor.json). Clients speak REQ (`tickerplant.protocol.request`, a fresh
socket per request): one frame of JSON {"cmd": ...} -> one JSON frame back.
    status                       -> {"ok": true, "state": <supervisor.json's content>}
    start {names?, args?}        -> {"ok", "requested", "already", "at"}: wanted from now on;
                                    names null: the whole stack; args {name: [argv]} for launches
    stop {names?}                -> {"ok", "names"}: not wanted any more (the caller signals them)
    exit                         -> {"ok": true}, then the supervisor ends (processes run on)
Anything else gets {"error": ...} and is counted (`bad_requests` in the state); a message without
a REQ envelope is dropped; frames over 64 KiB make ZeroMQ drop the peer (MAXMSGSIZE). Every
receive and send is NOBLOCK after a poll, so no peer can block or end the supervisor. A REQ
client that connects and sends at once is fine (ROUTER has no slow-joiner loss; that is PUB/SUB).

Why not supervisord or circus: neither starts a process only once the one before it is ready
(supervisord's priority orders launches without waiting), both want their own config generated
from ours, and adopting live processes from our pid files would fight their process model.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ops import processes
from ops.processes import ProcError

log = logging.getLogger("supervisor")

MAX_REQUEST_BYTES = 64 * 1024
POLL_MS = 100
WANTED_STATES = ("starting", "running", "backoff")


@dataclass
class Child:
    """One process as the supervisor sees it."""
    name: str
    wanted: bool = False
    state: str = "stopped"            # starting | running | backoff | stopped | failed
    pid: int | None = None
    popen: subprocess.Popen | None = None   # None: adopted (not our child) or not launched
    live: bool = False                # `pid` is launched or adopted and not yet seen to exit
    log: Path | None = None
    log_from: int = 0
    args: list[str] = field(default_factory=list)
    started_at: float | None = None
    ready_at: float | None = None
    restarts: int = 0
    last_exit: str | None = None
    exited_at: float | None = None
    last_error: str | None = None
    next_start_at: float | None = None
    delay: float = 0.0
    crashes: deque = field(default_factory=deque)
    after_crash: bool = False

    def public(self) -> dict:
        return {"pid": self.pid, "state": self.state, "wanted": self.wanted,
                "started_at": self.started_at, "ready_at": self.ready_at, "restarts": self.restarts,
                "last_exit": self.last_exit, "exited_at": self.exited_at,
                "last_error": self.last_error, "next_start_at": self.next_start_at}


def _exit_text(code: int | None) -> str:
    if code is None:
        return "exited (adopted: code unknown)"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name.removeprefix('SIG')}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


class Supervisor:
    """The loop: serve the control socket, watch the children, launch what is due. Built from the
    whole stack config (it launches every process with `config_path`, as the CLI would)."""

    def __init__(self, cfg, config_path: str | Path | None = None, jobs=True):
        self.cfg = cfg
        self.settings = cfg.supervisor
        self.config_path = str(Path(config_path).resolve()) if config_path else None
        self.children: dict[str, Child] = {}
        self.extra: list[str] = []          # strategy-NAME processes not in [strategy] run
        self.bad_requests = 0
        self._exit = False
        self._dirty = True
        self.ctl_endpoint: str | None = None
        self.runner = None
        if jobs:
            from ops.config import JobsConfig
            from ops.jobs import JobRunner
            from schemas.settings import load
            self.runner = JobRunner(load(JobsConfig, config_path, cfg.root, only_own=True))

    # -- bookkeeping ---------------------------------------------------------------------------
    def order(self) -> list[str]:
        return processes.process_names(self.cfg, self.extra)

    def child(self, name: str) -> Child:
        c = self.children.get(name)
        if c is None:
            c = self.children[name] = Child(name, delay=self.settings.backoff_initial_s)
        return c

    def _set(self, c: Child, state: str, why: str = "") -> None:
        if c.state != state:
            log.info("%s: %s -> %s%s", c.name, c.state, state, f" ({why})" if why else "")
        c.state = state
        self._dirty = True

    def adopt(self) -> None:
        """Take over this home's live processes (pid files checked against /proc), keeping what a
        previous supervisor knew of the same pids."""
        try:
            old = json.loads(processes.state_file(self.cfg).read_text()).get("processes", {})
        except (OSError, ValueError):
            old = {}
        for s in processes.running_strategies(self.cfg):
            if s not in self.order():
                self.extra.append(s)
        for name in self.order():
            pid = processes.running(self.cfg, name)
            if pid:
                self._adopt(name, pid, old.get(name, {}))

    def _adopt(self, name: str, pid: int, was: dict) -> None:
        """Watch a live process this supervisor did not launch (through /proc: not our child)."""
        c = self.child(name)
        same = was.get("pid") == pid
        c.wanted, c.pid, c.live, c.log = True, pid, True, self.cfg.log_dir / f"{name}.log"
        c.log_from = c.log.stat().st_size if c.log.exists() else 0
        c.started_at = was.get("started_at") if same else processes.started_at_of(pid)
        c.ready_at = (was.get("ready_at") if same else None) or time.time()
        if same:                            # what the supervisor before this one knew
            c.restarts, c.last_exit, c.last_error = was.get("restarts", 0), was.get("last_exit"), was.get("last_error")
        self._set(c, "running", f"adopted pid {pid}")

    def state(self) -> dict:
        jobs = {}
        if self.runner is not None and self.runner.scheduler.running:
            jobs = {k: v.isoformat() if v else None for k, v in self.runner.next_runs().items()}
        return {"pid": os.getpid(), "ctl": self.ctl_endpoint, "config": self.config_path,
                "updated": time.time(), "bad_requests": self.bad_requests, "jobs": jobs,
                "processes": {n: self.children[n].public() for n in self.order() if n in self.children}}

    def write_state(self) -> None:
        path = processes.state_file(self.cfg)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.state(), indent=1))
        os.replace(tmp, path)
        self._dirty = False

    # -- requests ------------------------------------------------------------------------------
    def want(self, names: list[str] | None, args: dict | None = None) -> dict:
        """Mark processes wanted; those in backoff or failed are launched without waiting."""
        from strategy.names import STRATEGIES
        new = list(dict.fromkeys(n for n in names or () if processes.strategy_of(n) and n not in self.order()))
        for n in new:
            st = processes.strategy_of(n)
            if st not in STRATEGIES and ":" not in st:
                raise ValueError(f"unknown strategy {st!r}: use one of {sorted(STRATEGIES)} or module:Class")
        self.extra += new
        every = self.order()
        names = names or every
        bad = [n for n in names if n not in every]
        if bad:
            raise ValueError(f"no process {', '.join(bad)}; the processes are: {' '.join(every)}")
        self.watch()
        already = []
        for n in [x for x in every if x in names]:
            c = self.child(n)
            if n in (args or {}):
                c.args = [str(a) for a in args[n]]
            pid = None if c.live else processes.running(self.cfg, n)
            if pid:                         # started by someone else meanwhile: adopted
                self._adopt(n, pid, {})
            if c.state == "running":
                already.append(n)
                c.wanted = True
                continue
            c.wanted = True
            c.crashes.clear()
            if c.state in ("stopped", "failed", "backoff"):
                c.next_start_at = None
                c.delay = self.settings.backoff_initial_s
                self._set(c, "starting", "requested")
        return {"ok": True, "requested": [n for n in every if n in names], "already": already,
                "at": time.time()}

    def unwant(self, names: list[str] | None) -> dict:
        """Mark processes not wanted: whoever asked stops them; they are never restarted."""
        names = names or list(self.children)
        for n in names:
            c = self.children.get(n)
            if c is None:
                continue
            c.wanted = False
            c.next_start_at = None
            if not c.live:
                self._set(c, "stopped", "stop requested")
        return {"ok": True, "names": names}

    def handle(self, req) -> dict:
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            raise ValueError('a request is a JSON object {"cmd": "status"|"start"|"stop"|"exit", ...}')
        cmd = req["cmd"]
        names = req.get("names")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ValueError('"names" is a list of process names, or null for all')
        names = [processes.canonical(n) for n in names] if names else None
        if cmd == "status":
            return {"ok": True, "state": self.state()}
        if cmd == "start":
            args = req.get("args") or {}
            if not (isinstance(args, dict) and all(isinstance(v, list) for v in args.values())):
                raise ValueError('"args" is {"name": ["arg", ...]}')
            return self.want(names, args)
        if cmd == "stop":
            return self.unwant(names)
        if cmd == "exit":
            self._exit = True
            return {"ok": True}
        raise ValueError(f"unknown command {cmd!r}; commands: status, start, stop, exit")

    def serve(self, sock, timeout_ms: int) -> None:
        """Answer whatever is waiting on the control socket (at most 100 messages a turn)."""
        import zmq

        from tickerplant.protocol import NOBLOCK, split_envelope
        if not sock.poll(timeout_ms):
            return
        for _ in range(100):
            try:
                frames = sock.recv_multipart(NOBLOCK)
            except zmq.Again:
                return
            envelope, body = split_envelope(frames)
            if envelope is None:
                self.bad_requests += 1
                continue
            try:
                if len(body) != 1:
                    raise ValueError("a request is one frame of JSON")
                reply = self.handle(json.loads(body[0]))
            except (ValueError, UnicodeDecodeError, RecursionError) as e:
                self.bad_requests += 1
                self._dirty = True
                reply = {"error": str(e)}
            try:
                sock.send_multipart([*envelope, json.dumps(reply).encode()], NOBLOCK)
            except zmq.ZMQError:
                pass  # the peer is gone: nothing to answer

    # -- the children --------------------------------------------------------------------------
    def _exited(self, c: Child) -> int | None | bool:
        """False while the process lives; else its exit code (None: not ours, unknown)."""
        if c.popen is not None:
            code = c.popen.poll()
            return False if code is None else code
        return False if processes.alive(c.pid, c.name, self.cfg.root) else None

    def _crash(self, c: Child, why: str, exit_text: str) -> None:
        """An exit nobody asked for, or a launch that failed: back off, or give up."""
        now = time.time()
        c.last_exit, c.last_error, c.exited_at = exit_text, why or None, now
        c.popen, c.live = None, False
        c.crashes.append(now)
        while c.crashes and c.crashes[0] < now - self.settings.crash_window_s:
            c.crashes.popleft()
        if len(c.crashes) >= self.settings.max_crashes:
            c.next_start_at = None
            c.wanted = False
            self._set(c, "failed", f"{len(c.crashes)} exits in {self.settings.crash_window_s:g}s; last: {why}")
            return
        c.next_start_at = now + c.delay
        self._set(c, "backoff", f"{exit_text}: {why}; again in {c.delay:g}s")
        c.delay = min(c.delay * 2, self.settings.backoff_max_s)
        c.after_crash = True

    def _launch(self, c: Child) -> None:
        conflict = processes.port_conflict(self.cfg, c.name)
        if conflict:
            self._crash(c, conflict, "not launched")
            return
        c.popen, c.log, c.log_from = processes.spawn(self.cfg, c.name, self.config_path, c.args)
        c.pid, c.live, c.started_at, c.ready_at, c.next_start_at = c.popen.pid, True, time.time(), None, None
        if c.after_crash:
            c.restarts += 1
            c.after_crash = False
        self._set(c, "starting", f"pid {c.pid}")
        self._dirty = True

    def watch(self) -> None:
        """Notice exits, readiness, due restarts; launch what may go now."""
        now = time.time()
        coming_up = False
        for name in self.order():
            c = self.children.get(name)
            if c is None:
                continue
            if c.live:
                code = self._exited(c)
                if code is not False:
                    why = processes.last_error(c.log, c.log_from) if c.log else ""
                    if c.wanted:
                        self._crash(c, why, _exit_text(code))
                    else:
                        c.popen, c.live = None, False   # last_exit/last_error: the last crash's
                        self._set(c, "stopped", "stopped on purpose")
                    continue
            if c.state == "starting" and c.live:
                if processes.ready(self.cfg, name, c.pid):
                    c.ready_at = time.time()
                    self._set(c, "running", f"pid {c.pid} ready")
                elif now - (c.started_at or now) > self.settings.start_timeout_s and c.wanted:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(c.pid, signal.SIGKILL)
                    if c.popen is not None:
                        c.popen.wait(5)
                    self._crash(c, f"not ready in {self.settings.start_timeout_s:g}s", "killed")
                    continue
            if c.state == "running" and c.ready_at and now - c.ready_at > self.settings.healthy_after_s:
                c.delay = self.settings.backoff_initial_s
            if c.state == "backoff" and c.wanted and c.next_start_at and now >= c.next_start_at:
                c.next_start_at = None
                self._set(c, "starting", "backoff over")
            if c.state == "starting" and c.wanted and not c.live and not coming_up:
                self._launch(c)
            if c.state == "starting":
                coming_up = True

    # -- the process ---------------------------------------------------------------------------
    def request_exit(self) -> None:
        """Make run() return (safe in a signal handler: it only sets a flag)."""
        self._exit = True

    def run(self) -> None:
        import zmq
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        sock.bind(self.settings.ctl)
        self.ctl_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.cfg.run_dir.mkdir(parents=True, exist_ok=True)
        self.adopt()
        if self.runner is not None:
            self.runner.start()
        log.info("supervising %s; control on %s", self.cfg.root, self.ctl_endpoint)
        self.write_state()
        try:
            while not self._exit:
                self.serve(sock, POLL_MS)
                self.watch()
                if self._dirty:
                    self.write_state()
        finally:
            if self.runner is not None:
                self.runner.stop(wait=False)
            sock.close(0)
            self.write_state()
            if processes.pid_of(self.cfg, processes.SUPERVISOR) == os.getpid():
                (self.cfg.run_dir / f"{processes.SUPERVISOR}.pid").unlink(missing_ok=True)
            log.info("supervisor exits; running processes: %s",
                     " ".join(n for n, c in self.children.items() if c.state == "running") or "none")


# -- the CLI's side ------------------------------------------------------------------------------
def ask(cfg, cmd: str, timeout: float = 5.0, **fields) -> dict:
    """One request to this home's supervisor; its reply. ProcError if it does not answer or
    refuses."""
    from tickerplant.protocol import Unreachable, request
    try:
        ctl = json.loads(processes.state_file(cfg).read_text())["ctl"]
        reply = json.loads(request(ctl, [json.dumps({"cmd": cmd, **fields}).encode()], timeout,
                                   what="the supervisor")[0].bytes)
    except (OSError, ValueError, KeyError, TypeError, Unreachable) as e:
        raise ProcError(f"the supervisor does not answer ({e}); see {cfg.log_dir / 'supervisor.log'}") from None
    if "error" in reply:
        raise ProcError(f"the supervisor refused {cmd}: {reply['error']}")
    return reply


def ensure(cfg, config_path=None, timeout: float = 20.0) -> int:
    """This home's supervisor's pid, launching it first if none runs (under a lock file, so
    concurrent callers get one supervisor)."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.run_dir / "supervisor.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pid = processes.supervisor_pid(cfg)
        if pid:
            return pid
        p, logfile, already = processes.spawn(cfg, processes.SUPERVISOR, config_path)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if p.poll() is not None:
                raise ProcError(f"the supervisor did not start: "
                                f"{processes.last_error(logfile, already) or 'no output'}; see {logfile}")
            with contextlib.suppress(OSError, ValueError):
                if json.loads(processes.state_file(cfg).read_text()).get("pid") == p.pid:
                    return p.pid
            time.sleep(0.05)
        p.kill()
        raise ProcError(f"the supervisor did not start in {timeout:g}s; see {logfile}")


def start(cfg, names=None, config_path=None, args: dict | None = None) -> list[str]:
    """Have the supervisor start `names` (default: all) and wait until each is ready. Returns
    the names it started (not those already running); ProcError naming the log when one fails
    to start (the supervisor retries it with backoff)."""
    ensure(cfg, config_path)
    names = [processes.canonical(n) for n in names] if names else None
    reply = ask(cfg, "start", names=names, args=args or {})
    todo = [n for n in reply["requested"] if n not in reply["already"]]
    at = reply["at"]
    s = cfg.supervisor
    end = time.monotonic() + s.start_timeout_s * (len(todo) + 1)
    while todo:
        st = ask(cfg, "status")["state"]["processes"]
        for n in todo:
            e = st.get(n, {})
            if e.get("state") in ("backoff", "failed", "stopped") and (e.get("exited_at") or 0) >= at:
                then = {"backoff": "; the supervisor tries again (`tickstack status`; `tickstack stop "
                                   f"{n}` stops trying)",
                        "failed": f"; the supervisor gave up on it (`tickstack start {n}` tries again)",
                        "stopped": ""}[e["state"]]
                raise ProcError(f"{n} did not start: {e.get('last_error') or e.get('last_exit') or 'no output'}; "
                                f"see {cfg.log_dir / (n + '.log')}{then}")
        if all(st.get(n, {}).get("state") == "running" for n in todo):
            return todo
        if time.monotonic() > end:
            slow = [n for n in todo if st.get(n, {}).get("state") != "running"]
            raise ProcError(f"not ready in time: {' '.join(slow)}; see their logs in {cfg.log_dir}")
        time.sleep(0.1)
    return todo


def shutdown(cfg, timeout: float = 10.0) -> bool:
    """End this home's supervisor (the processes run on); True if one was running."""
    pid = processes.supervisor_pid(cfg)
    if not pid:
        return False
    with contextlib.suppress(ProcError):
        ask(cfg, "exit", timeout=2.0)
    end = time.monotonic() + timeout
    while processes.alive(pid, processes.SUPERVISOR, cfg.root):
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    return True


def stop(cfg, names=None) -> list[str]:
    """Stop processes on purpose (the supervisor, if one runs, first learns not to restart them),
    in reverse order, SIGTERM then SIGKILL after `[supervisor] stop_timeout_s`. With no names,
    everything, and then the supervisor. Returns the names stopped."""
    names = [processes.canonical(n) for n in names] if names else None
    if processes.supervisor_pid(cfg):
        try:
            ask(cfg, "stop", names=names)
        except ProcError:
            if names:
                raise
            shutdown(cfg, timeout=2.0)   # a stuck supervisor must not restart what we stop
    done = processes.stop(cfg, names, timeout=cfg.supervisor.stop_timeout_s)
    if not names:
        shutdown(cfg)
    return done


if __name__ == "__main__":
    from ops.config import Config
    from schemas.process import boot, on_term

    cfg, cli_args = boot("ops.supervisor", Config)
    sup = Supervisor(cfg, cli_args.config)
    on_term(sup.request_exit)
    sup.run()
