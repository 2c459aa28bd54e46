"""Debian's ``dnsmasq`` as the tests' DNS server: 127.0.0.1 on an ephemeral port, answering
from a hosts file that a test rewrites (``set``) and dnsmasq re-reads on SIGHUP.

Names not in the file get NXDOMAIN (``--address=/#/``), as a headless Service with no ready
pod does; a name with only IPv4 addresses gets NODATA for AAAA. Every answer carries the TTL
given (``--local-ttl``). Started and stopped by PID.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from tests.support.net import free_port
from tests.support.tools import require


def free_udp_and_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq listens on both)."""
    return free_port(udp_too=True)


class DnsServer:
    """``DnsServer({"svc.test": ["127.0.0.2"]}, ttl=1)``; ``address`` is ``127.0.0.1:<port>``
    (an ``LB_RESOLVER`` value); ``set(...)`` replaces every name; ``stop()``/``start()``."""

    def __init__(
        self,
        names: Mapping[str, Sequence[str]] | None = None,
        *,
        ttl: int = 1,
        args: Sequence[str] = (),
        catch_all: bool = True,
        log: Path | None = None,
    ) -> None:
        """``args``: more dnsmasq options (``--host-record=name,addr,ttl``, ``--server=``...;
        with ``--dnssec``, dnsmasq's cache is kept, which it needs); ``catch_all=False``:
        a name dnsmasq knows nothing of gets REFUSED (it has no upstream) instead of
        NXDOMAIN; ``log``: every query is written to that file (``--log-queries``)."""
        self.binary = require("dnsmasq")
        self.ttl = ttl
        self.args = list(args)
        self.catch_all = catch_all
        self.log = log
        self.dir = Path(tempfile.mkdtemp(prefix="lb-dns-"))
        self.hosts = self.dir / "hosts"
        self.port = free_udp_and_tcp_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._write(names or {})
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [
            self.binary, "--keep-in-foreground", f"--port={self.port}",
            "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
            f"--addn-hosts={self.hosts}", f"--local-ttl={self.ttl}", "--user=root",
            "--pid-file=",
        ]  # fmt: skip
        argv += ["--address=/#/"] if self.catch_all else []
        argv += [] if "--dnssec" in self.args else ["--cache-size=0"]
        argv += (
            [f"--log-facility={self.log}", "--log-queries"] if self.log else ["--log-facility=-"]
        )
        argv += self.args
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while self.rcode("ready.invalid") is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq on port {self.port} did not start")
            time.sleep(0.05)

    def set(self, names: Mapping[str, Sequence[str]]) -> float:
        """Answer ``names`` from now on (every other name: NXDOMAIN); the monotonic time at
        which dnsmasq was told (the SIGHUP)."""
        self._write(names)
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
        told = time.monotonic()
        # dnsmasq re-reads the file from its main loop: wait until it answers the new way
        probe = next(iter(names), None)
        deadline = time.monotonic() + 5
        while probe and self.rcode(probe) != dns.rcode.NOERROR and time.monotonic() < deadline:
            time.sleep(0.01)
        return told

    def rcode(self, name: str) -> int | None:
        """The rcode of an A query for ``name``, or None if nothing answered in 0.5 s."""
        try:
            answer = dns.query.udp(
                dns.message.make_query(name, "A"), "127.0.0.1", port=self.port, timeout=0.5
            )
        except (dns.exception.Timeout, OSError):
            return None
        return answer.rcode()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _write(self, names: Mapping[str, Sequence[str]]) -> None:
        lines = [f"{address} {name}" for name, addresses in names.items() for address in addresses]
        temporary = self.hosts.with_suffix(".new")
        temporary.write_text("".join(line + "\n" for line in lines))
        temporary.replace(self.hosts)
