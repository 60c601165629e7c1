package resolve

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medmesh/medmesh/internal/testutil"
)

type installs struct {
	mu   sync.Mutex
	got  []installed
	fail error
}

type installed struct {
	name  string
	addrs []netip.Addr
	at    time.Time
}

func (in *installs) install(name string, a []netip.Addr) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.got = append(in.got, installed{name, slices.Clone(a), time.Now()})
	return in.fail
}

func (in *installs) list() []installed {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.got)
}

// The resolver against a real DNS server whose record changes: the first
// answer is installed at once, the changed address only once the first
// answer's TTL ran out, and while the server fails (SERVFAIL, then no
// server at all) nothing is installed or removed: the status keeps the
// last addresses and says why.
func TestResolverFollowsRealServer(t *testing.T) {
	z := testutil.StartDNSZone(t)
	z.Set(t, "pump-cloud.example.com", "pump-cloud.example.com. 1 IN A 192.0.2.1")
	c, err := NewClient([]string{z.Addr}, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.MinTTL, cfg.RetryMin = 200*time.Millisecond, 50*time.Millisecond
	in := &installs{}
	r, err := New(cfg, c.Lookup, in.install, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	defer func() { cancel(); <-done }()

	r.Want([]string{"pump-cloud.example.com"})
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, func() bool { return len(in.list()) == 1 }, "first answer installed")
	first := in.list()[0]
	if first.name != "pump-cloud.example.com" || !slices.Equal(first.addrs, addrs("192.0.2.1")) {
		t.Fatalf("first install %+v", first)
	}
	z.Set(t, "pump-cloud.example.com", "pump-cloud.example.com. 1 IN A 192.0.2.2")
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, func() bool { return len(in.list()) == 2 }, "changed answer installed")
	second := in.list()[1]
	if !slices.Equal(second.addrs, addrs("192.0.2.2")) {
		t.Fatalf("second install %+v", second)
	}
	if d := second.at.Sub(first.at); d < time.Second {
		t.Fatalf("the changed address was installed %s after the first answer, before its 1 s TTL ran out", d)
	}
	st := r.Status()
	if len(st) != 1 || st[0].TTL != time.Second || st[0].Next.Sub(st[0].Time) != time.Second || st[0].Err != "" {
		t.Fatalf("status %+v", st)
	}

	z.SetFail("pump-cloud.example.com", true)
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, func() bool { return r.Status()[0].Err != "" }, "failure reported")
	z.SetDown(true)
	before := r.Status()[0].Err
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, func() bool { return r.Status()[0].Err != before }, "dead server reported")
	st = r.Status()
	if !slices.Equal(st[0].Addrs, addrs("192.0.2.2")) || !st[0].Resolved {
		t.Fatalf("addresses not kept while DNS fails: %+v", st[0])
	}
	if n := len(in.list()); n != 2 {
		t.Fatalf("%d installs while DNS failed, want none", n)
	}
	r.Want(nil)
	if st := r.Status(); len(st) != 0 {
		t.Fatalf("status of names no longer wanted: %+v", st)
	}
}

// The timing, in a synctest bubble with scripted answers: a short TTL is
// held to the floor, a long one to the ceiling, failures retry after
// 1, 2, 4 ... s up to the floor and keep the addresses, a failed install
// is retried with the next answer although it did not change, and a seeded
// name (adopted after a restart) is asked at once and not installed again
// when the answer matches.
func TestResolverTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var (
			mu    sync.Mutex
			asked []time.Duration
			next  []func() (Answer, error)
		)
		script := func(f ...func() (Answer, error)) {
			mu.Lock()
			defer mu.Unlock()
			next = append(next, f...)
		}
		lookup := func(_ context.Context, name string) (Answer, error) {
			mu.Lock()
			defer mu.Unlock()
			asked = append(asked, time.Since(start))
			if len(next) == 0 {
				return Answer{}, errors.New("no answer scripted")
			}
			f := next[0]
			next = next[1:]
			return f()
		}
		ans := func(ttl time.Duration, a ...string) func() (Answer, error) {
			return func() (Answer, error) { return Answer{Addrs: addrs(a...), TTL: ttl}, nil }
		}
		fail := func() (Answer, error) { return Answer{}, errors.New("SERVFAIL") }
		in := &installs{}
		r, err := New(DefaultConfig(), lookup, in.install, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.Run(ctx) }()

		script(ans(5*time.Second, "192.0.2.1"), ans(2*time.Hour, "192.0.2.1"), ans(time.Minute, "192.0.2.2"),
			fail, fail, fail, fail, fail, fail, fail, ans(time.Minute, "192.0.2.2"))
		r.Want([]string{"a.example.com"})
		time.Sleep(2*time.Hour + 10*time.Minute)
		synctest.Wait()
		mu.Lock()
		got := slices.Clone(asked)
		mu.Unlock()
		s := time.Second
		// 0: TTL 5 s held to 30 s; 30 s: TTL 2 h held to 1 h; 1h30s: TTL
		// 1 min; then seven failures 1, 2, 4, 8, 16, 30, 30 s apart, and
		// an answer.
		t1 := 30*s + time.Hour
		t2 := t1 + time.Minute
		want := []time.Duration{0, 30 * s, t1, t2, t2 + s, t2 + 3*s, t2 + 7*s, t2 + 15*s, t2 + 31*s, t2 + 61*s, t2 + 91*s}
		if !slices.Equal(got[:len(want)], want) {
			t.Fatalf("asked at %v,\nwant      %v", got[:len(want)], want)
		}
		if list := in.list(); len(list) != 2 || !slices.Equal(list[0].addrs, addrs("192.0.2.1")) || !slices.Equal(list[1].addrs, addrs("192.0.2.2")) {
			t.Fatalf("installs %+v: want one per change, none for failures", list)
		}

		// A failed install is retried with the next answer, unchanged.
		in.mu.Lock()
		in.fail, in.got = errors.New("no free rule slot"), nil
		in.mu.Unlock()
		script(ans(time.Minute, "192.0.2.3"), ans(time.Minute, "192.0.2.3"))
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if list := in.list(); len(list) < 2 || !slices.Equal(list[1].addrs, addrs("192.0.2.3")) {
			t.Fatalf("installs after a failed one: %+v", list)
		}
		in.mu.Lock()
		in.fail = nil
		in.mu.Unlock()

		// A seeded name is asked at once; the same answer installs nothing.
		in.mu.Lock()
		in.got = nil
		in.mu.Unlock()
		mu.Lock()
		next, asked = nil, nil
		mu.Unlock()
		r.Want(nil)
		r.Seed("b.example.com", addrs("198.51.100.7"))
		script(ans(time.Minute, "198.51.100.7"))
		r.Want([]string{"b.example.com"})
		time.Sleep(time.Second)
		synctest.Wait()
		mu.Lock()
		n := len(asked)
		mu.Unlock()
		if n != 1 || len(in.list()) != 0 {
			t.Fatalf("seeded name: asked %d times, %d installs; want 1 and 0", n, len(in.list()))
		}
		cancel()
		<-done
	})
}
