/* The tables shared by the XDP program (relay.bpf.c) and its loader
 * (src/tables.rs mirrors every struct here, field for field; a test checks
 * the sizes). Addresses are in network byte order; an IPv4 address fills
 * the first 4 bytes of its 16 and the rest are zero. */
#ifndef IP2P_H
#define IP2P_H

#include <linux/types.h>

/* One direction of one channel, as the packet shows it: the address and
 * port it was sent to on this host (`local`), where it came from
 * (`remote`), and for ChannelData from a client its channel number. A
 * wildcard listener's entries have an all-zero `local` address. */
struct flow_key {
	__u8 local[16];
	__u8 remote[16];
	__be16 local_port;
	__be16 remote_port;
	__be16 channel; /* 0 in the peer table */
	__u8 family;    /* 4 or 6 */
	__u8 pad;
};

/* flow_out.flags: the peer is another allocation's relayed address on
 * this host (a pair of clients of this node). A client's packet on such a
 * channel goes straight to the other allocation's client when that one has
 * a live channel back (its own entry in from_peers, keyed by the two
 * relayed addresses); otherwise, and for a datagram arriving from such a
 * peer, the kernel decides. */
#define FLOW_HOST 1

/* What to make of a packet that matches: send it from `src` to `dst`,
 * stripping the ChannelData header (from a client) or prepending one with
 * `channel` (from a peer), until `deadline_ns` (CLOCK_MONOTONIC). An
 * all-zero `src` asks the kernel's FIB for the source address (a wildcard
 * listener). `slot` indexes the per-allocation counters. `in_ifindex` and
 * `in_checked_ns` are the program's own: the interface the FIB last found
 * the sender behind, and when (the loader writes zeros). */
struct flow_out {
	__u64 deadline_ns;
	__u8 src[16];
	__u8 dst[16];
	__be16 src_port;
	__be16 dst_port;
	__be16 channel; /* 0: strip the header (to a peer) */
	__u16 flags;    /* FLOW_HOST */
	__u32 slot;
	__u32 in_ifindex;
	__u64 in_checked_ns;
};

/* Packets and bytes (UDP payload as sent) per direction. */
struct flow_counters {
	__u64 packets[2]; /* [to peer, to client] */
	__u64 bytes[2];
};

/* What the program did with packets that matched an entry (per CPU). */
enum outcome {
	OUT_TO_PEER = 0,   /* forwarded client -> peer (a pair: counted both ways) */
	OUT_TO_CLIENT = 1, /* forwarded peer -> client */
	OUT_EXPIRED = 2,   /* entry past its deadline: passed */
	OUT_NO_ROUTE = 3,  /* FIB lookup failed or neighbour unknown: passed */
	OUT_TOO_BIG = 4,   /* over the egress MTU: passed */
	OUT_SPOOFED = 5,   /* its source is not reached back by its interface: passed */
	OUT_MAX = 6,
};

struct outcome_count {
	__u64 packets;
	__u64 bytes;
};

#endif
