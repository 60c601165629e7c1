//go:build ignore

// SPDX-License-Identifier: Dual BSD/GPL
//
// sensor: the medmesh sensor's XDP program. It parses every frame
// (Ethernet, up to two 802.1Q/802.1ad tags, IPv4 with options and
// fragments, IPv6 with hop-by-hop/routing/fragment/destination-options
// headers, TCP/UDP/SCTP/ICMP/ICMPv6), accounts it in a bidirectional flow
// table, and sends user space flow starts, payload samples, discovery
// packets and baseline misses over a ring buffer. It never changes a frame:
// in tap mode it drops after accounting, in passive mode it passes.
//
// Two paths. fast_path takes the common packet of an established flow (an
// untagged IPv4 TCP/UDP frame without options, past its payload samples)
// and counts it in a per-CPU, direct-mapped flow cache slot with plain
// adds: no hash lookup, no atomic, no clock helper. Everything else goes
// to full_path, which parses, counts in the flow table (BPF LRU hash,
// atomic adds) through account(), raises events, and hands the flow the
// cache slot. Slot counts reach the table when the slot changes hands and
// when user space runs flush_cache on every CPU before reading the table,
// so what user space reads is exact (see flush_slot). Flows that take the
// full path are counted exactly as without the cache
// (TestFlowCacheMatchesTable).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_SAMPLE 512     /* bytes of L4 payload per sample: HL7 PRT-16/OBX-18 UDIs, DICOM
                            * user information and TLS SNI often sit past byte 128 */
#define DEF_SAMPLES 4      /* payload packets sampled per direction */
#define MAX_SAMPLES 32     /* upper bound of an extended budget */
#define MAX_DISC 1024      /* bytes of a discovery packet sent up */
#define MAX_V6_EXT 6       /* IPv6 extension headers skipped at most */
#define MAX_RULES 16       /* baseline (proto, port) entries per prefix */
#define WAKE_EVERY 64      /* ring-buffer wake-up every N events */
#define WAKE_BYTES (256 * 1024)
#define CACHE_BITS 12      /* flow cache: 4096 slots per CPU */
#define CACHE_SLOTS (1 << CACHE_BITS)

/* Flow-table counter updates are atomic: several CPUs update one entry.
 * (Flow-cache slots are per CPU and use plain adds.) */
#define ADD(p, v) __sync_fetch_and_add((p), (v))
#define OR(p, v) __sync_fetch_and_or((p), (v))

enum stat {
	STAT_PACKETS = 0,
	STAT_BYTES,          /* frame bytes */
	STAT_IP_PACKETS,
	STAT_L3_BYTES,
	STAT_NONIP,
	STAT_FRAGMENTS,
	STAT_FLOWS_CREATED,
	STAT_FLOW_UPDATE_FAIL,
	STAT_RB_EVENTS,
	STAT_RB_DROPS,
	STAT_SAMPLES,
	STAT_DISCOVERY,
	STAT_BASELINE_MISS,
	STAT_PARSE_ERRORS,
	STAT_CACHE_HITS,     /* packets counted by fast_path alone (not in STAT_PACKETS) */
	STAT_CACHE_ORPHANS,  /* cached counts whose entry was gone: re-created */
	STAT_ERR_BASE = 16,  /* + enum parse_err */
	STAT_CACHE_BYTES = 26,    /* frame bytes of cache hits (add to STAT_BYTES) */
	STAT_CACHE_L3_BYTES = 27, /* L3 bytes of cache hits (add to STAT_L3_BYTES) */
	STAT_CACHE_PARSED_HITS = 28, /* hits after the full parser (VLAN, IPv6, ...) */
	STAT_MAX = 32,
};

enum parse_err {
	ERR_TRUNC_ETH = 0,
	ERR_TRUNC_VLAN,
	ERR_VLAN_DEPTH,
	ERR_TRUNC_IPV4,
	ERR_BAD_IPV4,
	ERR_TRUNC_IPV6,
	ERR_BAD_IPV6,
	ERR_IPV6_EXT,
	ERR_TRUNC_L4,
	ERR_BAD_L4,
};

enum ev_type {
	EV_FLOW_START = 1,
	EV_SAMPLE,
	EV_DISCOVERY,
	EV_BASELINE_MISS,
};

enum disc_kind {
	DISC_DHCP = 1,
	DISC_DHCPV6,
	DISC_DNS,
	DISC_ARP,
	DISC_ND,
};

enum miss_reason {
	MISS_PEER = 1,
	MISS_PROTO,
	MISS_PORT,
};

/* Canonical bidirectional key: side a is the (addr, port) that compares
 * lower. IPv4 addresses use the first 4 bytes. Ports in host order. */
struct flow_key {
	__u8 addr_a[16];
	__u8 addr_b[16];
	__u16 port_a;
	__u16 port_b;
	__u16 vlan;
	__u8 proto;
	__u8 family;
} __attribute__((aligned(8)));

struct flow_dir {
	__u64 packets;
	__u64 bytes; /* L3 octets */
	__u32 tcp_flags;
	__u32 payload_pkts;
};

/* dir[0] is the initiator's direction (fwd), dir[1] the responder's. */
struct flow_val {
	struct flow_dir dir[2];
	__u64 first_ns;
	__u64 last_ns;
	__u64 fragments;
	__u8 mac_init[6];
	__u8 mac_resp[6];
	__u8 init_is_a;
	__u8 baseline; /* 0 none, 1 in, 2 out */
	__u8 pad[2];
};

