#!/usr/bin/env python3
"""Captures the sock_diag bytes the parser tests replay (src/sockdiag/fixtures/).

For each of TCP and UDP over IPv4 and IPv6 it makes one loopback connection with known
traffic, then saves, exactly as this kernel sent them:
  dump-{tcp,udp}{4,6}.bin     the dump reply message for the client's socket (TCP with
                              INET_DIAG_INFO: the client sent 1000 bytes and received 2000)
  destroy-{tcp,udp}{4,6}.bin  the SKNLGRP_*_DESTROY message for the client's socket
  done.bin                    the NLMSG_DONE that ends the TCPv4 dump
  error.bin                   the NLMSG_ERROR for a request with an unknown family
Run as any user: `python3 scripts/capture-sockdiag-fixtures.py`. Prints what it captured.
"""
import os, socket, struct, sys, time

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_INFO = 2
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 270, 1
# enum sknetlink_groups
DESTROY_GROUP = {
    (socket.AF_INET, socket.IPPROTO_TCP): 1,
    (socket.AF_INET, socket.IPPROTO_UDP): 2,
    (socket.AF_INET6, socket.IPPROTO_TCP): 3,
    (socket.AF_INET6, socket.IPPROTO_UDP): 4,
}
OUT = os.path.join(os.path.dirname(__file__), "..", "src", "sockdiag", "fixtures")


def request(family, protocol, ext, states, seq):
    # inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid.
    body = struct.pack("=BBBBI", family, protocol, ext, 0, states) + bytes(48)
    return struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY,
                       NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def messages(datagram):
    at = 0
    while at + 16 <= len(datagram):
        length, kind = struct.unpack_from("=IH", datagram, at)
        yield kind, datagram[at:at + length]
        at += (length + 3) & ~3


def sport_of(msg):
    return struct.unpack_from(">H", msg, 16 + 4)[0]


def save(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    print(f"{name}: {len(data)} bytes")


def connected_pair(family, kind):
    """A client socket with known traffic, and what must be closed with it."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    if kind == socket.SOCK_STREAM:
        listener = socket.socket(family, kind)
        listener.bind((host, 0))
        listener.listen(1)
        client = socket.socket(family, kind)
        client.connect(listener.getsockname()[:2])
        server, _ = listener.accept()
        client.sendall(b"c" * 1000)
        got = b""
        while len(got) < 1000:
            got += server.recv(4096)
        server.sendall(b"s" * 2000)
        got = b""
        while len(got) < 2000:
            got += client.recv(4096)
        time.sleep(0.05)  # every segment acknowledged
        return client, [server, listener]
    server = socket.socket(family, kind)
    server.bind((host, 0))
    client = socket.socket(family, kind)
    client.connect(server.getsockname()[:2])
    client.send(b"c" * 100)
    server.recv(4096)
    return client, [server]


def capture(family, kind, protocol, tag, dump, with_done):
    events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    events.bind((0, 0))
    events.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, DESTROY_GROUP[(family, protocol)])
    client, others = connected_pair(family, kind)
    port = client.getsockname()[1]
    print(f"{tag}: client port {port}")
    ext = 1 << (INET_DIAG_INFO - 1)
    dump.sendto(request(family, protocol, ext, 0xFFFFFFFF, 7), (0, 0))
    mine = done = None
    while done is None:
        for k, msg in messages(dump.recv(1 << 20)):
            if k == SOCK_DIAG_BY_FAMILY and sport_of(msg) == port:
                mine = msg
            elif k == NLMSG_DONE:
                done = msg
    save(f"dump-{tag}.bin", mine)
    if with_done:
        save("done.bin", done)
    client.close()
    for s in others:
        s.close()
    events.settimeout(2)
    while True:
        for k, msg in messages(events.recv(1 << 16)):
            if k == SOCK_DIAG_BY_FAMILY and sport_of(msg) == port:
                save(f"destroy-{tag}.bin", msg)
                return


def main():
    dump = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    for family, suffix in [(socket.AF_INET, "4"), (socket.AF_INET6, "6")]:
        capture(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "tcp" + suffix, dump,
                family == socket.AF_INET)
        capture(family, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "udp" + suffix, dump, False)
    dump.sendto(request(99, socket.IPPROTO_TCP, 0, 0xFFFFFFFF, 8), (0, 0))
    for kind, msg in messages(dump.recv(1 << 16)):
        if kind == NLMSG_ERROR:
            save("error.bin", msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
