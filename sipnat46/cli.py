"""The ``sipnat46`` command line (click). Errors are one line on stderr and exit 2."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from typing import NoReturn

import click

from . import config as config_mod
from . import daemon, rules, runfiles
from .destination import implied_destination
from .errors import Sipnat46Error
from .media import MediaSessions
from .plan import Side
from .policy import Packet, Rewriter
from .routes import RouteCache
from .sip.message import parse_message
from .sip.uri import parse_ip

EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"sipnat46: {message}", err=True)
    sys.exit(code)


def load_config(ctx: click.Context) -> config_mod.Config:
    path = ctx.obj.get("config")
    if path is None:
        fail("no config given: use --config FILE")
    try:
        cfg = config_mod.load(path)
    except Sipnat46Error as exc:
        fail(f"config: {exc}")
    if ctx.obj.get("instance"):
        cfg.instance = ctx.obj["instance"]
    return cfg


def make_rewriter(cfg: config_mod.Config) -> Rewriter:
    media = MediaSessions(*cfg.media_ports) if cfg.relay != "off" else None
    return Rewriter(
        cfg.address_plan(), egress_lookup=RouteCache(), media=media, relay_inside=cfg.relay_inside
    )


EXIT_FAILED = 1
EXIT_NOT_RUNNING = 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--instance", help="Instance name (default: from the config, else the config file's name).")
@click.version_option(package_name="sipnat46")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, instance: str | None) -> None:
    """sipnat46: rewrite SIP/SDP addresses to the family and address each message leaves by."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path
    ctx.obj["instance"] = instance


def _address(value: str | None, option: str):  # type: ignore[no-untyped-def]
    if value is None:
        return None
    addr = parse_ip(value)
    if addr is None:
        fail(f"{option}: {value!r} is not an IP address")
    return addr


@main.command()
@click.option(
    "--from", "from_side", type=click.Choice(["inside", "outside"]), help="Side the message came from."
)
@click.option("--dst", help="Destination address (default: where the message says it goes).")
@click.option("--src", help="Source address of the packet (default: unknown; egress by route lookup).")
@click.option("--pcap", "pcap_in", type=click.Path(exists=True, dir_okay=False), help="Rewrite a capture.")
@click.option("--out", "pcap_out", type=click.Path(dir_okay=False), help="Where --pcap writes.")
@click.argument("message_file", required=False, type=click.File("rb"))
@click.pass_context
def rewrite(ctx, from_side, dst, src, pcap_in, pcap_out, message_file) -> None:  # type: ignore[no-untyped-def]
    """Rewrite one message (MESSAGE_FILE or stdin) or a whole capture, offline."""
    cfg = load_config(ctx)
    rewriter = make_rewriter(cfg)
    if pcap_in is not None:
        if pcap_out is None:
            fail("--pcap needs --out")
        from .pcap import rewrite_pcap  # scapy is heavy: only here

        report = rewrite_pcap(rewriter, cfg.sip_ports, pcap_in, pcap_out)
        click.echo(
            f"{report.packets} packets, {report.sip} SIP, {report.rewritten} rewritten "
            f"({report.translated} translated), {report.unparsed} passed unparsed",
            err=True,
        )
        return
    if from_side is None:
        fail("rewrite needs --from inside|outside (or --pcap)")
    data = (message_file or sys.stdin.buffer).read()
    try:
        msg = parse_message(data)
        dst_addr = _address(dst, "--dst") or implied_destination(msg)
        packet = Packet(Side(from_side), dst_addr, _address(src, "--src"))
        outcome = rewriter.rewrite(data, packet)
    except Sipnat46Error as exc:
        fail(f"cannot rewrite: {exc}")
    sys.stdout.buffer.write(outcome.data)
    sys.stdout.buffer.flush()
    where = f" -> {outcome.dst}"
    click.echo(f"{outcome.summary()}{where}", err=True)


def _logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s sipnat46[%(process)d]: %(message)s", stream=sys.stderr
    )


