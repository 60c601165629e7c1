package xdp

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -mcpu=v3" -target bpfel -type flow_key -type flow_val -type flow_dir -type counters -type bl_key -type bl_val -type bl_rule -type mac_key -type nonip_val sensor sensor.c -- -I/usr/include/x86_64-linux-gnu
