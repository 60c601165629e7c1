// Package benchmesh measures the gossip mesh: join convergence, failure
// detection against memberlist's configured bound, and gossip bytes per
// second per member, for 8, 32 and 64 in-process members on loopback.
// It runs with `make bench-mesh` (MEDMESH_BENCH=1). The reporting-path
// measurement (100 sensors into three real coordinators) lives next to
// the reporter it drives, in node/internal/reporter (the reporter is
// internal to node/).
package benchmesh
