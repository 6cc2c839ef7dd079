// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * ip2p's XDP fast path: relays ChannelData on bound channels without the
 * socket stack, both ways, for IPv4 and IPv6.
 *
 *   client -> peer: a UDP datagram to a listen address whose payload is
 *     exactly one ChannelData message (no padding) on a channel in
 *     `from_clients` loses its 4-byte header and leaves from the
 *     allocation's relayed address to the peer;
 *   peer -> client: a UDP datagram to a relayed address from a peer in
 *     `from_peers` gains the ChannelData header and leaves from the listen
 *     address to the client;
 *   client -> client: ChannelData from a client whose channel's peer is
 *     another allocation's relayed address here (FLOW_HOST), when that
 *     allocation has a live channel back, keeps its header with that
 *     channel's number and leaves from the listen address to its client
 *     (what the relay's short-circuit does in user space).
 *
 * Everything else goes to the kernel untouched (XDP_PASS): STUN, Send and
 * Data indications, unknown or expired entries, padded or malformed
 * ChannelData, IP options, IPv6 extension headers, fragments, a UDP
 * datagram without a checksum, packets over the egress MTU, anything the
 * FIB cannot route, and a packet whose source the FIB would not reach back
 * through the interface it came in by (strict reverse-path filtering, as
 * the kernel's rp_filter=1 does: a spoofed source is the kernel's to
 * judge). It never drops: the relay ports can overlap the host's ephemeral
 * ports.
 *
 * A relayed packet is the relay's own: it carries the sender's ECN bits
 * but not its DSCP (nor, for IPv6, its flow label), and the route it takes
 * does not depend on them.
 *
 * The worker that owns an allocation writes its entries (src/tables.rs);
 * the deadline in each entry is the earlier of the channel's and the
 * permission's expiry, so a lapsed entry sends its packets to user space,
 * which expires the state as it always does; the allocation's end removes
 * its entries, and the worker removes lapsed ones.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "ip2p.h"

/* Linux 6.7: the FIB lookup fills in the source address (a wildcard
 * listener's). Older kernels refuse the flag, and those packets pass. */
#ifndef BPF_FIB_LOOKUP_SRC
#define BPF_FIB_LOOKUP_SRC (1U << 4)
#endif

#define AF_INET 2
#define AF_INET6 10
#define TTL 64
#define CHANNEL_HEADER 4

/* What happens to the ChannelData header. */
enum mode {
	TO_CLIENT, /* prepended */
	TO_PEER,   /* stripped */
	ACROSS,    /* its channel number replaced (client -> client) */
};

/* Every FIB lookup names loopback as the packet's way in, as the kernel
 * does for a packet the host sends itself (a relayed packet is the
 * relay's own): policy rules for local traffic apply, and the lookup
 * answers because forwarding is on for lo, the one interface the kernel's
 * lookup for XDP needs it on (lo routes nothing: what arrives there is
 * the host's). The interfaces packets really arrive by need not forward,
 * so the host routes nothing for its neighbours. */
#define LOOPBACK_IFINDEX 1

/* Sizes are set by the loader before the maps are created. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct flow_key);
	__type(value, struct flow_out);
} from_clients SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct flow_key);
	__type(value, struct flow_out);
} from_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OUT_MAX);
	__type(key, __u32);
	__type(value, struct outcome_count);
} outcomes SEC(".maps");

struct hdr4 {
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
} __attribute__((packed));

struct hdr6 {
	struct ethhdr eth;
	struct ipv6hdr ip;
	struct udphdr udp;
} __attribute__((packed));

static __always_inline void count(__u32 what, __u64 bytes)
{
	struct outcome_count *c = bpf_map_lookup_elem(&outcomes, &what);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline void count_flow(__u32 slot, int dir, __u64 bytes)
{
	struct flow_counters *c = bpf_map_lookup_elem(&counters, &slot);

	if (c) {
		c->packets[dir]++;
		c->bytes[dir] += bytes;
	}
}

static __always_inline __u16 fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* The sum of `n` 16-bit words as they lie in memory (RFC 1071: the one's
 * complement sum does not care about byte order as long as the result is
 * stored the same way). */
static __always_inline __u64 words(const void *p, int n)
{
	const __u16 *w = p;
	__u64 sum = 0;

#pragma unroll
	for (int i = 0; i < n; i++)
		sum += w[i];
	return sum;
}

/* RFC 1624: a checksum over fields whose old words summed to `removed` and
 * whose new words sum to `added`. */
static __always_inline __u16 csum_update(__u16 check, __u64 removed, __u64 added)
{
	__u64 sum = (__u16)~check;

	sum += (__u16)~fold(removed);
	sum += fold(added);
	return ~fold(sum);
}

/* The words of the ChannelData header that carries `len` bytes. */
static __always_inline __u64 channel_header_words(__be16 channel, __u32 len)
{
	return (__u16)channel + (__u16)bpf_htons(len);
}

/* Adds the checksum words of the ChannelData header that goes (to a peer),
 * comes (to a client) or changes its number (between clients) to `removed`
 * and `added`. Non-zero if the payload is not there after all. */
static __always_inline int header_change(int mode, void *payload, void *end, __be16 channel, __u32 len,
					 __u64 *removed, __u64 *added)
{
	if (mode == TO_CLIENT) {
		*added += channel_header_words(channel, len);
		return 0;
	}
	if (payload + CHANNEL_HEADER > end)
		return 1;
	if (mode == TO_PEER) {
		*removed += words(payload, 2);
	} else {
		*removed += words(payload, 1);
		*added += (__u16)channel;
	}
	return 0;
}

/* The entry for a ChannelData datagram from a client, or for a datagram
 * from a peer. A wildcard listener's entries have no local address. */
static __always_inline struct flow_out *lookup(struct flow_key *key, int from_client)
{
	struct flow_out *out;
	__u8 local[16];

	if (!from_client)
		return bpf_map_lookup_elem(&from_peers, key);
	out = bpf_map_lookup_elem(&from_clients, key);
	if (out)
		return out;
	__builtin_memcpy(local, key->local, 16);
	__builtin_memset(key->local, 0, 16);
	out = bpf_map_lookup_elem(&from_clients, key);
	__builtin_memcpy(key->local, local, 16);
	return out;
}

/* The channel number of a payload that is exactly one ChannelData message,
 * in network byte order; 0 for anything else. */
static __always_inline __be16 channel_of(__u8 *payload, void *end, __u32 len)
{
	if (len < CHANNEL_HEADER || (void *)(payload + CHANNEL_HEADER) > end)
		return 0;
	/* RFC 8656 channels are 0x4000-0x4FFF; RFC 5766 allowed up to 0x7FFF
	 * (`allocation.channel_numbers`). The table says which are bound. */
	if (payload[0] < 0x40 || payload[0] > 0x7f)
		return 0;
	if (((__u32)payload[2] << 8 | payload[3]) + CHANNEL_HEADER != len)
		return 0;
	return *(__be16 *)payload;
}

/* After the FIB lookup: out of the interface it came in by, or another. */
static __always_inline int send(struct xdp_md *ctx, __u32 ifindex)
{
	if (ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(ifindex, 0);
}

static __always_inline int fib_failed(long rc)
{
	if (rc == BPF_FIB_LKUP_RET_SUCCESS)
		return 0;
	count(rc == BPF_FIB_LKUP_RET_FRAG_NEEDED ? OUT_TOO_BIG : OUT_NO_ROUTE, 0);
	return 1;
}

/* How long the program trusts its last finding of the interface a sender
 * is behind before it asks the FIB again. */
#define RECHECK_NS 1000000000ULL

/* Strict reverse-path filtering: the FIB's route back to the packet's
 * source `saddr` (from `daddr`) leaves by the interface the packet came in
 * by (a route whose neighbour is not resolved yet still says which). No
 * route back counts as no route; another interface, as spoofed. With
 * multipath routes the one nexthop the lookup picks must be the ingress's:
 * stricter than the kernel, and what it refuses the sockets still take.
 * The finding is kept in the sender's entry `out` for RECHECK_NS: a
 * packet from the same interface within it costs no lookup. */
static __always_inline int source_ok(struct xdp_md *ctx, struct flow_out *out, __u64 now, struct flow_key *key)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	if (out->in_ifindex == ctx->ingress_ifindex && now - out->in_checked_ns < RECHECK_NS)
		return 1;
	fib.l4_protocol = IPPROTO_UDP;
	fib.ifindex = LOOPBACK_IFINDEX;
	if (key->family == 4) {
		fib.family = AF_INET;
		__builtin_memcpy(&fib.ipv4_dst, key->remote, 4);
		__builtin_memcpy(&fib.ipv4_src, key->local, 4);
	} else {
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_dst, key->remote, 16);
		__builtin_memcpy(fib.ipv6_src, key->local, 16);
	}
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) {
		count(OUT_NO_ROUTE, 0);
		return 0;
	}
	if (fib.ifindex != ctx->ingress_ifindex) {
		count(OUT_SPOOFED, 0);
		return 0;
	}
	out->in_ifindex = ctx->ingress_ifindex;
	out->in_checked_ns = now;
	return 1;
}

