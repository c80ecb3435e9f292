#!/usr/bin/env python3
"""Captures the sock_diag bytes the parser tests replay (src/sockdiag/fixtures/).

Makes one loopback TCP connection with known traffic (client sends 1000 bytes, server 2000),
then saves, exactly as this kernel sent them:
  dump-tcp4.bin     the dump reply message for the client's socket (with INET_DIAG_INFO)
  done.bin          the NLMSG_DONE that ends that dump
  error.bin         the NLMSG_ERROR for a request with an unknown family
  destroy-tcp4.bin  the SKNLGRP_INET_TCP_DESTROY message for the client's socket
Run as any user: `python3 scripts/capture-sockdiag-fixtures.py`. Prints what it captured.
"""
import os, socket, struct, sys, time

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_INFO = 2
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 270, 1
SKNLGRP_INET_TCP_DESTROY = 1
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


def main():
    events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    events.bind((0, 0))
    events.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, SKNLGRP_INET_TCP_DESTROY)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
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
    port = client.getsockname()[1]
    print(f"client port {port}, server port {listener.getsockname()[1]}")

    dump = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    dump.sendto(request(socket.AF_INET, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1),
                        0xFFFFFFFF, 7), (0, 0))
    mine = done = None
    while done is None:
        for kind, msg in messages(dump.recv(1 << 20)):
            if kind == SOCK_DIAG_BY_FAMILY and sport_of(msg) == port:
                mine = msg
            elif kind == NLMSG_DONE:
                done = msg
    save("dump-tcp4.bin", mine)
    save("done.bin", done)

    dump.sendto(request(99, socket.IPPROTO_TCP, 0, 0xFFFFFFFF, 8), (0, 0))
    for kind, msg in messages(dump.recv(1 << 16)):
        if kind == NLMSG_ERROR:
            save("error.bin", msg)

    client.close()
    server.close()
    events.settimeout(2)
    while True:
        for kind, msg in messages(events.recv(1 << 16)):
            if kind == SOCK_DIAG_BY_FAMILY and sport_of(msg) == port:
                save("destroy-tcp4.bin", msg)
                return 0


if __name__ == "__main__":
    sys.exit(main())
