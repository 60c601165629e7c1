package gossip

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/medmesh/medmesh/internal/testutil"
)

func sh(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// inNS runs f on a locked OS thread switched into ns.
func inNS(ns netns.NsHandle, f func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: it dies with the goroutine rather than
		// serving others from the wrong namespace.
		return fmt.Errorf("restore netns: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// dialIn opens memberlist's TCP connections from inside ns: listeners
// created in a namespace stay there, but new sockets belong to the
// namespace of the thread that creates them.
func dialIn(ns netns.NsHandle) DialFunc {
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		var c net.Conn
		err := inNS(ns, func() error {
			var err error
			c, err = net.DialTimeout("tcp", addr, timeout)
			return err
		})
		return c, err
	}
}

// TestPartitionAcrossNamespaces runs three sensors in their own network
// namespaces, bridged by veth pairs; one is cut off with nftables (TCP and
// UDP both dropped) until the others declare it dead, then healed; after
// the heal every member sees all three alive.
func TestPartitionAcrossNamespaces(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("skipped: nft not installed")
	}
	prefix := fmt.Sprintf("mmg%d", os.Getpid()%100000)
	hub := prefix + "h"
	sh(t, "ip", "netns", "add", hub)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", hub).Run() })
	sh(t, "ip", "-n", hub, "link", "add", "br0", "type", "bridge")
	sh(t, "ip", "-n", hub, "link", "set", "br0", "up")

	const n = 3
	var gs []*Gossip
	var names []string
	for i := range n {
		name := fmt.Sprintf("%s%d", prefix, i)
		names = append(names, name)
		sh(t, "ip", "netns", "add", name)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
		veth := fmt.Sprintf("v%d", i)
		sh(t, "ip", "-n", hub, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
		sh(t, "ip", "-n", hub, "link", "set", veth, "master", "br0", "up")
		sh(t, "ip", "-n", name, "addr", "add", fmt.Sprintf("10.77.0.%d/24", i+1), "dev", "eth0")
		sh(t, "ip", "-n", name, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", name, "link", "set", "lo", "up")

		ns, err := netns.GetFromName(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ns.Close() })
		cfg := TestConfig(fmt.Sprintf("sensor-%d", i))
		cfg.BindAddr = fmt.Sprintf("10.77.0.%d", i+1)
		cfg.BindPort = DefaultPort
		cfg.Keys = [][]byte{key1}
		cfg.Label = "campus-a"
		cfg.Floor = fmt.Sprint(i + 1)
		cfg.Dial = dialIn(ns)
		if i > 0 {
			cfg.Join = []string{"10.77.0.1:7402"}
		}
		var g *Gossip
		if err := inNS(ns, func() error {
			var err error
			g, err = New(cfg, testLogger(t), nil)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Close() })
		gs = append(gs, g)
	}
	allAlive := func() bool {
		for _, g := range gs {
			if alive(g) != n {
				return false
			}
		}
		return true
	}
	testutil.Eventually(t, 20*time.Second, 10*time.Millisecond, allAlive, "namespaced sensors did not converge")
	if m := gs[0].Members(); m[2].Addr != "10.77.0.3:7402" || m[2].Floor != "3" {
		t.Fatalf("member view %+v", m[2])
	}

	// Partition sensor-2: drop its TCP and UDP on its link, both ways.
	cut := names[2]
	rules := t.TempDir() + "/partition.nft"
	if err := os.WriteFile(rules, []byte(`table inet partition {
	chain in {
		type filter hook input priority 0; policy accept;
		iifname "eth0" meta l4proto { tcp, udp } drop
	}
	chain out {
		type filter hook output priority 0; policy accept;
		oifname "eth0" meta l4proto { tcp, udp } drop
	}
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "ip", "netns", "exec", cut, "nft", "-f", rules)
	partitioned := time.Now()
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, func() bool {
		return stateOf(gs[0], "sensor-2") == StateDead && stateOf(gs[1], "sensor-2") == StateDead &&
			stateOf(gs[2], "sensor-0") == StateDead && stateOf(gs[2], "sensor-1") == StateDead
	}, "partition not detected on both sides")
	t.Logf("partition detected on both sides in %v", time.Since(partitioned))
	if alive(gs[0]) != 2 || alive(gs[1]) != 2 || alive(gs[2]) != 1 {
		t.Fatalf("during partition: alive %d %d %d", alive(gs[0]), alive(gs[1]), alive(gs[2]))
	}
	// Keep the partition past GossipToTheDeadTime, so only the reconnect
	// loop can heal it.
	time.Sleep(gs[0].cfg.GossipToTheDeadTime + 500*time.Millisecond)

	sh(t, "ip", "netns", "exec", cut, "nft", "delete", "table", "inet", "partition")
	healed := time.Now()
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, allAlive, "membership not restored after heal")
	t.Logf("membership restored %v after heal", time.Since(healed))
	for _, g := range gs {
		for _, m := range g.Members() {
			if m.State != StateAlive || m.Role != RoleSensor {
				t.Fatalf("%s sees %s as %s/%s after heal", g.Name(), m.Name, m.State, m.Role)
			}
		}
	}
}