struct mac_key {
	__u8 mac[6];
	__u16 pad;
};

struct nonip_val {
	__u64 packets;
	__u64 bytes;
	__u32 last_ethertype;
	__u32 pad;
};

struct counters {
	__u64 c[STAT_MAX];
};

struct bl_key {
	__u32 prefixlen; /* 32 (device) + 128 (v4-mapped or v6 address) */
	__u32 device;
	__u8 addr[16];
};

struct bl_rule {
	__u8 proto; /* 0: any */
	__u8 pad;
	__u16 port; /* 0: any */
};

struct bl_val {
	__u32 n;
	struct bl_rule r[MAX_RULES];
};

/* Every event starts with this header; src/dst are the packet's own. */
struct ev_hdr {
	__u8 type;
	__u8 dir;    /* sample: packet direction; miss: device is src */
	__u8 index;  /* sample: payload packet number in its direction */
	__u8 family; /* 4, 6, or 0 (ARP) */
	__u8 proto;
	__u8 kind;   /* discovery kind or miss reason */
	__u16 vlan;
	__u16 sport;
	__u16 dport;
	__u16 cap_len;  /* bytes of data following the header */
	__u16 wire_len; /* payload length on the wire */
	__u64 ts;
	__u8 src[16];
	__u8 dst[16];
	__u8 smac[6];
	__u8 dmac[6];
	__u8 ttl; /* IPv4 TTL or IPv6 hop limit of the packet; 0 for ARP */
	__u8 pad[3];
};

struct ev_sample {
	struct ev_hdr h;
	__u8 data[MAX_SAMPLE];
};

struct ev_disc {
	struct ev_hdr h;
	__u8 data[MAX_DISC];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} flows SEC(".maps");

/* The per-CPU flow cache. Established flows are counted here with plain
 * adds, without a hash lookup or an atomic operation: one slot per CPU and
 * hash of the canonical key, direct-mapped. A slot holds the flow's key,
 * what the fast path needs to know about the flow, and the counts not yet
 * added to the flow's entry in `flows`. Counts move to the entry when the
 * slot is taken by another flow, when a packet needs the slow path
 * (samples, fragments), and when user space runs flush_cache on each CPU
 * before it reads the table (Datapath.Flush). Per-CPU slots are only ever
 * written on their own CPU, in softirq context or (test runs) with bottom
 * halves disabled, so the plain adds are exact. */
struct cache_dir {
	__u64 packets;
	__u64 bytes;
	__u32 tcp_flags;
	__u32 payload_pkts;
};

struct cache_slot {
	struct flow_key k;
	struct cache_dir d[2]; /* by initiator direction, like flow_val */
	__u64 first_ns;        /* capture clock: the oldest and newest pending count */
	__u64 last_ns;
	__u32 gen;             /* cache_gen at fill; 0: empty */
	__u8 mac_init[6];
	__u8 mac_resp[6];
	__u8 init_is_a;
	__u8 baseline;
	__u8 sampled[2];       /* 1: no more samples wanted in this direction */
	__u8 dirty;            /* counts pending */
	__u8 pad[3];
	/* Kernel clock: jiffies of the oldest and newest pending count, and a
	 * (jiffies, coarse ns) pair taken at fill to turn them into ns. */
	__u64 first_j;
	__u64 last_j;
	__u64 ref_j;
	__u64 ref_ns;
	/* fast_path's packets, frame and L3 bytes: added to the statistics
	 * when the slot is flushed, so the fast path touches only its slot. */
	__u64 fp_packets;
	__u64 fp_bytes;
	__u64 fp_l3_bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct cache_slot);
} flow_cache SEC(".maps");

/* Scratch space for a new flow entry (keeps it off the 512-byte stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_val);
} new_flow SEC(".maps");

/* Raised per-direction sample budgets (user space writes, kernel reads). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct flow_key);
	__type(value, __u32);
} sample_ext SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct mac_key);
	__type(value, struct nonip_val);
} nonip SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

/* Devices with an installed baseline: MAC -> device number. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct mac_key);
	__type(value, __u32);
} baseline_devs SEC(".maps");

/* (device, peer prefix) -> allowed (proto, port) entries. User space folds
 * the entries of covering prefixes into each more specific one, so the
 * longest match carries every applicable entry. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bl_key);
	__type(value, struct bl_val);
} baseline_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

/* Set before load: 1 drops every frame after accounting (tap). */
const volatile __u8 tap_mode = 0;
/* Non-zero: the program's clock (replay sets the capture's timestamp). */
volatile __u64 clock_override_ns = 0;
/* Number of devices with a baseline; 0 skips the baseline lookups. */
volatile __u32 baseline_devices = 0;
/* Flow cache generation: a slot filled under another generation is not
 * used. User space bumps it when a sample budget changes; 0 turns the
 * cache off (every packet takes the hash-table path). */
volatile __u32 cache_gen = 1;
/* Events since the last forced wake-up (racy by design: only a hint). */
__u32 wake_ctr = 0;

struct pkt {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u16 vlan;
	__u8 proto;
	__u8 family;
	__u32 l3_len;
	__u32 pl_off; /* L4 payload offset from the frame start */
	__u32 pl_len; /* L4 payload length from the headers */
	__u8 tcp_flags;
	__u8 frag;
	__u8 disc;
	__u8 has_ports;
	__u8 ttl;
};

