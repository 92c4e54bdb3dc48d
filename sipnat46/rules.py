"""Render, apply and remove sipnat46's packet-filter rules (I/O shell).

Rules live in a chain of our own per instance, jumped to from the netfilter hooks of the
placement; every jump carries a comment tag, so apply/remove touch nothing else. Each
family is changed in one iptables-restore transaction (atomic), and both operations are
idempotent.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from .config import Config
from .emit import EMIT_MARK  # packets sipnat46 sends itself; never queued again
from .errors import RulesError

# gateway: FORWARD for fixups; INPUT for what is addressed to the box itself (the peers'
# messages to its IPv6 SIP address, the PBX's messages to stand-ins made local below).
HOOKS = {"gateway": ("FORWARD", "INPUT"), "host": ("OUTPUT", "INPUT")}
# The stream proxy: gateway TPROXY (mangle PREROUTING); host REDIRECT (nat OUTPUT for the
# PBX's own connections, nat PREROUTING for connections to it).
TCP_HOOKS = {"gateway": ("mangle", ("PREROUTING",)), "host": ("nat", ("OUTPUT", "PREROUTING"))}
TOOLS = {4: ("iptables-save", "iptables-restore"), 6: ("ip6tables-save", "ip6tables-restore")}


@dataclass(frozen=True)
class Layer:
    """One chain of ours in one table, with the hooks that jump to it."""

    table: str
    chain: str
    hooks: tuple[str, ...]
    template: str


def layers(cfg: Config) -> list[Layer]:
    out = [Layer("filter", chain_name(cfg), HOOKS[cfg.placement], "chain.iptables.tmpl")]
    if cfg.tcp.enabled:
        table, tcp_hooks = TCP_HOOKS[cfg.placement]
        out.append(Layer(table, f"S46T-{cfg.instance}"[:28], tcp_hooks, f"tcp-{cfg.placement}.iptables.tmpl"))
    return out


def divert_mark(cfg: Config) -> int:
    """The mark (and routing table) of the proxy's diverted packets: one per instance."""
    return 0x460000 + cfg.queue


def _template(name: str) -> Template:
    """A template from the installed package data, else from the source tree's rules/."""
    try:
        text = resources.files("sipnat46.templates").joinpath(name).read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        text = (Path(__file__).resolve().parent.parent / "rules" / name).read_text()
    return Template(text)


def chain_name(cfg: Config) -> str:
    return f"S46-{cfg.instance}"[:28]


def tag(cfg: Config) -> str:
    return f"sipnat46:{cfg.instance}"


def hooks(cfg: Config) -> tuple[str, ...]:
    return HOOKS[cfg.placement]


def render_chain(cfg: Config, family: int, layer: Layer | None = None) -> str:
    layer = layer or layers(cfg)[0]
    ports = cfg.sip_ports + (cfg.tcp.tls_ports if layer.table != "filter" else ())
    return _template(layer.template).substitute(
        instance=cfg.instance,
        placement=cfg.placement,
        family=family,
        ports=",".join(str(p) for p in dict.fromkeys(ports)),
        queue=cfg.queue,
        chain=layer.chain,
        tag=tag(cfg),
        mark=hex(EMIT_MARK),
        divert=hex(divert_mark(cfg)),
        table=divert_mark(cfg),
        proxy_port=cfg.tcp.proxy_port,
    )


def jump_rule(cfg: Config, hook: str, layer: Layer | None = None) -> str:
    chain = layer.chain if layer is not None else chain_name(cfg)
    return f'-I {hook} 1 -m comment --comment "{tag(cfg)}" -j {chain}'


def stand_in_routes(cfg: Config) -> list[str]:
    """Prefixes made local on a gateway so the PBX's packets to stand-ins reach INPUT (and
    the queue) instead of being dropped for want of a route."""
    if cfg.placement != "gateway":
        return []
    nets = [str(cfg.pool)] if cfg.pool is not None else []
    nets += [
        f"{p.stand_in}/32"
        for p in cfg.peers
        if p.stand_in is not None and (cfg.pool is None or p.stand_in not in cfg.pool)
    ]
    return nets


def divert_routes(cfg: Config) -> list[tuple[int, str, list[str]]]:
    """Policy routing that delivers the proxy's diverted packets locally (gateway + TCP):
    (family, "rule" or "route", arguments after the verb)."""
    if cfg.placement != "gateway" or not cfg.tcp.enabled:
        return []
    mark, table = hex(divert_mark(cfg)), str(divert_mark(cfg))
    out = []
    for fam, anynet in ((4, "0.0.0.0/0"), (6, "::/0")):
        out.append((fam, "rule", ["fwmark", mark, "lookup", table]))
        out.append((fam, "route", ["local", anynet, "dev", "lo", "table", table]))
    return out


_INSTALL = {"rule": "add", "route": "replace"}  # ip rule has no replace: a stale one goes first


def _ip(fam: int, kind: str, verb: str, args: list[str]) -> list[str]:
    return ["ip", f"-{fam}", kind, verb, *args]


