#!/usr/bin/env python3
"""A lossy Ethernet bridge between two network interfaces, for the TCP-vs-UDP lab step.

Every frame that arrives on one interface is sent out of the other, except
that a fraction of the IPv4 frames (10% unless told) is dropped at random,
in each direction on its own. Two hosts joined through it see a lossy link:
their kernels' TCP retransmits what was lost, while UDP simply loses it.

With `--delay-ms N` every frame that survives is also held back N ms in
each direction (so a round trip takes 2N ms more), in order, as a long
cable would: a slow, lossy link such as `tc qdisc ... netem delay 100ms
loss 5%` gives (bench/p2p_badnet.ts uses it so). Without it, frames go on at
once, as before.

Run it as root, in the network namespace that holds the two interfaces
(lib/tcp_vs_udp.ts does this with `ip netns exec`):

    python3 lib/lossy_bridge.py veth-a veth-b --loss 0.1 --seed 7
    python3 lib/lossy_bridge.py veth-a veth-b --loss 0.05 --delay-ms 100

It prints one "bridging" line once both sockets are open, and on SIGTERM or
Ctrl-C one line per direction with what it forwarded and dropped.

Why Python and not Deno: reading and writing whole Ethernet frames takes an
AF_PACKET socket, which Deno cannot open. The Linux kernel here has no
sch_netem (the usual `tc qdisc ... netem loss 10%`) and no iptables, so the
loss has to come from a program in user space: this one.

Only the standard library is used.
"""

import argparse
import collections
import random
import select
import signal
import socket
import struct
import sys
import time

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
# With --delay-ms, the most bytes one direction may hold waiting out the delay: a router's buffer.
# A frame that would go over it is dropped and counted as "overflowed", as a full queue drops.
# 32 MiB held for 100 ms is 320 MB/s, more than a link this script can carry anyway.
MAX_QUEUED_BYTES = 32 * 1024 * 1024


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
    """One way across the bridge, with its own random generator, counters and delay queue."""

    def __init__(self, source, target, name, loss, seed, delay=0.0):
        self.source = source
        self.target = target
        self.name = name
        self.loss = loss
        self.delay = delay  # seconds each frame is held back; 0 sends it on at once
        # A generator per direction: which frames one way loses does not depend on how the
        # frames of the two ways happen to interleave.
        self.random = random.Random(seed)
        self.forwarded = 0
        self.dropped = 0
        self.passed = 0  # frames that are not IPv4 (ARP, IPv6): never dropped
        self.overflowed = 0  # frames dropped because the delay queue was full
        # Frames waiting out the delay, oldest first, with the monotonic time each is due: every
        # frame waits the same time, so the queue stays in arrival order and the link keeps order.
        self.queue = collections.deque()
        self.queued_bytes = 0

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
        if self.delay == 0:
            self.target.send(frame)
            return
        # Loss first, then delay: a dropped frame never takes room in the queue.
        if self.queued_bytes + len(frame) > MAX_QUEUED_BYTES:
            self.overflowed += 1
            return
        self.queue.append((time.monotonic() + self.delay, frame))
        self.queued_bytes += len(frame)

    def release_due(self, now):
        """Sends every queued frame whose delay is over; returns seconds until the next is due."""
        while self.queue and self.queue[0][0] <= now:
            _, frame = self.queue.popleft()
            self.queued_bytes -= len(frame)
            try:
                self.target.send(frame)
            except OSError:
                # The interface's own queue is full (ENOBUFS): a real link loses the frame too.
                self.overflowed += 1
        return self.queue[0][0] - now if self.queue else None

    def summary(self):
        line = (
            f"{self.name}: forwarded {self.forwarded} IPv4 frames, dropped {self.dropped}"
            f" ({self.passed} other frames passed)"
        )
        if self.delay:
            line += f", each held {self.delay * 1000:g} ms; {self.overflowed} overflowed the queue"
        return line


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
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0,
        help="milliseconds every frame is held back, each way (default 0: sent on at once)",
    )
    args = parser.parse_args()
    if not 0 <= args.loss <= 1:
        parser.error(f"--loss must be from 0 to 1, got {args.loss}")
    if not 0 <= args.delay_ms <= 60_000:
        parser.error(f"--delay-ms must be from 0 to 60000, got {args.delay_ms:g}")
    delay = args.delay_ms / 1000
    seed = args.seed if args.seed is not None else random.randrange(2**31)

    signal.signal(signal.SIGTERM, stop)
    a, b = open_interface(args.a), open_interface(args.b)
    ways = {
        a: Direction(a, b, f"{args.a} -> {args.b}", args.loss, seed, delay),
        b: Direction(b, a, f"{args.b} -> {args.a}", args.loss, seed + 1, delay),
    }
    delayed = f", holding every frame {args.delay_ms:g} ms each way" if delay else ""
    print(
        f"bridging {args.a} <-> {args.b}, dropping {args.loss * 100:g}% of IPv4 frames each way"
        f"{delayed} (seed {seed})",
        flush=True,
    )
    try:
        timeout = None  # no frame waiting: sleep until one arrives
        while True:
            # Wait until either interface has a frame (or a delayed one is due), carry it across.
            ready, _, _ = select.select([a, b], [], [], timeout)
            for sock in ready:
                ways[sock].carry_one()
            if delay:
                now = time.monotonic()
                waits = [w for w in (way.release_due(now) for way in ways.values()) if w is not None]
                timeout = min(waits) if waits else None
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
