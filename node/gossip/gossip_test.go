package gossip

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/flow"
)

func TestMain(m *testing.M) {
	// memberlist's Shutdown does not wait for a probe in flight: its
	// probeNode goroutine waits for the ack or the probe's timer (bounded
	// by the probe interval) and then returns. Under load it can outlive
	// goleak's retries (seen once in CI); every other goroutine counts.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}

var (
	key1 = bytes.Repeat([]byte{1}, 32)
	key2 = bytes.Repeat([]byte{2}, 32)
	key3 = bytes.Repeat([]byte{3}, 16)
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("MEDMESH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// start starts a member; it is closed (gracefully) when the test ends,
// unless the test killed or closed it first.
func start(t testing.TB, cfg Config) *Gossip {
	t.Helper()
	g, err := New(cfg, testLogger(t), nil)
	if err != nil {
		t.Fatalf("new %s: %v", cfg.NodeName, err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func cluster(t testing.TB, n int, mod func(*Config)) []*Gossip {
	t.Helper()
	var gs []*Gossip
	for i := range n {
		cfg := TestConfig(fmt.Sprintf("s%02d", i))
		cfg.Keys = [][]byte{key1}
		cfg.Label = "campus-a"
		cfg.Floor = fmt.Sprint(i % 5)
		cfg.Zone = "icu"
		cfg.APIAddr = fmt.Sprintf("127.0.0.1:%d", 17400+i)
		cfg.Version = "test"
		if i > 0 {
			cfg.Join = []string{gs[0].Addr()}
		}
		if mod != nil {
			mod(&cfg)
		}
		gs = append(gs, start(t, cfg))
	}
	return gs
}

func alive(g *Gossip) int {
	n := 0
	for _, m := range g.Members() {
		if m.State == StateAlive {
			n++
		}
	}
	return n
}

func stateOf(g *Gossip, name string) State {
	for _, m := range g.Members() {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}

func TestConvergeAndDetectFailure(t *testing.T) {
	const n = 16
	begin := time.Now()
	gs := cluster(t, n, nil)
	testutil.Eventually(t, 60*time.Second, 10*time.Millisecond, func() bool {
		for _, g := range gs {
			if alive(g) != n {
				return false
			}
		}
		return true
	}, "16 members did not converge")
	t.Logf("16 members converged in %v", time.Since(begin))

	// Metadata travels with membership.
	for _, m := range gs[3].Members() {
		if m.Role != RoleSensor || m.Zone != "icu" || m.Version != "test" || m.APIAddr == "" {
			t.Fatalf("member %s metadata %+v", m.Name, m.Meta)
		}
	}
	if got := gs[7].Members()[2]; got.Name != "s02" || got.Floor != "2" || got.APIAddr != "127.0.0.1:17402" {
		t.Fatalf("member s02 = %+v", got)
	}

	victim := gs[n-1]
	killed := time.Now()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	rest := gs[:n-1]
	testutil.Eventually(t, 60*time.Second, 5*time.Millisecond, func() bool {
		for _, g := range rest {
			if stateOf(g, victim.Name()) != StateDead {
				return false
			}
		}
		return true
	}, "killed member not declared dead everywhere")
	took := time.Since(killed)
	bound := rest[0].FailureDetectionBound(n)
	t.Logf("killed member declared dead by all 15 in %v (suspicion bound %v, probe interval %v)",
		took, bound, rest[0].cfg.ProbeInterval)
	testutil.Eventually(t, 60*time.Second, 10*time.Millisecond, func() bool {
		for _, g := range rest {
			if alive(g) != n-1 {
				return false
			}
		}
		return true
	}, "survivors do not agree on %d alive", n-1)

	// A graceful leave shows as "left", not "dead".
	leaver := gs[n-2]
	if err := leaver.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, 5*time.Millisecond, func() bool {
		return stateOf(gs[0], leaver.Name()) == StateLeft && stateOf(gs[5], leaver.Name()) == StateLeft
	}, "leaving member not seen as left")
}

func TestWrongKeyOrLabelCannotJoin(t *testing.T) {
	gs := cluster(t, 2, nil)
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, func() bool {
		return alive(gs[0]) == 2 && alive(gs[1]) == 2
	}, "pair did not converge")

	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"wrong-key", func(c *Config) { c.Keys = [][]byte{key2} }},
		{"no-key", func(c *Config) { c.Keys = nil }},
		{"wrong-label", func(c *Config) { c.Keys = [][]byte{key1}; c.Label = "campus-b" }},
		{"no-label", func(c *Config) { c.Keys = [][]byte{key1}; c.Label = "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := TestConfig("intruder-" + tc.name)
			tc.mod(&cfg)
			g := start(t, cfg)
			if n, err := g.Join(gs[0].Addr()); err == nil {
				t.Fatalf("join with %s succeeded (%d answered)", tc.name, n)
			}
			// Give gossip a few rounds: nobody admits the intruder.
			deadline := time.Now().Add(10 * gs[0].cfg.ProbeInterval)
			for time.Now().Before(deadline) {
				if stateOf(gs[0], g.Name()) != "" || stateOf(gs[1], g.Name()) != "" || alive(g) != 1 {
					t.Fatalf("intruder %s admitted", g.Name())
				}
				time.Sleep(gs[0].cfg.ProbeInterval)
			}
			if err := g.Close(); err != nil {
				t.Logf("close intruder: %v", err)
			}
		})
	}
}

func TestKeyRotationWithoutRestart(t *testing.T) {
	const n = 4
	gs := cluster(t, n, nil)
	converged := func() bool {
		for _, g := range gs {
			if alive(g) != len(gs) {
				return false
			}
		}
		return true
	}
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, converged, "cluster did not converge")

	for _, step := range []struct {
		name string
		do   func(*Gossip) error
	}{
		{"install", func(g *Gossip) error { return g.InstallKey(key2) }},
		{"use", func(g *Gossip) error { return g.UseKey(key2) }},
		{"remove", func(g *Gossip) error { return g.RemoveKey(key1) }},
	} {
		for _, g := range gs {
			if err := step.do(g); err != nil {
				t.Fatalf("%s on %s: %v", step.name, g.Name(), err)
			}
		}
	}
	for _, g := range gs {
		if keys := g.Keys(); len(keys) != 1 || !bytes.Equal(keys[0], key2) {
			t.Fatalf("%s keys after rotation: %x", g.Name(), keys)
		}
	}
	// Traffic under the new key only still works: nobody is declared dead
	// over several probe rounds, and a newcomer with just the new key joins.
	cfg := TestConfig("newcomer")
	cfg.Keys, cfg.Label = [][]byte{key2}, "campus-a"
	cfg.Join = []string{gs[2].Addr()}
	gs = append(gs, start(t, cfg))
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, converged, "newcomer with rotated key did not converge")
	for _, g := range gs {
		for _, m := range g.Members() {
			if m.State != StateAlive {
				t.Fatalf("%s sees %s %s after rotation", g.Name(), m.Name, m.State)
			}
		}
	}
	// The retired key no longer gets in.
	old := TestConfig("old-key")
	old.Keys, old.Label = [][]byte{key1}, "campus-a"
	og := start(t, old)
	if _, err := og.Join(gs[0].Addr()); err == nil {
		t.Fatal("member with the retired key joined")
	}
	if err := gs[0].RemoveKey(key2); err == nil {
		t.Fatal("removing the primary key succeeded")
	}
	if err := gs[0].InstallKey(key3[:5]); err == nil {
		t.Fatal("installing a 5-byte key succeeded")
	}
}

func TestSightingsAndRoamingHook(t *testing.T) {
	gs := cluster(t, 3, nil)
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, func() bool {
		return alive(gs[0]) == 3 && alive(gs[1]) == 3 && alive(gs[2]) == 3
	}, "cluster did not converge")

	var mu sync.Mutex
	var atB []Sighting
	gs[1].OnSighting(func(s Sighting) {
		mu.Lock()
		atB = append(atB, s)
		mu.Unlock()
	})
	pump := flow.MAC{0x00, 0x1b, 0x4f, 0, 0, 1}
	now := time.Now()
	if _, arrived := gs[0].Observe(pump, now); !arrived {
		t.Fatal("first sighting at A is not an arrival")
	}
	if _, arrived := gs[0].Observe(pump, now.Add(time.Millisecond)); arrived {
		t.Fatal("second sighting at A is an arrival")
	}
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() bool {
		s, ok := gs[1].Sighting(pump)
		s2, ok2 := gs[2].Sighting(pump)
		return ok && ok2 && s.Sensor == "s00" && s2.Sensor == "s00"
	}, "sighting did not reach B and C")
	mu.Lock()
	if len(atB) == 0 || atB[0].MAC != pump || atB[0].Sensor != "s00" || atB[0].Floor != "0" {
		t.Fatalf("B callbacks: %+v", atB)
	}
	mu.Unlock()

	// The pump roams to B: B learns it was last seen at A.
	prev, arrived := gs[1].Observe(pump, now.Add(time.Second))
	if !arrived || prev.Sensor != "s00" {
		t.Fatalf("roam to B: arrived=%v prev=%+v", arrived, prev)
	}
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() bool {
		s, _ := gs[0].Sighting(pump)
		s2, _ := gs[2].Sighting(pump)
		return s.Sensor == "s01" && s2.Sensor == "s01"
	}, "B's sighting did not supersede A's everywhere")

	// A late member learns sightings through push/pull state.
	cfg := TestConfig("late")
	cfg.Keys, cfg.Label = [][]byte{key1}, "campus-a"
	cfg.Join = []string{gs[2].Addr()}
	late := start(t, cfg)
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() bool {
		s, ok := late.Sighting(pump)
		return ok && s.Sensor == "s01"
	}, "late member did not learn the sighting")
}

