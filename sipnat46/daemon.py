"""The daemon (I/O shell): queue loop, signals, pidfile, readiness, status, cleanup.

Cleanup runs on every exit path we get to run code on (normal stop, SIGTERM/SIGINT/SIGHUP,
exceptions): rules removed first so nothing new is queued, then every held packet verdicted,
then the queue unbound. After a SIGKILL the rules stay, but they carry --queue-bypass, so SIP
passes unmodified until `stop` or `rules remove` clears them.
"""

from __future__ import annotations

import gc
import ipaddress
import json
import logging
import os
import resource
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import dns.name

from . import rules, watchdog
from .config import Config
from .dialogs import ViaMemory
from .dns46 import Dns46
from .dns46_server import Dns46Server
from .failover import Failover
from .inline import Counters, InlineEngine
from .media import MediaSessions
from .policy import Rewriter
from .relay import RelayPool
from .resolver import RETRY_AFTER, PeerResolver, make_resolver
from .routes import RouteCache, RouteRefresher, ipv6_usable, local_addresses
from .runfiles import pidfile, run_dir, statusfile
from .stream_proxy import StreamProxy

log = logging.getLogger("sipnat46")
STATUS_EVERY = 1.0
HOST_ADDR_EVERY = 5.0


def read_pid(cfg: Config) -> int | None:
    """The pid of a running instance, or None (a stale pidfile counts as not running)."""
    try:
        pid = int(pidfile(cfg).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:  # a recycled pid is not ours
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"sipnat46" in cmdline else None


def _raise_fd_limit() -> None:
    """Each proxied connection holds two descriptors: allow as many as the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class Daemon:
    def __init__(self, cfg: Config, *, manage_rules: bool = True) -> None:
        self.cfg = cfg
        self.manage_rules = manage_rules
        self.stopping = False
        self.reset_requested = False
        self.counters = Counters()
        self.started = time.time()
        plan = cfg.address_plan()
        if cfg.placement == "host":
            plan.host_addresses = local_addresses()
        self.plan = plan
        self.ipv6 = ipv6_usable()
        media = MediaSessions(*cfg.media_ports) if cfg.relay == "builtin" else None
        self.routes = RouteCache()
        named = cfg.named_peers()
        self.failover = (
            Failover(named, failover_after=cfg.dns.failover_after, avoid_for=cfg.dns.avoid_for)
            if named
            else None
        )
        self.resolver: PeerResolver | None = None
        self.rewriter = Rewriter(
            plan,
            egress_lookup=self.routes,
            media=media,
            vias=ViaMemory(),
            relay_inside=cfg.relay_inside,
            failover=self.failover,
        )
        self.rewriter.ipv6_enabled = self.ipv6
        self.relay: RelayPool | None = None
        self.engine = InlineEngine(self.rewriter, cfg.sip_ports, self.counters)
        self.dns46: Dns46Server | None = None
        self.streams: StreamProxy | None = None
        self.watchdog: subprocess.Popen[bytes] | None = None

    def _stop(self, signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        self.stopping = True

    def _reset_figures(self, _signum: int, _frame: object) -> None:
        """SIGUSR1: start the latency figures afresh (benchmarks measure one step at a time)."""
        self.reset_requested = True

    def status(self, loop: Any = None) -> dict[str, Any]:
        st = self.plan.stand_ins
        return {
            "instance": self.cfg.instance,
            "pid": os.getpid(),
            "running": not self.stopping,
            "started": self.started,
            "updated": time.time(),
            "queue": self.cfg.queue,
            "placement": self.cfg.placement,
            "ipv6": self.ipv6,
            "counters": self.counters.as_dict(),
            "enobufs": getattr(loop, "enobufs", 0),
            "latency": loop.latency.summary() if loop is not None else None,
            "stand_ins": {"dynamic": st.dynamic_count, **st.counters.__dict__},
            "via_memory": len(self.rewriter.vias),
            "named_peers": self.failover.snapshot(time.monotonic()) if self.failover is not None else None,
            "dns46": self.dns46.status() if self.dns46 is not None else None,
            "tcp": self.streams.status() if self.streams is not None else None,
            "relay": {
                "legs": self.rewriter.media.active_legs if self.rewriter.media else 0,
                **(self.relay.last_stats if self.relay is not None else {}),
            },
        }

    def _start_resolver(self) -> None:
        """Named peers are resolved once before the daemon says it is ready, then kept
        fresh in the background."""
        if self.failover is None:
            return
        dns = self.cfg.dns
        hosts = {p.name: p.host for p in self.failover.peers.values()}
        self.resolver = PeerResolver(make_resolver(dns.servers, dns.port, dns.timeout), hosts, dns.prefer)
        self.resolver.resolve_now()
        self._resolved()
        self.resolver.start()

    def _start_dns46(self) -> None:
        cfg = self.cfg.dns46
        if not cfg.enabled or cfg.listen is None:
            return
        upstream = (cfg.upstream or self.cfg.dns.servers or (None,))[0]
        if upstream is None:  # the system's resolver
            upstream = ipaddress.ip_address(make_resolver().nameservers[0])
        names = {dns.name.from_text(p.host): p.stand_in for p in self.cfg.named_peers()}
        core = Dns46(names, self.plan.stand_ins, cfg.ttl)
        self.dns46 = Dns46Server(core, cfg.listen, cfg.port, upstream, self.cfg.dns.port)
        log.info("DNS46 listening on %s port %d, upstream %s", cfg.listen, cfg.port, upstream)

    def _resolved(self) -> None:
        assert self.resolver is not None and self.failover is not None
        now = time.monotonic()
        while not self.resolver.results.empty():
            name, found = self.resolver.results.get()
            if isinstance(found, str):
                self.failover.resolve_failed(name, found, now + RETRY_AFTER)
            else:
                self.failover.update(name, found.targets, now + found.ttl, now)
                log.info("peer %s: targets %s", name, ", ".join(map(str, found.targets)))

    def _wait(self) -> float:
        """How long the loop may sleep: until the next failover deadline, at most 0.25 s."""
        deadline = self.failover.next_deadline() if self.failover is not None else None
        if deadline is None:
            return 0.25
        return min(0.25, max(0.0, deadline - time.monotonic()))

    def _failover(self, loop: Any, icmp: bool) -> None:
        """Requests that drew no answer or an ICMP error go to the peer's next target."""
        assert self.failover is not None
        self._resolved()
        now = time.monotonic()
        moved = self.failover.due(now)
        if icmp:
            for addr, port, why in loop.emitter.errors():
                log.info("%s from [%s]:%d", why, addr, port)
                moved += self.failover.unreachable(addr, port, why, now)
        for pending in moved:
            out = self.engine.resend(pending, now)
            if out is not None:
                loop.emitter.send(out.payload, out.src, out.sport, out.dst, out.dport)

    def run(self, ready_fd: int | None = None) -> int:
        from .nfq import QueueLoop  # netfilterqueue only where a queue is really used

        cfg = self.cfg
        run_dir().mkdir(parents=True, exist_ok=True)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._stop)
        signal.signal(signal.SIGUSR1, self._reset_figures)
        if not self.ipv6:
            log.warning(
                "IPv6 is disabled on this box: IPv6 fixups and translation to IPv6 peers cannot "
                "happen; IPv4 SIP and its media pass as before"
            )
        if cfg.relay == "builtin":
            self.relay = self.engine.relay = RelayPool(cfg.media_timeout, cfg.relay_workers)
        try:
            loop = QueueLoop(self.engine, cfg.queue, max_len=cfg.queue_max_len, rcvbuf=cfg.rcvbuf)
        except BaseException:
            if self.relay is not None:
                self.relay.stop()
            raise
        refresher = RouteRefresher(self.routes)
        refresher.start()
        try:
            self._start_resolver()
            self._start_dns46()
            if cfg.tcp.enabled:
                _raise_fd_limit()
                self.streams = StreamProxy(self.engine, cfg.tcp.proxy_port, cfg.tcp.tls_ports)
            _write_atomic(pidfile(cfg), f"{os.getpid()}\n")
            if self.manage_rules:
                families = rules.apply(cfg)
                log.info("rules applied for IPv%s", " and IPv".join(map(str, families)))
                if cfg.path is not None:
                    self.watchdog = watchdog.spawn(cfg)
            _write_atomic(statusfile(cfg), json.dumps(self.status(loop)))
            # What exists now (modules, config, tables) lives as long as the daemon: kept out
            # of the collector's walks, a full collection costs only what packets left behind.
            gc.freeze()
            log.info("bound to NFQUEUE %d, %s placement, ready", cfg.queue, cfg.placement)
            if ready_fd is not None:
                os.write(ready_fd, b"ready\n")
                os.close(ready_fd)
            next_status = next_addrs = time.monotonic()
            relay_conns = self.relay.waitables if self.relay is not None else []
            waitables: list[Any] = [loop, *relay_conns]
            if self.failover is not None:
                waitables.append(loop.emitter)
            if self.dns46 is not None:
                waitables += self.dns46.waitables
            if self.streams is not None:
                waitables.append(self.streams)
            while not self.stopping:
                ready, _, _ = select.select(waitables, [], [], self._wait())
                if loop in ready:
                    loop.drain()
                if self.failover is not None:
                    self._failover(loop, loop.emitter in ready)
                if self.dns46 is not None and ready:
                    self.dns46.serve(time.monotonic())
                if self.streams is not None:
                    self.streams.service(time.monotonic())
                if self.relay is not None and len(ready) > (loop in ready):
                    for event in self.relay.events():
                        if event[0] == "expired":
                            self.engine.media_expired(event[1])
                if self.reset_requested:
                    loop.latency.reset()
                    self.reset_requested = False
                now = time.monotonic()
                if now >= next_status:
                    _write_atomic(statusfile(cfg), json.dumps(self.status(loop)))
                    self.plan.stand_ins.expire(now, self.engine.calls.stand_ins_in_use())
                    if self.failover is not None:
                        self.failover.expire(now)
                    if self.relay is not None:
                        self.relay.stats()
                    next_status = now + STATUS_EVERY
                if cfg.placement == "host" and now >= next_addrs:
                    self.plan.host_addresses = local_addresses() or self.plan.host_addresses
                    next_addrs = now + HOST_ADDR_EVERY
        finally:
            self.stopping = True
            try:
                if self.manage_rules:
                    rules.remove(cfg)
            finally:
                refresher.stop()
                if self.resolver is not None:
                    self.resolver.stop()
                if self.dns46 is not None:
                    self.dns46.close()
                if self.streams is not None:
                    self.streams.close()
                loop.close()
                if self.relay is not None:
                    self.relay.stop()
                final = self.status(loop)
                _write_atomic(statusfile(cfg), json.dumps(final))
                pidfile(cfg).unlink(missing_ok=True)
                if self.watchdog is not None:
                    self.watchdog.stdin.close()  # type: ignore[union-attr]
                log.info("stopped: %s", json.dumps(final["counters"]))
        return 0
