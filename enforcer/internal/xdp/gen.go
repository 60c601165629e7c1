package xdp

//go:generate go tool bpf2go -tags linux -target bpfel -type device -type mac_key -type peer -type slot_info -type rule -type counter -type metadata -type cache_entry -type cache_stats enforcer enforcer.c -- -O2 -Wall -Werror -I/usr/include/x86_64-linux-gnu