/* The live entry for a datagram whose key has its addresses and ports, and
 * what to do with its ChannelData header (`*mode`): a client's ChannelData
 * to a peer, a peer's datagram, or a client's ChannelData to another
 * allocation's client here (the entry returned is then that allocation's,
 * and `*from_slot` the sender's counter slot). NULL for anything else, and
 * for an entry past its deadline (counted). */
static __always_inline struct flow_out *match(struct xdp_md *ctx, struct flow_key *key, __u8 *payload, void *end,
					      __u32 len, int *mode, __u32 *from_slot)
{
	__be16 channel = channel_of(payload, end, len);
	struct flow_out *out = 0;
	__u64 now;

	if (channel) {
		key->channel = channel;
		out = lookup(key, 1);
	}
	*mode = out ? TO_PEER : TO_CLIENT;
	if (!out) {
		key->channel = 0;
		out = lookup(key, 0);
	}
	if (!out)
		return 0;
	now = bpf_ktime_get_ns();
	if (now >= out->deadline_ns)
		goto expired;
	/* The sender's source, judged (and the finding kept) in its own entry. */
	if (!source_ok(ctx, out, now, key))
		return 0;
	if (!(out->flags & FLOW_HOST))
		return out;
	/* A peer that is another relayed address here. Arriving from it on
	 * the wire (not how the relay sends between its own addresses), the
	 * kernel decides. */
	if (*mode != TO_PEER)
		return 0;
	/* The other allocation's entry for datagrams from this one. */
	*from_slot = out->slot;
	__builtin_memcpy(key->local, out->dst, 16);
	__builtin_memcpy(key->remote, out->src, 16);
	key->local_port = out->dst_port;
	key->remote_port = out->src_port;
	key->channel = 0;
	out = bpf_map_lookup_elem(&from_peers, key);
	/* Without its channel back (a permission alone: a Data indication),
	 * or with one that is not this pair's, the kernel decides. */
	if (!out || !(out->flags & FLOW_HOST))
		return 0;
	if (now >= out->deadline_ns)
		goto expired;
	*mode = ACROSS;
	return out;
expired:
	count(OUT_EXPIRED, 0);
	return 0;
}