@main.command()
@click.option("--no-rules", is_flag=True, help="Do not apply/remove rules (they are managed elsewhere).")
@click.option("--ready-fd", type=int, hidden=True)
@click.pass_context
def run(ctx: click.Context, no_rules: bool, ready_fd: int | None) -> None:
    """Run in the foreground (for systemd); SIGTERM/SIGINT stop it cleanly."""
    cfg = load_config(ctx)
    _logging()
    pid = daemon.read_pid(cfg)
    if pid is not None and pid != os.getpid():
        fail(f"instance {cfg.instance} is already running (pid {pid})", EXIT_FAILED)
    try:
        code = daemon.Daemon(cfg, manage_rules=not no_rules).run(ready_fd)
    except Sipnat46Error as exc:
        fail(str(exc), EXIT_FAILED)
    except OSError as exc:
        fail(f"cannot run: {exc}", EXIT_FAILED)
    sys.exit(code)


@main.command()
@click.option("--timeout", default=15.0, show_default=True, help="Seconds to wait for readiness.")
@click.pass_context
def start(ctx: click.Context, timeout: float) -> None:
    """Apply the rules and start the daemon in the background; returns once it is ready."""
    cfg = load_config(ctx)
    pid = daemon.read_pid(cfg)
    if pid is not None:
        click.echo(f"sipnat46: instance {cfg.instance} is already running (pid {pid})")
        return
    runfiles.run_dir().mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    cmd = [sys.executable, "-m", "sipnat46.cli", "--config", str(cfg.path), "--instance", cfg.instance]
    cmd += ["run", "--ready-fd", str(write_end)]
    with open(runfiles.logfile(cfg), "ab") as log_fh:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=log_fh,
            pass_fds=(write_end,),
            start_new_session=True,
        )
    os.close(write_end)
    ready = b""
    deadline = time.monotonic() + timeout
    with os.fdopen(read_end, "rb") as pipe:
        while time.monotonic() < deadline and proc.poll() is None:
            r, _, _ = select.select([pipe], [], [], 0.2)
            if r:
                ready = pipe.readline()
                break
    if ready.startswith(b"ready"):
        click.echo(f"sipnat46: instance {cfg.instance} started (pid {proc.pid}), NFQUEUE {cfg.queue}")
        return
    if proc.poll() is None:
        proc.terminate()
    tail = runfiles.logfile(cfg).read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    fail(f"instance {cfg.instance} did not become ready: {tail[0]}", EXIT_FAILED)


@main.command()
@click.option("--timeout", default=15.0, show_default=True, help="Seconds to wait before SIGKILL.")
@click.pass_context
def stop(ctx: click.Context, timeout: float) -> None:
    """Stop the daemon and remove its rules; succeeds when nothing was running."""
    cfg = load_config(ctx)
    pid = daemon.read_pid(cfg)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while daemon.read_pid(cfg) == pid and time.monotonic() < deadline:
            time.sleep(0.05)
        if daemon.read_pid(cfg) == pid:
            os.kill(pid, signal.SIGKILL)
            while daemon.read_pid(cfg) == pid:
                time.sleep(0.05)
    try:
        removed = rules.remove(cfg)
    except Sipnat46Error as exc:
        fail(str(exc), EXIT_FAILED)
    runfiles.pidfile(cfg).unlink(missing_ok=True)
    what = "stopped" if pid is not None else "was not running"
    extra = f"; removed leftover rules (IPv{'/'.join(map(str, removed))})" if removed and pid is None else ""
    click.echo(f"sipnat46: instance {cfg.instance} {what}{extra}")


