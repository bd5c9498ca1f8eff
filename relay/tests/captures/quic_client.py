"""Sends a real aioquic client's first flight to HOST:PORT and exits: used by make.sh to capture QUIC v2 and
multi-datagram ClientHellos (aioquic's quantum_readiness_test adds a 1200-byte extension, as a post-quantum
key share would). No server needs to answer."""

import argparse
import asyncio

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicProtocolVersion


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--sni", required=True)
    p.add_argument("--version", choices=["1", "2"], default="1")
    p.add_argument("--alpn", default="h3")
    p.add_argument("--big", action="store_true", help="pad the ClientHello past one datagram")
    args = p.parse_args()
    version = QuicProtocolVersion.VERSION_2 if args.version == "2" else QuicProtocolVersion.VERSION_1
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=args.alpn.split(","),
        server_name=args.sni,
        original_version=version,
        supported_versions=[version],
        quantum_readiness_test=args.big,
    )
    try:
        async with connect(args.host, args.port, configuration=config, wait_connected=True):
            pass
    except Exception:
        pass


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(), timeout=0.4))
    except (asyncio.TimeoutError, TimeoutError):
        pass
