package coordinator

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/deploy/lab"
	"github.com/medmesh/medmesh/deploy/lab/sim"
	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/replay"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// capture writes a pcap of Ethernet frames.
type capture struct {
	t   *testing.T
	buf bytes.Buffer
	w   *pcapgo.Writer
	ts  time.Time
}

func newCapture(t *testing.T, start time.Time) *capture {
	c := &capture{t: t, ts: start}
	c.w = pcapgo.NewWriter(&c.buf)
	if err := c.w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	return c
}

// tcp writes one TCP segment from (smac, src:sport) to (dmac, dst:dport).
func (c *capture) tcp(smac, dmac net.HardwareAddr, src, dst netip.Addr, sport, dport uint16, flags func(*layers.TCP)) {
	c.ts = c.ts.Add(time.Millisecond)
	eth := &layers.Ethernet{SrcMAC: smac, DstMAC: dmac, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: 1, Window: 64240}
	flags(tcp)
	_ = tcp.SetNetworkLayerForChecksum(ip)
	b := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp); err != nil {
		c.t.Fatal(err)
	}
	if err := c.w.WritePacket(gopacket.CaptureInfo{Timestamp: c.ts, CaptureLength: len(b.Bytes()), Length: len(b.Bytes())}, b.Bytes()); err != nil {
		c.t.Fatal(err)
	}
}