/* Moves the frame's start by the ChannelData header (dropped going to a
 * peer, made room for going to a client, kept between clients), writes the
 * rewritten headers `n` (`size` bytes) and the ChannelData header, counts,
 * and sends it. */
static __always_inline int emit(struct xdp_md *ctx, const void *n, __u32 size, struct flow_out *out, int mode,
				__u32 from_slot, __u32 len, __u32 ifindex)
{
	void *data, *end;
	/* Payload bytes, as the socket path counts them. */
	__u32 payload = mode == TO_CLIENT ? len : len - CHANNEL_HEADER;
	__be16 *header;

	if (mode != ACROSS && bpf_xdp_adjust_head(ctx, mode == TO_PEER ? CHANNEL_HEADER : -CHANNEL_HEADER))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	/* Always true (the frame had the headers and, going to a client, has
	 * room for the ChannelData header now), but the verifier must see it. */
	if (data + size > end)
		return XDP_ABORTED;
	__builtin_memcpy(data, n, size);
	if (mode != TO_PEER) {
		header = data + size;
		if ((void *)(header + 2) > end)
			return XDP_ABORTED;
		header[0] = out->channel;
		if (mode == TO_CLIENT)
			header[1] = bpf_htons(len);
	}
	if (mode != TO_CLIENT) {
		count(OUT_TO_PEER, payload);
		count_flow(mode == ACROSS ? from_slot : out->slot, 0, payload);
	}
	if (mode != TO_PEER) {
		count(OUT_TO_CLIENT, payload);
		count_flow(out->slot, 1, payload);
	}
	return send(ctx, ifindex);
}