static __always_inline __u64 rb_flags(void)
{
	__u32 n = ++wake_ctr;
	if (n >= WAKE_EVERY || bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= WAKE_BYTES) {
		wake_ctr = 0;
		return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void fill_hdr(struct ev_hdr *h, __u8 type, const struct pkt *p,
				     const struct ethhdr *eth, __u64 now)
{
	h->type = type;
	h->dir = 0;
	h->index = 0;
	h->family = p->family;
	h->proto = p->proto;
	h->kind = 0;
	h->vlan = p->vlan;
	h->sport = p->sport;
	h->dport = p->dport;
	h->cap_len = 0;
	h->wire_len = 0;
	h->ts = now;
	__builtin_memcpy(h->src, p->src, 16);
	__builtin_memcpy(h->dst, p->dst, 16);
	__builtin_memcpy(h->smac, eth->h_source, 6);
	__builtin_memcpy(h->dmac, eth->h_dest, 6);
	h->ttl = p->ttl;
	h->pad[0] = 0;
	h->pad[1] = 0;
	h->pad[2] = 0;
}

/* Returns 1 when side (addr1, port1) orders before (addr2, port2). */
static __always_inline int side_lt(const __u8 *a1, __u16 p1, const __u8 *a2, __u16 p2)
{
	__u64 x, y;
	__builtin_memcpy(&x, a1, 8);
	__builtin_memcpy(&y, a2, 8);
	if (x != y)
		return x < y;
	__builtin_memcpy(&x, a1 + 8, 8);
	__builtin_memcpy(&y, a2 + 8, 8);
	if (x != y)
		return x < y;
	return p1 < p2;
}

/* Checks one device's baseline for a new flow. Returns 0 (no baseline),
 * -1 (in baseline) or a miss reason. */
static __always_inline int baseline_check(const __u8 *mac, const __u8 *peer, __u8 family,
					  __u8 proto, __u16 port)
{
	struct mac_key mk = {};
	__builtin_memcpy(mk.mac, mac, 6);
	__u32 *dev = bpf_map_lookup_elem(&baseline_devs, &mk);
	if (!dev)
		return 0;
	struct bl_key k = {};
	k.prefixlen = 32 + 128;
	k.device = *dev;
	if (family == 4) {
		k.addr[10] = 0xff;
		k.addr[11] = 0xff;
		__builtin_memcpy(&k.addr[12], peer, 4);
	} else {
		__builtin_memcpy(k.addr, peer, 16);
	}
	struct bl_val *v = bpf_map_lookup_elem(&baseline_rules, &k);
	if (!v)
		return MISS_PEER;
	int proto_ok = 0;
#pragma unroll
	for (int i = 0; i < MAX_RULES; i++) {
		if (i >= v->n)
			break;
		if (v->r[i].proto != 0 && v->r[i].proto != proto)
			continue;
		proto_ok = 1;
		if (v->r[i].port == 0 || v->r[i].port == port)
			return -1;
	}
	return proto_ok ? MISS_PORT : MISS_PROTO;
}

static __always_inline void emit_miss(struct counters *st, const struct pkt *p, const struct ethhdr *eth,
				      __u64 now, int reason, __u8 dev_is_src)
{
	st->c[STAT_BASELINE_MISS]++;
	struct ev_hdr *h = bpf_ringbuf_reserve(&events, sizeof(*h), 0);
	if (!h) {
		st->c[STAT_RB_DROPS]++;
		return;
	}
	fill_hdr(h, EV_BASELINE_MISS, p, eth, now);
	h->dir = dev_is_src;
	h->kind = reason;
	st->c[STAT_RB_EVENTS]++;
	bpf_ringbuf_submit(h, rb_flags());
}

static __always_inline void emit_discovery(struct xdp_md *ctx, struct counters *st, const struct pkt *p,
					   const struct ethhdr *eth, __u64 now, __u8 kind,
					   __u32 off, __u32 len, __u32 wire)
{
	st->c[STAT_DISCOVERY]++;
	struct ev_disc *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		st->c[STAT_RB_DROPS]++;
		return;
	}
	fill_hdr(&e->h, EV_DISCOVERY, p, eth, now);
	e->h.kind = kind;
	e->h.wire_len = wire > 0xffff ? 0xffff : wire;
	if (len > MAX_DISC)
		len = MAX_DISC;
	if (len > 0 && bpf_xdp_load_bytes(ctx, off, e->data, len) == 0)
		e->h.cap_len = len;
	st->c[STAT_RB_EVENTS]++;
	bpf_ringbuf_submit(e, rb_flags());
}

static __always_inline void emit_sample(struct xdp_md *ctx, struct counters *st, const struct pkt *p,
					const struct ethhdr *eth, __u64 now, __u8 dir, __u32 idx,
					__u32 avail)
{
	st->c[STAT_SAMPLES]++;
	struct ev_sample *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		st->c[STAT_RB_DROPS]++;
		return;
	}
	fill_hdr(&e->h, EV_SAMPLE, p, eth, now);
	e->h.dir = dir;
	e->h.index = idx;
	e->h.wire_len = p->pl_len > 0xffff ? 0xffff : p->pl_len;
	__u32 len = p->pl_len;
	if (len > avail)
		len = avail;
	if (len > MAX_SAMPLE)
		len = MAX_SAMPLE;
	if (len > 0 && bpf_xdp_load_bytes(ctx, p->pl_off, e->data, len) == 0)
		e->h.cap_len = len;
	st->c[STAT_RB_EVENTS]++;
	bpf_ringbuf_submit(e, rb_flags());
}