func TestMetaEncoding(t *testing.T) {
	m := Meta{Role: RoleCoordinator, Floor: "3", Zone: "icu", APIAddr: "10.0.0.1:7400", Version: "v0.1.0"}
	b, err := m.encode()
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != metaVersion || len(b) != 2+4+len("3icu10.0.0.1:7400v0.1.0") {
		t.Fatalf("encoding %x", b)
	}
	got, err := decodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for i := range b {
		if _, err := decodeMeta(b[:i]); err == nil {
			t.Fatalf("truncated metadata (%d bytes) decoded", i)
		}
	}
	if _, err := decodeMeta(append([]byte{9}, b[1:]...)); err == nil {
		t.Fatal("unknown version decoded")
	}
	if _, err := (Meta{Role: "janitor"}).encode(); err == nil {
		t.Fatal("unknown role encoded")
	}
	s := Sighting{MAC: flow.MAC{1, 2, 3, 4, 5, 6}, Sensor: "s1", Floor: "2", Time: time.Unix(0, 12345).UTC()}
	msg := encodeSightingMsg(s)
	if msg[0] != msgSighting {
		t.Fatal("sighting type byte")
	}
	if got, rest, err := readSighting(msg[1:]); err != nil || got != s || len(rest) != 0 {
		t.Fatalf("sighting round trip %+v %v", got, err)
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := TestConfig("")
	if err := cfg.validate(); err == nil {
		t.Fatal("empty name accepted")
	}
	cfg = TestConfig("x")
	cfg.Keys = [][]byte{[]byte("short")}
	if err := cfg.validate(); err == nil {
		t.Fatal("bad key accepted")
	}
	cfg = TestConfig("x")
	cfg.Role = "janitor"
	if err := cfg.validate(); err == nil {
		t.Fatal("bad role accepted")
	}
	if ok := TestConfig("ok"); ok.validate() != nil {
		t.Fatal(ok.validate())
	}
	if d := SuspicionTimeout(4, 100, time.Second); d != 8*time.Second || SuspicionTimeout(4, 5, time.Second) != 4*time.Second {
		t.Fatalf("suspicion timeout for 100 = %v", d)
	}
}
