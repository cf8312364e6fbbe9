#!/usr/bin/env python3
"""A lossy Ethernet bridge between two network interfaces, for the TCP-vs-UDP lab step.

Every frame that arrives on one interface is sent out of the other, except
that a fraction of the IPv4 frames (10% unless told) is dropped at random,
in each direction on its own. Two hosts joined through it see a lossy link:
their kernels' TCP retransmits what was lost, while UDP simply loses it.

Run it as root, in the network namespace that holds the two interfaces
(lib/tcp_vs_udp.ts does this with `ip netns exec`):

    python3 lib/lossy_bridge.py veth-a veth-b --loss 0.1 --seed 7

It prints one "bridging" line once both sockets are open, and on SIGTERM or
Ctrl-C one line per direction with what it forwarded and dropped.

Why Python and not Deno: reading and writing whole Ethernet frames takes an
AF_PACKET socket, which Deno cannot open. The Linux kernel here has no
sch_netem (the usual `tc qdisc ... netem loss 10%`) and no iptables, so the
loss has to come from a program in user space: this one.

Only the standard library is used.
"""

import argparse
import random
import select
import signal
import socket
import struct
import sys

# Socket option numbers from <linux/if_packet.h>; Python's socket module names none of them.
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_VNET_HDR = 15

# recvfrom() on an AF_PACKET socket says which way a frame went; frames we send ourselves come
# back to us marked "outgoing", and must not be sent on again.
PACKET_OUTGOING = 4

ETH_P_ALL = 0x0003  # every protocol, not only IP
ETH_P_IP = 0x0800  # the EtherType of an IPv4 frame

# Each frame comes with a 10-byte virtio-net header in front of it (see open_interface()).
VNET_HDR_BYTES = 10
# The largest frame to expect: a TCP "super-segment" of up to 64 KiB that the sender's kernel
# left for the network card to cut up (segmentation offload), plus headers.
MAX_FRAME_BYTES = 65536 + 1024


def open_interface(name):
    """Opens a raw socket that sends and receives whole Ethernet frames on interface `name`."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    # Ask for the virtio-net header on every frame, and give it back when sending. Linux lets a
    # sender leave the TCP/UDP checksum to "the card" (checksum offload): over a veth pair the
    # checksum is never filled in, and a frame passed on without saying so would be thrown away
    # by the receiver as corrupt. The header carries "checksum still to do" (and "to be cut into
    # segments") across our hands unchanged, so the kernel on the far side finishes the job.
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    sock.bind((name, 0))
    # Promiscuous: take frames addressed to any MAC address, not only this interface's own, as a
    # switch port does.
    index = socket.if_nametoindex(name)
    membership = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, membership)
    return sock


def is_ipv4(frame):
    """Whether a frame (after its virtio-net header) carries an IPv4 packet."""
    ethertype_at = VNET_HDR_BYTES + 12  # after the destination and source MAC addresses
    return frame[ethertype_at : ethertype_at + 2] == struct.pack("!H", ETH_P_IP)


class Direction:
    """One way across the bridge, with its own random generator and counters."""

    def __init__(self, source, target, name, loss, seed):
        self.source = source
        self.target = target
        self.name = name
        self.loss = loss
        # A generator per direction: which frames one way loses does not depend on how the
        # frames of the two ways happen to interleave.
        self.random = random.Random(seed)
        self.forwarded = 0
        self.dropped = 0
        self.passed = 0  # frames that are not IPv4 (ARP, IPv6): never dropped

    def carry_one(self):
        """Reads one frame from the source and sends it on, unless it is to be lost."""
        frame, (_, _, packet_type, _, _) = self.source.recvfrom(MAX_FRAME_BYTES)
        if packet_type == PACKET_OUTGOING:
            return  # one we sent out of this interface ourselves
        if not is_ipv4(frame):
            # ARP must get through, or a lost "who has 10.x.x.2?" would add a whole second
            # before the first message even leaves: the loss is meant for the messages.
            self.passed += 1
        elif self.random.random() < self.loss:
            self.dropped += 1
            return  # lost: the sender hears nothing, exactly as on a bad link
        else:
            self.forwarded += 1
        self.target.send(frame)

    def summary(self):
        return (
            f"{self.name}: forwarded {self.forwarded} IPv4 frames, dropped {self.dropped}"
            f" ({self.passed} other frames passed)"
        )


def stop(_signum, _frame):
    """SIGTERM ends the loop the same way Ctrl-C does, so the totals are still printed."""
    raise KeyboardInterrupt


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="first interface, e.g. veth-a")
    parser.add_argument("b", help="second interface, e.g. veth-b")
    parser.add_argument(
        "--loss", type=float, default=0.1, help="fraction of IPv4 frames to drop each way (default 0.1)"
    )
    parser.add_argument("--seed", type=int, help="seed for the random drops, to repeat a run")
    args = parser.parse_args()
    if not 0 <= args.loss <= 1:
        parser.error(f"--loss must be from 0 to 1, got {args.loss}")
    seed = args.seed if args.seed is not None else random.randrange(2**31)

    signal.signal(signal.SIGTERM, stop)
    a, b = open_interface(args.a), open_interface(args.b)
    ways = {
        a: Direction(a, b, f"{args.a} -> {args.b}", args.loss, seed),
        b: Direction(b, a, f"{args.b} -> {args.a}", args.loss, seed + 1),
    }
    print(
        f"bridging {args.a} <-> {args.b}, dropping {args.loss * 100:g}% of IPv4 frames each way"
        f" (seed {seed})",
        flush=True,
    )
    try:
        while True:
            # Wait until either interface has a frame, then carry it across.
            ready, _, _ = select.select([a, b], [], [])
            for sock in ready:
                ways[sock].carry_one()
    except KeyboardInterrupt:
        pass
    finally:
        for way in ways.values():
            print(way.summary(), flush=True)
        a.close()
        b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