/* Returns 1 when no more payload samples are wanted from a direction that
 * has had n payload packets. */
static __always_inline __u8 sampled_out(const struct flow_key *k, __u32 n)
{
	if (n >= MAX_SAMPLES)
		return 1;
	if (n < DEF_SAMPLES)
		return 0;
	__u32 *ext = bpf_map_lookup_elem(&sample_ext, k);
	return !ext || n >= *ext;
}

/* Direct-mapped slot of a key: one multiply over a fold of the words that
 * differ between flows (both addresses' first and last words, ports, VLAN
 * and protocol). */
static __always_inline __u32 slot_of(const struct flow_key *k)
{
	const __u32 *w = (const void *)k;
	__u32 b = w[4] ^ w[7];
	__u32 h = w[0] ^ w[3] ^ ((b << 16) | (b >> 16)) ^ w[8] ^ (w[9] << 7);
	return (h * 0x9e3779b1u) >> (32 - CACHE_BITS);
}

static __always_inline int key_eq(const struct flow_key *x, const struct flow_key *y)
{
	const __u64 *a = (const void *)x, *b = (const void *)y;
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0;
}

/* A flow start for an entry re-created from cached counts: the entry was
 * taken by the exporter (or evicted) while packets were still being
 * counted in a slot, so they open a new record, as a packet would. */
static __always_inline void emit_orphan_start(struct counters *st, const struct cache_slot *c, __u64 ts)
{
	struct ev_hdr *h = bpf_ringbuf_reserve(&events, sizeof(*h), 0);
	if (!h) {
		st->c[STAT_RB_DROPS]++;
		return;
	}
	__builtin_memset(h, 0, sizeof(*h));
	h->type = EV_FLOW_START;
	h->family = c->k.family;
	h->proto = c->k.proto;
	h->vlan = c->k.vlan;
	if (c->init_is_a) {
		__builtin_memcpy(h->src, c->k.addr_a, 16);
		__builtin_memcpy(h->dst, c->k.addr_b, 16);
		h->sport = c->k.port_a;
		h->dport = c->k.port_b;
	} else {
		__builtin_memcpy(h->src, c->k.addr_b, 16);
		__builtin_memcpy(h->dst, c->k.addr_a, 16);
		h->sport = c->k.port_b;
		h->dport = c->k.port_a;
	}
	__builtin_memcpy(h->smac, c->mac_init, 6);
	__builtin_memcpy(h->dmac, c->mac_resp, 6);
	h->ts = ts;
	st->c[STAT_RB_EVENTS]++;
	bpf_ringbuf_submit(h, rb_flags());
}

/* Moves a slot's pending counts into its flow's entry (atomically: other
 * CPUs update the entry too), re-creating the entry if it is gone. */
static __always_inline void flush_slot(struct counters *st, struct cache_slot *c)
{
	if (!c->dirty)
		return;
	c->dirty = 0;
	__u64 first = c->first_ns, last = c->last_ns;
	if (c->last_j) {
		/* The coarse clock moves one tick per jiffy: interpolate. */
		__u64 jn = bpf_jiffies64(), cn = bpf_ktime_get_coarse_ns();
		__u64 tick = jn > c->ref_j ? (cn - c->ref_ns) / (jn - c->ref_j) : 0;
		first = c->ref_ns + (c->first_j - c->ref_j) * tick;
		last = c->ref_ns + (c->last_j - c->ref_j) * tick;
		c->first_j = 0;
		c->last_j = 0;
	}
	c->first_ns = 0;
	st->c[STAT_CACHE_HITS] += c->fp_packets;
	st->c[STAT_CACHE_BYTES] += c->fp_bytes;
	st->c[STAT_CACHE_L3_BYTES] += c->fp_l3_bytes;
	c->fp_packets = 0;
	c->fp_bytes = 0;
	c->fp_l3_bytes = 0;
	struct flow_val *v = bpf_map_lookup_elem(&flows, &c->k);
	if (!v) {
		__u32 zero = 0;
		struct flow_val *nv = bpf_map_lookup_elem(&new_flow, &zero);
		if (!nv)
			return;
		__builtin_memset(nv, 0, sizeof(*nv));
		nv->first_ns = first;
		nv->last_ns = last;
		nv->init_is_a = c->init_is_a;
		nv->baseline = c->baseline;
		__builtin_memcpy(nv->mac_init, c->mac_init, 6);
		__builtin_memcpy(nv->mac_resp, c->mac_resp, 6);
		/* A continuation: its payload was sampled in its first record. */
		nv->dir[0].payload_pkts = MAX_SAMPLES;
		nv->dir[1].payload_pkts = MAX_SAMPLES;
		if (bpf_map_update_elem(&flows, &c->k, nv, BPF_NOEXIST) == 0) {
			st->c[STAT_FLOWS_CREATED]++;
			st->c[STAT_CACHE_ORPHANS]++;
			emit_orphan_start(st, c, first);
		}
		v = bpf_map_lookup_elem(&flows, &c->k);
		if (!v) {
			st->c[STAT_FLOW_UPDATE_FAIL]++;
			__builtin_memset(c->d, 0, sizeof(c->d));
			return;
		}
	}
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (c->d[i].packets) {
			ADD(&v->dir[i].packets, c->d[i].packets);
			ADD(&v->dir[i].bytes, c->d[i].bytes);
		}
		if (c->d[i].payload_pkts)
			ADD(&v->dir[i].payload_pkts, c->d[i].payload_pkts);
		__u32 fl = c->d[i].tcp_flags;
		if (fl && (v->dir[i].tcp_flags & fl) != fl)
			OR(&v->dir[i].tcp_flags, fl);
	}
	if (last > v->last_ns)
		v->last_ns = last;
	__builtin_memset(c->d, 0, sizeof(c->d));
}