def _named_peer_lines(named: dict | None) -> list[str]:  # type: ignore[type-arg]
    """Each named peer: its name, its targets in order, which is in use, what failed."""
    if not named:
        return []
    out = [f"named peers: failovers={named['failovers']} timeouts={named['timeouts']} "
           f"unreachable={named['unreachable']} exhausted={named['exhausted']}"]  # fmt: skip
    for name, p in named["peers"].items():
        state = f"in use {p['in_use']}" if p["in_use"] else "no target"
        out.append(f"peer {name} ({p['host']}, stand-in {p['stand_in']}): {state}")
        if p["resolve_error"]:
            out.append(f"  dns: {p['resolve_error']}")
        for t in p["targets"]:
            avoided = f", avoided {t['avoided_for']} s more" if t["avoided_for"] else ""
            last = f", last: {t['last_failure']}" if t["last_failure"] else ""
            out.append(f"  {t['target']}: answered {t['answered']}, failed {t['failures']}{avoided}{last}")
    return out


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Running or not, rules present or not, queue figures and counters. Exit 3 when not running."""
    from .nfq import queue_figures

    cfg = load_config(ctx)
    pid = daemon.read_pid(cfg)
    try:
        rules_present = rules.present(cfg)
    except Sipnat46Error as exc:
        rules_present = {}
        click.echo(f"sipnat46: cannot read rules: {exc}", err=True)
    report: dict[str, object] = {
        "instance": cfg.instance,
        "running": pid is not None,
        "pid": pid,
        "rules": {f"ipv{f}": p for f, p in rules_present.items()},
        "queue": queue_figures(cfg.queue),
    }
    try:
        report["daemon"] = json.loads(runfiles.statusfile(cfg).read_text())
    except (OSError, ValueError):
        report["daemon"] = None
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"instance {cfg.instance}: {'running, pid ' + str(pid) if pid else 'not running'}")
        click.echo(
            "rules: "
            + (", ".join(f"{k} {'present' if v else 'absent'}" for k, v in report["rules"].items()) or "none")
        )  # type: ignore[union-attr]
        q = report["queue"]
        click.echo(
            f"queue {cfg.queue}: " + (" ".join(f"{k}={v}" for k, v in q.items()) if q else "not bound")
        )  # type: ignore[union-attr]
        d = report["daemon"]
        if d:
            c = d["counters"]  # type: ignore[index]
            click.echo("counters: " + " ".join(f"{k}={v}" for k, v in c.items() if k != "by_reason"))
            st = d["stand_ins"]  # type: ignore[index]
            click.echo("stand-ins: " + " ".join(f"{k}={v}" for k, v in st.items()))
            for line in _named_peer_lines(d.get("named_peers")):  # type: ignore[union-attr]
                click.echo(line)
            for part in ("tcp", "dns46"):
                figures = d.get(part)  # type: ignore[union-attr]
                if figures:
                    click.echo(f"{part}: " + " ".join(f"{k}={v}" for k, v in figures.items()))
    sys.exit(0 if pid is not None else EXIT_NOT_RUNNING)


@main.group("rules")
def rules_group() -> None:
    """Render, apply or remove sipnat46's own packet-filter rules."""


@rules_group.command("render")
@click.option("--nft", is_flag=True, help="Native nft syntax (kernels with the nft queue statement).")
@click.pass_context
def rules_render(ctx: click.Context, nft: bool) -> None:
    """Print the exact rules."""
    cfg = load_config(ctx)
    click.echo(rules.render_nft(cfg) if nft else rules.render(cfg), nl=False)


def _rules_change(ctx: click.Context, change, done_text: str, none_text: str) -> None:  # type: ignore[no-untyped-def]
    cfg = load_config(ctx)
    try:
        done = change(cfg)
    except Sipnat46Error as exc:
        fail(str(exc), EXIT_FAILED)
    click.echo(
        f"sipnat46: rules {done_text} (IPv{'/'.join(map(str, done))})" if done else f"sipnat46: {none_text}"
    )


@rules_group.command("apply")
@click.pass_context
def rules_apply(ctx: click.Context) -> None:
    """Install the rules (atomic per family, idempotent)."""
    _rules_change(ctx, rules.apply, "applied", "no rules applied")


@rules_group.command("remove")
@click.pass_context
def rules_remove(ctx: click.Context) -> None:
    """Remove the rules (atomic per family, idempotent; touches nothing else)."""
    _rules_change(ctx, rules.remove, "removed", "no rules to remove")


if __name__ == "__main__":  # pragma: no cover
    main()