static __always_inline int relay_v4(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct hdr4 *h = data;
	struct flow_key key = {};
	struct bpf_fib_lookup fib = {};
	struct flow_out *out;
	struct hdr4 n;
	__u32 ip_len, len, new_len, from_slot = 0;
	__u64 removed, added;
	__be16 new_udp_len;
	int mode;

	if ((void *)(h + 1) > end)
		return XDP_PASS;
	if (h->ip.version != 4 || h->ip.ihl != 5 || h->ip.protocol != IPPROTO_UDP)
		return XDP_PASS;
	if (h->ip.frag_off & bpf_htons(0x3fff))
		return XDP_PASS;
	/* The kernel drops a bad header checksum; a fresh one must not hide it. */
	if (fold(words(&h->ip, sizeof(struct iphdr) / 2)) != 0xffff)
		return XDP_PASS;
	ip_len = bpf_ntohs(h->ip.tot_len);
	if ((void *)&h->ip + ip_len != end || bpf_ntohs(h->udp.len) != ip_len - sizeof(struct iphdr))
		return XDP_PASS;
	/* Without a checksum nothing vouches for the payload: the kernel's. */
	if (!h->udp.check)
		return XDP_PASS;
	len = ip_len - sizeof(struct iphdr) - sizeof(struct udphdr);

	key.family = 4;
	__builtin_memcpy(key.local, &h->ip.daddr, 4);
	__builtin_memcpy(key.remote, &h->ip.saddr, 4);
	key.local_port = h->udp.dest;
	key.remote_port = h->udp.source;
	out = match(ctx, &key, (__u8 *)(h + 1), end, len, &mode, &from_slot);
	if (!out)
		return XDP_PASS;

	new_len = mode == TO_PEER ? len - CHANNEL_HEADER : mode == TO_CLIENT ? len + CHANNEL_HEADER : len;
	fib.family = AF_INET;
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = out->src_port;
	fib.dport = out->dst_port;
	fib.tot_len = new_len + sizeof(struct iphdr) + sizeof(struct udphdr);
	fib.ifindex = LOOPBACK_IFINDEX;
	__builtin_memcpy(&fib.ipv4_src, out->src, 4);
	__builtin_memcpy(&fib.ipv4_dst, out->dst, 4);
	if (fib_failed(bpf_fib_lookup(ctx, &fib, sizeof(fib), fib.ipv4_src ? 0 : BPF_FIB_LOOKUP_SRC)))
		return XDP_PASS;

	__builtin_memcpy(&n, h, sizeof(n));
	__builtin_memcpy(n.eth.h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(n.eth.h_source, fib.smac, ETH_ALEN);
	n.ip.saddr = fib.ipv4_src;
	n.ip.daddr = fib.ipv4_dst;
	/* fib.tot_len now holds the MTU (a union with mtu_result). */
	n.ip.tot_len = bpf_htons(new_len + sizeof(struct iphdr) + sizeof(struct udphdr));
	n.ip.ttl = TTL;
	/* ECN goes on; the sender's DSCP does not. */
	n.ip.tos = h->ip.tos & 0x03;
	n.ip.check = 0;
	n.ip.check = ~fold(words(&n.ip, sizeof(struct iphdr) / 2));
	n.udp.source = out->src_port;
	n.udp.dest = out->dst_port;
	new_udp_len = bpf_htons(new_len + sizeof(struct udphdr));
	n.udp.len = new_udp_len;
	/* Pseudo-header addresses and length, ports, length again, and the
	 * ChannelData header that goes or comes. */
	removed = words(&h->ip.saddr, 4) + words(&h->udp, 3) + h->udp.len;
	added = words(&n.ip.saddr, 4) + words(&n.udp, 3) + new_udp_len;
	if (header_change(mode, h + 1, end, out->channel, len, &removed, &added))
		return XDP_PASS;
	n.udp.check = csum_update(h->udp.check, removed, added) ?: 0xffff;

	return emit(ctx, &n, sizeof(n), out, mode, from_slot, len, fib.ifindex);
}

static __always_inline int relay_v6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct hdr6 *h = data;
	struct flow_key key = {};
	struct bpf_fib_lookup fib = {};
	struct flow_out *out;
	struct hdr6 n;
	__u32 len, new_len, flags = 0, from_slot = 0;
	__u64 removed, added;
	__be16 new_udp_len;
	int mode;

	if ((void *)(h + 1) > end)
		return XDP_PASS;
	if (h->ip.version != 6 || h->ip.nexthdr != IPPROTO_UDP)
		return XDP_PASS;
	len = bpf_ntohs(h->ip.payload_len);
	if (data + sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + len != end || bpf_ntohs(h->udp.len) != len)
		return XDP_PASS;
	/* IPv6 requires the UDP checksum; let the kernel judge one without. */
	if (!h->udp.check)
		return XDP_PASS;
	len -= sizeof(struct udphdr);

	key.family = 6;
	__builtin_memcpy(key.local, &h->ip.daddr, 16);
	__builtin_memcpy(key.remote, &h->ip.saddr, 16);
	key.local_port = h->udp.dest;
	key.remote_port = h->udp.source;
	out = match(ctx, &key, (__u8 *)(h + 1), end, len, &mode, &from_slot);
	if (!out)
		return XDP_PASS;

	new_len = mode == TO_PEER ? len - CHANNEL_HEADER : mode == TO_CLIENT ? len + CHANNEL_HEADER : len;
	fib.family = AF_INET6;
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = out->src_port;
	fib.dport = out->dst_port;
	fib.tot_len = new_len + sizeof(struct ipv6hdr) + sizeof(struct udphdr);
	fib.ifindex = LOOPBACK_IFINDEX;
	__builtin_memcpy(fib.ipv6_src, out->src, 16);
	__builtin_memcpy(fib.ipv6_dst, out->dst, 16);
	if (!(fib.ipv6_src[0] | fib.ipv6_src[1] | fib.ipv6_src[2] | fib.ipv6_src[3]))
		flags = BPF_FIB_LOOKUP_SRC;
	if (fib_failed(bpf_fib_lookup(ctx, &fib, sizeof(fib), flags)))
		return XDP_PASS;

	__builtin_memcpy(&n, h, sizeof(n));
	__builtin_memcpy(n.eth.h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(n.eth.h_source, fib.smac, ETH_ALEN);
	__builtin_memcpy(&n.ip.saddr, fib.ipv6_src, 16);
	__builtin_memcpy(&n.ip.daddr, fib.ipv6_dst, 16);
	new_udp_len = bpf_htons(new_len + sizeof(struct udphdr));
	n.ip.payload_len = new_udp_len;
	n.ip.hop_limit = TTL;
	/* The traffic class's ECN bits (bits 4-5 of flow_lbl[0]) go on; its
	 * DSCP and the flow label do not. */
	n.ip.priority = 0;
	n.ip.flow_lbl[0] = h->ip.flow_lbl[0] & 0x30;
	n.ip.flow_lbl[1] = 0;
	n.ip.flow_lbl[2] = 0;
	n.udp.source = out->src_port;
	n.udp.dest = out->dst_port;
	n.udp.len = new_udp_len;
	removed = words(&h->ip.saddr, 16) + words(&h->udp, 3) + h->udp.len;
	added = words(&n.ip.saddr, 16) + words(&n.udp, 3) + new_udp_len;
	if (header_change(mode, h + 1, end, out->channel, len, &removed, &added))
		return XDP_PASS;
	n.udp.check = csum_update(h->udp.check, removed, added) ?: 0xffff;

	return emit(ctx, &n, sizeof(n), out, mode, from_slot, len, fib.ifindex);
}

SEC("xdp")
int ip2p_relay(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return relay_v4(ctx);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return relay_v6(ctx);
	return XDP_PASS;
}

/* For the far end of a veth pair: a veth delivers frames that an XDP
 * program sends to it (XDP_TX, redirect) only when its peer has an XDP
 * program too. This one passes everything. */
SEC("xdp")
int ip2p_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
