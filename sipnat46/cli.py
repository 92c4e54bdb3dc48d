"""The ``sipnat46`` command line (click). Errors are one line on stderr and exit 2."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from . import config as config_mod
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
        return config_mod.load(path)
    except Sipnat46Error as exc:
        fail(f"config: {exc}")


def make_rewriter(cfg: config_mod.Config) -> Rewriter:
    media = MediaSessions(*cfg.media_ports) if cfg.relay != "off" else None
    return Rewriter(
        cfg.address_plan(), egress_lookup=RouteCache(), media=media, relay_inside=cfg.relay_inside
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.version_option(package_name="sipnat46")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """sipnat46: rewrite SIP/SDP addresses to the family and address each message leaves by."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path


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


if __name__ == "__main__":  # pragma: no cover
    main()