static __always_inline void fill_slot(struct cache_slot *c, const struct flow_key *k,
				      const struct flow_val *v, __u32 gen)
{
	__builtin_memcpy(&c->k, k, sizeof(*k));
	c->gen = gen;
	c->init_is_a = v->init_is_a;
	c->baseline = v->baseline;
	__builtin_memcpy(c->mac_init, v->mac_init, 6);
	__builtin_memcpy(c->mac_resp, v->mac_resp, 6);
	c->sampled[0] = sampled_out(k, v->dir[0].payload_pkts);
	c->sampled[1] = sampled_out(k, v->dir[1].payload_pkts);
	c->first_ns = 0;
	c->last_ns = 0;
	c->ref_j = bpf_jiffies64();
	c->ref_ns = bpf_ktime_get_coarse_ns();
}

/* Records a counted packet's time in its slot: the capture clock when set;
 * otherwise the jiffy, an inlined load (a kernel clock helper costs as much
 * as the rest of the fast path), turned into ns when the slot is flushed. */
static __always_inline void slot_touch(struct cache_slot *c, __u64 clk)
{
	if (clk) {
		if (!c->dirty)
			c->first_ns = clk;
		if (clk > c->last_ns)
			c->last_ns = clk;
	} else {
		__u64 j = bpf_jiffies64();
		if (!c->dirty)
			c->first_j = j;
		c->last_j = j;
	}
	c->dirty = 1;
}

/* account counts one parsed packet in the flow cache or the flow table and
 * raises its flow's events. A global function: the verifier checks it
 * once, not once per call site and path of the parser. eth is a copy of
 * the frame's Ethernet header. */
__noinline int account(struct xdp_md *ctx, struct pkt *p, const struct ethhdr *eth, __u64 clk,
		       __u32 frame_len)
{
	__u32 zero = 0;
	if (!p || !eth)
		return 0;
	struct counters *st = bpf_map_lookup_elem(&stats, &zero);
	if (!st)
		return 0;
	struct flow_key k = {};
	int src_is_a = side_lt(p->src, p->sport, p->dst, p->dport);
	if (src_is_a) {
		__builtin_memcpy(k.addr_a, p->src, 16);
		__builtin_memcpy(k.addr_b, p->dst, 16);
		k.port_a = p->sport;
		k.port_b = p->dport;
	} else {
		__builtin_memcpy(k.addr_a, p->dst, 16);
		__builtin_memcpy(k.addr_b, p->src, 16);
		k.port_a = p->dport;
		k.port_b = p->sport;
	}
	k.vlan = p->vlan;
	k.proto = p->proto;
	k.family = p->family;

	/* Fast path: the flow owns this CPU's slot and wants nothing but
	 * counting. The tick-resolution clock is enough for last seen. */
	__u32 gen = cache_gen;
	struct cache_slot *c = 0;
	if (gen && !p->frag) {
		__u32 idx = slot_of(&k);
		c = bpf_map_lookup_elem(&flow_cache, &idx);
		if (c && c->gen == gen && key_eq(&c->k, &k)) {
			__u8 dir = (src_is_a == c->init_is_a) ? 0 : 1;
			if (p->pl_len == 0 || c->sampled[dir & 1] ||
			    (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)) {
				struct cache_dir *cd = &c->d[dir & 1];
				cd->packets++;
				cd->bytes += p->l3_len;
				cd->tcp_flags |= p->tcp_flags;
				if (p->pl_len)
					cd->payload_pkts++; /* keeps sample indexes = packet numbers */
				slot_touch(c, clk);
				st->c[STAT_CACHE_PARSED_HITS]++;
				return 0;
			}
		}
	}

	/* Slow path. Whatever the slot holds goes to its entry first, so this
	 * flow's entry is complete before it is read. */
	if (c)
		flush_slot(st, c);
	__u64 now = clk ? clk : bpf_ktime_get_ns();
	struct flow_val *v = bpf_map_lookup_elem(&flows, &k);
	if (!v) {
		struct flow_val *nv = bpf_map_lookup_elem(&new_flow, &zero);
		if (!nv)
			return 0;
		int miss_src = 0, miss_dst = 0;
		__builtin_memset(nv, 0, sizeof(*nv));
		nv->first_ns = now;
		nv->last_ns = now;
		nv->init_is_a = src_is_a;
		__builtin_memcpy(nv->mac_init, eth->h_source, 6);
		__builtin_memcpy(nv->mac_resp, eth->h_dest, 6);
		if (baseline_devices) {
			miss_src = baseline_check(eth->h_source, p->dst, p->family, p->proto, p->dport);
			miss_dst = baseline_check(eth->h_dest, p->src, p->family, p->proto, p->dport);
			if (miss_src > 0 || miss_dst > 0)
				nv->baseline = 2;
			else if (miss_src < 0 || miss_dst < 0)
				nv->baseline = 1;
		}
		if (bpf_map_update_elem(&flows, &k, nv, BPF_NOEXIST) == 0) {
			st->c[STAT_FLOWS_CREATED]++;
			struct ev_hdr *h = bpf_ringbuf_reserve(&events, sizeof(*h), 0);
			if (h) {
				fill_hdr(h, EV_FLOW_START, p, eth, now);
				st->c[STAT_RB_EVENTS]++;
				bpf_ringbuf_submit(h, rb_flags());
			} else {
				st->c[STAT_RB_DROPS]++;
			}
			if (miss_src > 0)
				emit_miss(st, p, eth, now, miss_src, 1);
			if (miss_dst > 0)
				emit_miss(st, p, eth, now, miss_dst, 0);
		}
		v = bpf_map_lookup_elem(&flows, &k);
		if (!v) {
			st->c[STAT_FLOW_UPDATE_FAIL]++;
			return 0;
		}
	}

	__u8 dir = (src_is_a == v->init_is_a) ? 0 : 1;
	struct flow_dir *d = &v->dir[dir];
	ADD(&d->packets, 1);
	ADD(&d->bytes, p->l3_len);
	if (p->tcp_flags && (d->tcp_flags & p->tcp_flags) != p->tcp_flags)
		OR(&d->tcp_flags, (__u32)p->tcp_flags);
	if (now > v->last_ns)
		v->last_ns = now;
	if (p->frag) {
		ADD(&v->fragments, 1);
		return 0;
	}

	if (p->pl_len != 0 && d->payload_pkts < MAX_SAMPLES &&
	    (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP)) {
		__u32 idx = __sync_fetch_and_add(&d->payload_pkts, 1);
		int want = idx < MAX_SAMPLES;
		if (want && idx >= DEF_SAMPLES) {
			__u32 *ext = bpf_map_lookup_elem(&sample_ext, &k);
			want = ext && idx < *ext;
		}
		if (want) {
			__u32 avail = 0;
			if (p->pl_off < frame_len)
				avail = frame_len - p->pl_off;
			emit_sample(ctx, st, p, eth, now, dir, idx, avail);
		}
	}

	/* Hand the slot to this flow. */
	if (c)
		fill_slot(c, &k, v, gen);
	return 0;
}

