"""Drives ip2p-relay with aioice's TURN client (a client we did not write).

Usage: aioice_turn.py HOST PORT USER PASSWORD udp|tcp|tls COUNT

Allocates over the given transport, sends COUNT datagrams through the relay
to a UDP echo peer on loopback, and prints "relayed N of COUNT" for those
that came back through the relay (aioice binds a channel on the first
send, so both Send indications and ChannelData are exercised). Bounded:
exits non-zero after 20 seconds.
"""

import asyncio
import ssl
import sys

from aioice import turn


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


class Collect(asyncio.DatagramProtocol):
    def __init__(self):
        self.received = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.received.put_nowait((data, addr))


async def main(host, port, user, password, kind, count):
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.2", 0))
    peer = echo.get_extra_info("sockname")
    context = None
    if kind == "tls":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    relay, collect = await turn.create_turn_endpoint(
        Collect,
        server_addr=(host, port),
        username=user,
        password=password,
        ssl=context,
        transport="udp" if kind == "udp" else "tcp",
    )
    print("relayed address", relay.get_extra_info("sockname"), flush=True)
    got = 0
    for i in range(count):
        payload = b"aioice %d" % i
        relay.sendto(payload, peer)
        data, addr = await asyncio.wait_for(collect.received.get(), 5)
        if data == payload and addr == peer:
            got += 1
    relay.close()
    echo.close()
    print("relayed %d of %d" % (got, count), flush=True)


if __name__ == "__main__":
    host, port, user, password, kind, count = sys.argv[1:7]
    asyncio.run(asyncio.wait_for(main(host, int(port), user, password, kind, int(count)), 20))
