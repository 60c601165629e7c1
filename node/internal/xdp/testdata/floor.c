//go:build ignore

// floor.c is not part of the sensor: BenchmarkDatapath compiles it to show
// the least any flow-accounting program pays for a new flow under
// BPF_PROG_TEST_RUN on this machine. one_lookup parses Ethernet/IPv4/TCP
// and looks the 5-tuple up once in an LRU hash the size of the sensor's
// flow table, and does nothing else. new_flow_min does the least the issue
// asks of a new flow: that lookup, an insert, and a flow-start event in a
// ring buffer.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct key {
	__u32 a, b;
	__u16 pa, pb;
	__u32 proto;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct key);
	__type(value, __u64);
} table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} starts SEC(".maps");

// parse fills k from an Ethernet/IPv4/TCP frame; 0 for any other.
static __always_inline int parse(struct xdp_md *ctx, struct key *k)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct tcphdr *th = (void *)(ip + 1);
	if ((void *)(th + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	*k = (struct key){.a = ip->saddr, .b = ip->daddr, .pa = th->source, .pb = th->dest, .proto = ip->protocol};
	return 1;
}

SEC("xdp")
int one_lookup(struct xdp_md *ctx)
{
	struct key k;
	if (!parse(ctx, &k))
		return XDP_PASS;
	__u64 *v = bpf_map_lookup_elem(&table, &k);
	if (v)
		(*v)++;
	return XDP_PASS;
}

SEC("xdp")
int new_flow_min(struct xdp_md *ctx)
{
	struct key k;
	if (!parse(ctx, &k))
		return XDP_PASS;
	__u64 *v = bpf_map_lookup_elem(&table, &k);
	if (v) {
		(*v)++;
		return XDP_PASS;
	}
	__u64 one = 1;
	if (bpf_map_update_elem(&table, &k, &one, BPF_NOEXIST) == 0) {
		struct key *e = bpf_ringbuf_reserve(&starts, sizeof(*e), 0);
		if (e) {
			*e = k;
			bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
		}
	}
	return XDP_PASS;
}

char __license[] SEC("license") = "Dual BSD/GPL";