/* fast_path counts a packet of a cached flow without the full parser: an
 * untagged or 802.1Q-tagged IPv4 frame without options or fragmentation, carrying TCP or UDP
 * (not DHCP or DNS, which go up for discovery), whose flow owns this CPU's
 * slot and wants no more payload samples in this direction. It returns 1
 * when it counted the packet, 0 to send it down the full path, which then
 * counts everything exactly as if this path did not exist. */
static __always_inline int fast_count(void *data, void *end, struct iphdr *ip, __u32 vlan, __u64 clk)
{
	__be16 *l4 = (void *)(ip + 1);
	if ((void *)(l4 + 10) > end) /* IPv4 header and 20 bytes of L4 */
		return 0;
	__u32 gen = cache_gen;
	if (!gen || *(__u8 *)ip != 0x45 || (ip->frag_off & bpf_htons(0x3fff)))
		return 0;
	__u8 proto = ip->protocol;
	__u32 tot = bpf_ntohs(ip->tot_len);
	__u16 sp = bpf_ntohs(l4[0]), dp = bpf_ntohs(l4[1]);
	__u32 pl, flags = 0;
	if (proto == IPPROTO_TCP) {
		__u32 doff = (((__u8 *)l4)[12] >> 4) * 4;
		if (doff < 20 || tot < 20 + doff)
			return 0;
		pl = tot - 20 - doff;
		flags = ((__u8 *)l4)[13];
	} else if (proto == IPPROTO_UDP) {
		__u32 ulen = bpf_ntohs(l4[2]);
		if (ulen < 8 || tot < 28 || sp == 53 || sp == 67 || sp == 68 || dp == 67 || dp == 68 ||
		    sp == 546 || sp == 547 || dp == 546 || dp == 547)
			return 0;
		if (ulen > tot - 20)
			ulen = tot - 20;
		pl = ulen - 8;
	} else {
		return 0;
	}
	/* The canonical key, as account() builds it (side_lt on zero-padded
	 * IPv4 addresses is a 32-bit compare of their little-endian words). */
	__u32 sa = ip->saddr, da = ip->daddr;
	int src_is_a = sa < da || (sa == da && sp < dp);
	__u32 a = src_is_a ? sa : da, b = src_is_a ? da : sa;
	__u32 ports = src_is_a ? ((__u32)dp << 16 | sp) : ((__u32)sp << 16 | dp);
	__u32 w9 = vlan | (__u32)proto << 16 | 4 << 24; /* family 4 */
	/* slot_of(), computed from registers rather than from a key on the
	 * stack; TestFastPathFindsSlots keeps the two in step. */
	__u32 h = a ^ ((b << 16) | (b >> 16)) ^ ports ^ (w9 << 7);
	__u32 idx = (h * 0x9e3779b1u) >> (32 - CACHE_BITS);
	struct cache_slot *c = bpf_map_lookup_elem(&flow_cache, &idx);
	if (!c || c->gen != gen)
		return 0;
	const __u64 *w = (const void *)&c->k;
	if (((w[0] ^ a) | w[1] | (w[2] ^ b) | w[3] | (w[4] ^ ((__u64)w9 << 32 | ports))) != 0)
		return 0;
	__u8 dir = (src_is_a ^ c->init_is_a) & 1;
	if (pl && !c->sampled[dir])
		return 0;
	struct cache_dir *cd = &c->d[dir];
	cd->packets++;
	cd->bytes += tot;
	cd->tcp_flags |= flags;
	if (pl)
		cd->payload_pkts++;
	c->fp_packets++;
	c->fp_bytes += end - data;
	c->fp_l3_bytes += tot;
	slot_touch(c, clk);
	return 1;
}