func (c *capture) save(path string) string {
	if err := os.WriteFile(path, c.buf.Bytes(), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return path
}

// TestDefaultRulesOnRealScan: the lab's scanning device, as the real sensor
// code sees it, is quarantined by the default rules when it is not
// clinical, and gets a pending decision when it is life-critical. The
// packets are those of the lab's attack generator (its scan ports against
// the other devices of floor 1 and the floor gateway, answered by resets),
// replayed through the sensor's XDP program and engine (node/replay) after
// a learning capture froze the baselines; the alerts and devices the engine
// produces are reported to a three-coordinator cluster as a sensor reports
// them. No alert is written by hand.
//
// The run is then the recorded log of the acceptance test: the leader's
// Raft log, replayed into three fresh FSMs, gives byte-identical decision
// logs, equal to the cluster's own.
func TestDefaultRulesOnRealScan(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("replaying packets through the sensor's XDP program needs root (BPF_PROG_TEST_RUN)")
	}
	labCfg := lab.DefaultConfig()
	byName := map[string]lab.DeviceInfo{}
	var floor1 []lab.DeviceInfo
	for _, d := range labCfg.Devices() {
		byName[d.Name] = d
		if d.Floor == 1 {
			floor1 = append(floor1, d)
		}
	}
	ws, pump := byName["ws1"], byName["pump1"] // Dell workstation; Baxter pump
	gwMAC, _ := net.ParseMAC("02:00:00:00:01:01")
	server := netip.MustParseAddr("10.98.0.10")
	start := time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
	syn := func(t *layers.TCP) { t.SYN = true }
	synack := func(t *layers.TCP) { t.SYN, t.ACK = true, true }
	ack := func(t *layers.TCP) { t.ACK = true }
	rst := func(t *layers.TCP) { t.RST, t.ACK = true, true }
	mac := func(d lab.DeviceInfo) net.HardwareAddr { m, _ := net.ParseMAC(d.MAC); return m }
	addr := func(d lab.DeviceInfo) netip.Addr { return netip.MustParseAddr(d.IP) }

	// Learning: each device's everyday traffic to one server.
	learn := newCapture(t, start)
	for i := range 5 {
		for _, d := range []lab.DeviceInfo{ws, pump} {
			sport := uint16(40000 + i)
			learn.tcp(mac(d), gwMAC, addr(d), server, sport, 443, syn)
			learn.tcp(gwMAC, mac(d), server, addr(d), 443, sport, synack)
			learn.tcp(mac(d), gwMAC, addr(d), server, sport, 443, ack)
		}
	}
	// The attack generator's scan, run from each device in turn.
	scan := newCapture(t, start.Add(10*time.Minute))
	for _, d := range []lab.DeviceInfo{ws, pump} {
		cfg := sim.DefaultConfig(sim.KindCompromised, d.Name)
		type host struct {
			ip  netip.Addr
			mac net.HardwareAddr
		}
		var hosts []host
		for _, o := range floor1 {
			if o.Name != d.Name {
				hosts = append(hosts, host{addr(o), mac(o)})
			}
		}
		hosts = append(hosts, host{labCfg.FloorGateway(1), gwMAC})
		sport := uint16(50000)
		for _, h := range hosts {
			for _, p := range cfg.ScanPorts {
				sport++
				scan.tcp(mac(d), h.mac, addr(d), h.ip, sport, uint16(p), syn)
				scan.tcp(h.mac, mac(d), h.ip, addr(d), uint16(p), sport, rst)
			}
		}
	}
	dir := t.TempDir()
	a, err := replay.Analyze(context.Background(), scan.save(filepath.Join(dir, "scan.pcap")),
		replay.AnalyzeOptions{Replay: replay.DefaultOptions(), SensorID: "s1", Learn: learn.save(filepath.Join(dir, "learn.pcap"))}, testLogger())
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	// The sensor's records, in the order its reporter sends them: devices,
	// then alerts.
	var recs []*medmeshv1.SensorRecord
	seq := uint64(0)
	for _, d := range a.DeviceRecords() {
		seq++
		recs = append(recs, &medmeshv1.SensorRecord{Seq: seq, Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: d}}})
	}
	scans := map[string]bool{}
	for _, al := range a.AlertRecords() {
		seq++
		recs = append(recs, &medmeshv1.SensorRecord{Seq: seq, Record: &medmeshv1.SensorRecord_Alert{Alert: al}})
		if al.GetKind() == "scan" {
			scans[al.GetDeviceMac()] = true
			t.Logf("sensor alert %s: %s %s score %d: %s", al.GetId(), al.GetDeviceMac(), al.GetKind(), al.GetRisk().GetScore(), al.GetSummary())
		}
	}
	// A scan folds into its scan alert: per scanning device, the first
	// probe's new_peer (raised before anything tells it is a scan) and one
	// scan, nothing about the probed devices (393 alerts before issue 16).
	t.Logf("the sensor raised %d alerts from %d devices", len(a.AlertRecords()), len(a.DeviceRecords()))
	if n := len(a.AlertRecords()); n > 4 {
		t.Errorf("the sensor raised %d alerts for two scans, want at most 2 per scanning device", n)
	}
	if !scans[ws.MAC] || !scans[pump.MAC] {
		t.Fatalf("the sensor raised no scan alert for the scanning devices: %v", scans)
	}

	cl := newCluster(t, 3, nil)
	cl.waitReady()
	if _, err := sensorReport(t, cl.leader().conn, "s1", recs...); err != nil {
		t.Fatalf("report: %v", err)
	}
	q := medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE
	var wsQ, pumpQ *medmeshv1.Decision
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
		wsQ, pumpQ = nil, nil
		for _, d := range decisionsNow(t, cl.leader()) {
			if d.GetAction() == q && d.GetRule() == "quarantine-scanner" && d.GetTargetDecisionId() == "" {
				switch d.GetDeviceMac() {
				case ws.MAC:
					wsQ = d
				case pump.MAC:
					pumpQ = d
				}
			}
		}
		return wsQ != nil && pumpQ != nil
	}, "quarantine-scanner decisions for both scanning devices")
	if dev := cl.leader().c.fsm.Device(ws.MAC); wsQ.GetState() != medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE ||
		dev.GetTier() != medmeshv1.Tier_TIER_NON_CLINICAL {
		t.Fatalf("non-clinical %s (%v, %v): %v, want an effective quarantine", ws.Name, dev.GetDeviceClass(), dev.GetTier(), wsQ)
	}
	if dev := cl.leader().c.fsm.Device(pump.MAC); pumpQ.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL ||
		dev.GetTier() != medmeshv1.Tier_TIER_LIFE_CRITICAL {
		t.Fatalf("life-critical %s (%v, %v): %v, want a pending quarantine", pump.Name, dev.GetDeviceClass(), dev.GetTier(), pumpQ)
	}
	t.Logf("%s: %s %s; %s: %s %s", ws.Name, wsQ.GetAction(), wsQ.GetState(), pump.Name, pumpQ.GetAction(), pumpQ.GetState())
	// An operator's review and a rule change belong to the recorded log too.
	if _, err := cl.leader().decisions().RejectDecision(ctxT(t, 5*time.Second), &medmeshv1.RejectDecisionRequest{Id: pumpQ.GetId(), Reason: "pump is being serviced"}); err != nil {
		t.Fatalf("reject: %v", err)
	}
	if _, err := medmeshv1.NewRuleServiceClient(cl.leader().conn).DeleteRule(ctxT(t, 5*time.Second), &medmeshv1.DeleteRuleRequest{Name: "notify-medium", Reason: "noisy"}); err != nil {
		t.Fatalf("delete rule: %v", err)
	}

	// Acceptance: replay the recorded log into three fresh FSMs.
	leader := cl.leader()
	last := leader.c.raft.LastIndex()
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, func() bool { return leader.c.fsm.AppliedIndex() >= last }, "leader applied its log")
	var logs []*raft.Log
	for i := uint64(1); i <= last; i++ {
		var l raft.Log
		if err := leader.c.store.GetLog(i, &l); err != nil {
			t.Fatalf("log %d: %v (the test needs the whole log: no snapshot may have compacted it)", i, err)
		}
		logs = append(logs, &l)
	}
	decisionLog := func(f *fsm.FSM) []byte {
		ds, _, _ := f.ListDecisions(0, 1<<30, func(*medmeshv1.Decision) bool { return true })
		var out []byte
		for _, d := range ds {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b...)
		}
		return out
	}
	incidentLog := func(f *fsm.FSM) []byte {
		incs, _, _ := f.IncidentsChanged(0, "", 1<<30, func(*medmeshv1.Incident) bool { return true })
		var out []byte
		for _, inc := range incs {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(inc)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b...)
		}
		return out
	}
	want, wantInc := decisionLog(leader.c.fsm), incidentLog(leader.c.fsm)
	for r := range 3 {
		f := fsm.New()
		for _, l := range logs {
			if l.Type == raft.LogCommand {
				f.Apply(l)
			}
		}
		if got := decisionLog(f); !bytes.Equal(got, want) {
			t.Fatalf("replica %d replayed %d entries into a different decision log (%d bytes, want %d)", r, len(logs), len(got), len(want))
		}
		if got := incidentLog(f); !bytes.Equal(got, wantInc) {
			t.Fatalf("replica %d replayed %d entries into different incidents (%d bytes, want %d)", r, len(logs), len(got), len(wantInc))
		}
	}
	t.Logf("%d log entries replayed into 3 fresh FSMs: identical decision logs (%d bytes) and incidents (%d bytes)", len(logs), len(want), len(wantInc))

	// Each scan is one incident about its scanner, the scanned devices
	// affected in it; each scanner's quarantine is its incident's.
	for _, d := range []struct {
		dev lab.DeviceInfo
		q   *medmeshv1.Decision
	}{{ws, wsQ}, {pump, pumpQ}} {
		inc := leader.c.fsm.Incident(d.q.GetIncidentId())
		if inc.GetDeviceMac() != d.dev.MAC {
			t.Fatalf("%s's quarantine belongs to incident %v", d.dev.Name, inc)
		}
		var stages []string
		for _, st := range inc.GetTimeline() {
			stages = append(stages, st.GetStage().String()+" "+st.GetAttack().GetTechniqueId())
		}
		if !slices.ContainsFunc(inc.GetTimeline(), func(st *medmeshv1.IncidentStep) bool {
			return st.GetStage() == medmeshv1.IncidentStage_INCIDENT_STAGE_RECONNAISSANCE && st.GetAttack().GetTechniqueId() == "T0846"
		}) {
			t.Fatalf("%s's incident has no reconnaissance (T0846) step: %v", d.dev.Name, stages)
		}
		for _, dv := range inc.GetDevices() {
			if dv.GetMac() != d.dev.MAC && dv.GetRole() != medmeshv1.IncidentRole_INCIDENT_ROLE_AFFECTED {
				t.Fatalf("%s's incident: probed device %s is a %v", d.dev.Name, dv.GetMac(), dv.GetRole())
			}
		}
		t.Logf("%s: incident %s, %d devices, stages %v, %d alerts", d.dev.Name, inc.GetId(), len(inc.GetDevices()), stages, inc.GetEvidence().GetAlertCount())
	}
}