def _routes(verb: str, cfg: Config) -> None:
    for net in stand_in_routes(cfg):
        res = _run(["ip", "route", verb, "local", net, "dev", "lo", "table", "local"])
        if res.returncode != 0 and verb != "del":
            raise RulesError(f"ip route {verb} local {net}: {res.stderr.strip()}")
    for fam, kind, args in divert_routes(cfg):
        if verb == "del":
            for _ in range(16):  # an ip rule can be added twice: delete until none is left
                if _run(_ip(fam, kind, "del", args)).returncode:
                    break
            continue
        if kind == "rule":
            _run(_ip(fam, kind, "del", args))  # never two of the same rule
        cmd = _ip(fam, kind, _INSTALL[kind], args)
        res = _run(cmd)
        ipv6_off = fam == 6 and ("disabled" in res.stderr.lower() or "not supported" in res.stderr.lower())
        if res.returncode != 0 and not ipv6_off:  # a box without IPv6 has no IPv6 to divert
            raise RulesError(f"{' '.join(cmd)}: {res.stderr.strip()}")


def render(cfg: Config) -> str:
    """The exact rules, both families, as `rules apply` would install them."""
    out = [f"### ip route replace local {net} dev lo table local\n" for net in stand_in_routes(cfg)]
    out += [
        f"### {' '.join(_ip(fam, kind, _INSTALL[kind], args))}\n" for fam, kind, args in divert_routes(cfg)
    ]
    for family in (4, 6):
        for layer in layers(cfg):
            body = render_chain(cfg, family, layer).rstrip("\n").split("\n")
            commit = body.pop()  # COMMIT
            body += [jump_rule(cfg, h, layer) for h in layer.hooks]
            out.append(f"### {TOOLS[family][1]} --noflush\n" + "\n".join([*body, commit]) + "\n")
    return "\n".join(out)


def render_nft(cfg: Config) -> str:
    prio = {"FORWARD": "forward", "OUTPUT": "output", "INPUT": "input"}
    hook_chains = "\n".join(
        f"    chain {h.lower()} {{\n        type filter hook {prio[h]} priority 0; policy accept;\n"
        f"        jump sip\n    }}"
        for h in hooks(cfg)
    )
    return _template("sipnat46.nft.tmpl").substitute(
        instance=cfg.instance,
        placement=cfg.placement,
        ports_nft=", ".join(str(p) for p in cfg.sip_ports),
        queue=cfg.queue,
        chain=chain_name(cfg).replace("-", "_"),
        mark=hex(EMIT_MARK),
        hooks=hook_chains,
    )


@dataclass
class FamilyState:
    family: int
    available: bool
    chain: bool = False
    jumps: tuple[str, ...] = ()  # iptables-save lines (-A HOOK ...) of our jumps


def _run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RulesError(f"{cmd[0]}: {exc}") from None


def state(cfg: Config, family: int, layer: Layer | None = None) -> FamilyState:
    layer = layer or layers(cfg)[0]
    save, _ = TOOLS[family]
    if shutil.which(save) is None:
        return FamilyState(family, False)
    res = _run([save, "-t", layer.table])
    if res.returncode != 0:
        return FamilyState(family, False)  # e.g. a kernel without IPv6
    chain = layer.chain
    lines = res.stdout.splitlines()
    has_chain = any(line.startswith(f":{chain} ") for line in lines)
    jumps = tuple(
        line
        for line in lines
        if line.startswith("-A ") and f"-j {chain}" in line.split("--comment", 1)[-1] and tag(cfg) in line
    )
    return FamilyState(family, True, has_chain, jumps)


def _restore(family: int, script: str) -> None:
    _, restore = TOOLS[family]
    res = _run([restore, "--noflush"], script)
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        raise RulesError(f"{restore}: {msg[-1] if msg else 'failed'}")


def apply(cfg: Config) -> list[int]:
    """Install (or refresh) the rules; returns the families done. Atomic per family and table."""
    done = []
    for family in (4, 6):
        for i, layer in enumerate(layers(cfg)):
            st = state(cfg, family, layer)
            if not st.available:
                continue
            lines = render_chain(cfg, family, layer).rstrip("\n").split("\n")
            commit = lines.pop()
            present = {j.split()[1] for j in st.jumps}
            lines += [jump_rule(cfg, h, layer) for h in layer.hooks if h not in present]
            _restore(family, "\n".join([*lines, commit]) + "\n")
            if i == 0:
                done.append(family)
    if 4 not in done:
        raise RulesError("iptables is not usable: cannot install the IPv4 rules")
    _routes("replace", cfg)
    return done


def remove(cfg: Config) -> list[int]:
    """Remove our jumps and chains; nothing else is touched. Atomic per family, idempotent."""
    _routes("del", cfg)
    done = []
    for family in (4, 6):
        for layer in layers(cfg):
            st = state(cfg, family, layer)
            if not st.available or not (st.chain or st.jumps):
                continue
            lines = [f"*{layer.table}"]
            lines += ["-D" + j[2:] for j in st.jumps]
            if st.chain:
                lines += [f"-F {layer.chain}", f"-X {layer.chain}"]
            _restore(family, "\n".join([*lines, "COMMIT"]) + "\n")
            if family not in done:
                done.append(family)
    return done


def present(cfg: Config) -> dict[int, bool]:
    out = {}
    for f in (4, 6):
        states = [state(cfg, f, layer) for layer in layers(cfg)]
        if states[0].available:
            out[f] = all(s.chain and bool(s.jumps) for s in states if s.available)
    return out