/* fast_path: untagged and single-tagged frames each get their own copy of
 * fast_count, with the IP header at a constant offset. */
static __always_inline int fast_path(struct xdp_md *ctx, __u64 clk)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return fast_count(data, end, (void *)(eth + 1), 0, clk);
	if (eth->h_proto == bpf_htons(ETH_P_8021Q)) {
		__be16 *vh = (void *)(eth + 1);
		if ((void *)(vh + 2) > end || vh[1] != bpf_htons(ETH_P_IP))
			return 0;
		return fast_count(data, end, (void *)(vh + 2), bpf_ntohs(vh[0]) & 0x0fff, clk);
	}
	return 0;
}

#define PERR(e)                                          \
	do {                                             \
		st->c[STAT_PARSE_ERRORS]++;              \
		st->c[STAT_ERR_BASE + (e)]++;            \
		return verdict;                          \
	} while (0)

/* full_path parses and counts every frame fast_path did not take. It is a
 * global function so the verifier checks it once, apart from fast_path's
 * branches. */
__noinline int full_path(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	int verdict = tap_mode ? XDP_DROP : XDP_PASS;
	__u32 zero = 0;
	struct counters *st = bpf_map_lookup_elem(&stats, &zero);
	if (!st)
		return verdict;
	__u32 frame_len = end - data;
	st->c[STAT_PACKETS]++;
	st->c[STAT_BYTES] += frame_len;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		PERR(ERR_TRUNC_ETH);
	__u64 clk = clock_override_ns; /* 0: the kernel's clock, read when needed */

	struct pkt p = {};
	struct ethhdr ethc;
	__builtin_memcpy(&ethc, eth, sizeof(ethc));
	void *cur = eth + 1;
	__u16 h_proto = eth->h_proto;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (h_proto == bpf_htons(ETH_P_8021Q) || h_proto == bpf_htons(ETH_P_8021AD) ||
		    h_proto == bpf_htons(0x9100)) {
			__be16 *vh = cur;
			if ((void *)(vh + 2) > end)
				PERR(ERR_TRUNC_VLAN);
			p.vlan = bpf_ntohs(vh[0]) & 0x0fff;
			h_proto = vh[1];
			cur = vh + 2;
		}
	}
	if (h_proto == bpf_htons(ETH_P_8021Q) || h_proto == bpf_htons(ETH_P_8021AD) ||
	    h_proto == bpf_htons(0x9100))
		PERR(ERR_VLAN_DEPTH);

	void *l4;
	__u32 l4_len;
	if (h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cur;
		if ((void *)(ip + 1) > end)
			PERR(ERR_TRUNC_IPV4);
		__u32 hl = ip->ihl * 4;
		__u32 tot = bpf_ntohs(ip->tot_len);
		if (ip->version != 4 || hl < 20 || tot < hl)
			PERR(ERR_BAD_IPV4);
		if (cur + hl > end)
			PERR(ERR_TRUNC_IPV4);
		p.family = 4;
		p.proto = ip->protocol;
		p.ttl = ip->ttl;
		p.l3_len = tot;
		__builtin_memcpy(p.src, &ip->saddr, 4);
		__builtin_memcpy(p.dst, &ip->daddr, 4);
		if (bpf_ntohs(ip->frag_off) & 0x3fff)
			p.frag = 1;
		l4 = cur + hl;
		l4_len = tot - hl;
	} else if (h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cur;
		if ((void *)(ip6 + 1) > end)
			PERR(ERR_TRUNC_IPV6);
		if (ip6->version != 6)
			PERR(ERR_BAD_IPV6);
		__u32 plen = bpf_ntohs(ip6->payload_len);
		p.family = 6;
		p.ttl = ip6->hop_limit;
		p.l3_len = plen + 40;
		__builtin_memcpy(p.src, &ip6->saddr, 16);
		__builtin_memcpy(p.dst, &ip6->daddr, 16);
		__u8 nh = ip6->nexthdr;
		__u32 ext = 0;
		l4 = ip6 + 1;
#pragma unroll
		for (int i = 0; i < MAX_V6_EXT; i++) {
			if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS) {
				__u8 *e = l4;
				if ((void *)(e + 8) > end)
					PERR(ERR_IPV6_EXT);
				__u32 el = ((__u32)e[1] + 1) * 8;
				nh = e[0];
				l4 += el;
				ext += el;
			} else if (nh == IPPROTO_FRAGMENT) {
				__u8 *e = l4;
				if ((void *)(e + 8) > end)
					PERR(ERR_IPV6_EXT);
				__u16 fo = ((__u16)e[2] << 8) | e[3];
				if (fo & 0xfff9)
					p.frag = 1;
				nh = e[0];
				l4 += 8;
				ext += 8;
			}
		}
		if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
		    nh == IPPROTO_FRAGMENT || ext > plen)
			PERR(ERR_IPV6_EXT);
		p.proto = nh;
		l4_len = plen - ext;
	} else {
		/* Not IP: counted per source MAC; ARP goes up for discovery. */
		st->c[STAT_NONIP]++;
		struct mac_key mk = {};
		__builtin_memcpy(mk.mac, eth->h_source, 6);
		struct nonip_val *nv = bpf_map_lookup_elem(&nonip, &mk);
		if (!nv) {
			struct nonip_val z = {};
			bpf_map_update_elem(&nonip, &mk, &z, BPF_NOEXIST);
			nv = bpf_map_lookup_elem(&nonip, &mk);
		}
		if (nv) {
			ADD(&nv->packets, 1);
			ADD(&nv->bytes, frame_len);
			nv->last_ethertype = bpf_ntohs(h_proto);
		}
		if (h_proto == bpf_htons(ETH_P_ARP)) {
			/* The ARP header and body, without Ethernet padding. */
			__u8 *arp = cur;
			__u32 off = cur - data;
			__u32 avail = frame_len > off ? frame_len - off : 0;
			__u32 len = avail;
			if ((void *)(arp + 8) <= end)
				len = 8 + 2 * ((__u32)arp[4] + arp[5]);
			if (len > avail)
				len = avail;
			emit_discovery(ctx, st, &p, eth, clk ? clk : bpf_ktime_get_ns(), DISC_ARP, off, len, len);
		}
		return verdict;
	}

	st->c[STAT_IP_PACKETS]++;
	st->c[STAT_L3_BYTES] += p.l3_len;
	if (p.frag) {
		st->c[STAT_FRAGMENTS]++;
		account(ctx, &p, &ethc, clk, frame_len);
		return verdict;
	}

	__u32 avail = 0;
	int dns_resp = 0;
	switch (p.proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > end)
			PERR(ERR_TRUNC_L4);
		__u32 doff = th->doff * 4;
		if (doff < 20 || doff > l4_len)
			PERR(ERR_BAD_L4);
		p.sport = bpf_ntohs(th->source);
		p.dport = bpf_ntohs(th->dest);
		p.tcp_flags = ((__u8 *)th)[13];
		p.pl_off = (l4 - data) + doff;
		p.pl_len = l4_len - doff;
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > end)
			PERR(ERR_TRUNC_L4);
		__u32 ulen = bpf_ntohs(uh->len);
		if (ulen < 8)
			PERR(ERR_BAD_L4);
		if (ulen > l4_len)
			ulen = l4_len;
		if (ulen < 8) /* the IP length leaves no room for the UDP header */
			PERR(ERR_BAD_L4);
		p.sport = bpf_ntohs(uh->source);
		p.dport = bpf_ntohs(uh->dest);
		p.pl_off = (l4 - data) + 8;
		p.pl_len = ulen - 8;
		__u8 *dns = (void *)(uh + 1);
		if (p.sport == 53 && (void *)(dns + 3) <= end && p.pl_len >= 12 && (dns[2] & 0x80))
			dns_resp = 1;
		break;
	}
	case IPPROTO_SCTP: {
		__be16 *sh = l4;
		if ((void *)(sh + 6) > end)
			PERR(ERR_TRUNC_L4);
		p.sport = bpf_ntohs(sh[0]);
		p.dport = bpf_ntohs(sh[1]);
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 *ih = l4;
		if ((void *)(ih + 4) > end)
			PERR(ERR_TRUNC_L4);
		if (p.proto == IPPROTO_ICMPV6 && ih[0] >= 133 && ih[0] <= 137)
			p.disc = DISC_ND;
		p.pl_off = l4 - data;
		p.pl_len = l4_len;
		break;
	}
	default:
		break;
	}

	if (p.proto == IPPROTO_UDP) {
		if (p.sport == 67 || p.sport == 68 || p.dport == 67 || p.dport == 68)
			p.disc = DISC_DHCP;
		else if (p.sport == 546 || p.sport == 547 || p.dport == 546 || p.dport == 547)
			p.disc = DISC_DHCPV6;
		else if (dns_resp)
			p.disc = DISC_DNS;
	}

	account(ctx, &p, &ethc, clk, frame_len);

	if (p.disc) {
		__u64 now = clk ? clk : bpf_ktime_get_ns();
		if (p.pl_off < frame_len)
			avail = frame_len - p.pl_off;
		__u32 len = p.pl_len < avail ? p.pl_len : avail;
		emit_discovery(ctx, st, &p, eth, now, p.disc, p.pl_off, len, p.pl_len);
	}
	/* ICMP carries no payload sample; its pl_len only feeds discovery. */
	return verdict;
}

SEC("xdp")
int sensor(struct xdp_md *ctx)
{
	if (fast_path(ctx, clock_override_ns))
		return tap_mode ? XDP_DROP : XDP_PASS;
	return full_path(ctx);
}

static long flush_one(__u64 i, void *unused)
{
	__u32 idx = i, zero = 0;
	struct cache_slot *c = bpf_map_lookup_elem(&flow_cache, &idx);
	if (!c || !c->dirty)
		return 0;
	struct counters *st = bpf_map_lookup_elem(&stats, &zero);
	if (st)
		flush_slot(st, c);
	return 0;
}

/* flush_cache moves the pending counts of this CPU's flow-cache slots into
 * the flow table. User space runs it (BPF_PROG_TEST_RUN) once on each CPU
 * before it reads the table. */
SEC("xdp")
int flush_cache(struct xdp_md *ctx)
{
	bpf_loop(CACHE_SLOTS, flush_one, 0, 0);
	return XDP_PASS;
}

char __license[] SEC("license") = "Dual BSD/GPL";
