//go:build linux

package enforcer_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/medmesh/medmesh/internal/testutil"
)

// The floor of decision propagation on this machine: the least any
// replicated system could do to carry a write from a leader to watchers
// on three replicas, durably. Three processes, member 0 the leader; a
// write reaches the leader, which stamps it, sends it to both followers
// and appends it to its own file at once; every member makes the append
// durable with one pwrite and one fdatasync of a preallocated file (what
// raft-wal's segments and etcd's WAL do for an entry); the write is
// committed as soon as any two of the three appends are durable (the
// earliest a 3-member majority can be); the leader then sends it to its
// own watchers and a commit notice to the followers, which send the entry
// they already hold to theirs. No consensus state, no encoding, no state
// machine, no authorization, no datapath update: only what no program can
// skip. Its latency is measured as medmesh's is, from the leader's stamp
// to a watcher's read, so a system at the floor has a ratio of 1 to it;
// run in the same rotation as etcd, it shows how far below etcd's p50
// and p99 this machine's disk and scheduler let any program go.

// floorHostEnv makes the test binary one member of the floor (see
// TestFloorHost). Its value, space-separated: the member's number, its
// data directory, then every member's address (the leader's first).
const floorHostEnv = "MEDMESH_BENCH_FLOOR_HOST"

// floorEntrySize is a floor entry's payload: about one PutPolicy command
// of the benchmark in medmesh's log.
const floorEntrySize = 512

// Connection kinds, the first byte a member reads from a connection.
const (
	floorClient  = 'c' // a writer: [u32 length][payload] in, [u64 seq] out once committed
	floorPeer    = 'p' // the leader to a follower: entries and commit notices in, [u64 seq] acks out
	floorWatcher = 'w' // [u64 seq][i64 stamp][u32 length][payload] out for each committed entry
)

// Frames from the leader to a follower: an entry, or a commit notice.
const (
	floorEntry  = 'E' // [u64 seq][i64 stamp][u32 length][payload]
	floorCommit = 'C' // [u64 seq]
)

// TestFloorHost is not a test but one member process of the floor in
// BenchmarkPropagation, with floorHostEnv set, until its stdin closes.
func TestFloorHost(t *testing.T) {
	v, ok := os.LookupEnv(floorHostEnv)
	if !ok {
		t.Skip("skipped: only a floor member process of BenchmarkPropagation")
	}
	f := strings.Fields(v)
	if len(f) != 5 {
		t.Fatalf("%s=%q: want member, data dir, three addresses", floorHostEnv, v)
	}
	i, err := strconv.Atoi(f[0])
	if err != nil || i < 0 || i > 2 {
		t.Fatalf("%s=%q: member %q is not 0, 1 or 2", floorHostEnv, v, f[0])
	}
	m, err := newFloorMember(i, f[1], f[2:])
	if err != nil {
		t.Fatal(err)
	}
	go m.serve()
	fmt.Println("FLOOR SERVING")
	io.Copy(io.Discard, os.Stdin)
}

// floorMember is one member of the floor.
type floorMember struct {
	ln  net.Listener
	log *os.File
	off int64

	mu       sync.Mutex
	watchers []net.Conn
	pending  map[uint64][]byte // a follower's entries by seq, until committed

	// The leader's: followers' connections, and the durable appends of
	// the write in flight (its own and the followers' acks).
	followers []net.Conn
	durable   chan uint64
}

func newFloorMember(i int, dir string, peers []string) (*floorMember, error) {
	ln, err := net.Listen("tcp", peers[i])
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	log, err := os.OpenFile(filepath.Join(dir, "floor.log"), os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Fallocate(int(log.Fd()), 0, 0, 64<<20); err != nil {
		return nil, err
	}
	if err := log.Sync(); err != nil {
		return nil, err
	}
	m := &floorMember{ln: ln, log: log, pending: map[uint64][]byte{}, durable: make(chan uint64, 16)}
	if i == 0 {
		for _, addr := range peers[1:] {
			c, err := dialFloor(addr, floorPeer)
			if err != nil {
				return nil, err
			}
			m.followers = append(m.followers, c)
			go m.readAcks(c)
		}
	}
	return m, nil
}

// dialFloor connects to a member as kind, retrying while it starts.
func dialFloor(addr string, kind byte) (net.Conn, error) {
	var err error
	for range 300 {
		var c net.Conn
		if c, err = net.Dial("tcp", addr); err == nil {
			if _, err = c.Write([]byte{kind}); err == nil {
				return c, nil
			}
			c.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

func (m *floorMember) serve() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			var kind [1]byte
			if _, err := io.ReadFull(c, kind[:]); err != nil {
				c.Close()
				return
			}
			switch kind[0] {
			case floorWatcher:
				m.mu.Lock()
				m.watchers = append(m.watchers, c)
				m.mu.Unlock()
			case floorClient:
				m.lead(c)
			case floorPeer:
				m.follow(c)
			default:
				c.Close()
			}
		}()
	}
}

// appendDurably writes an entry at the end of the log and makes it
// durable.
func (m *floorMember) appendDurably(entry []byte) error {
	if _, err := m.log.WriteAt(entry, m.off); err != nil {
		return err
	}
	m.off += int64(len(entry))
	return unix.Fdatasync(int(m.log.Fd()))
}

// lead serves one writer: each write is stamped, replicated, committed
// on the second durable append and sent to the watchers.
func (m *floorMember) lead(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	appends := make(chan []byte, 16) // the leader's own appends, in order
	go func() {
		for e := range appends {
			if err := m.appendDurably(e); err != nil {
				panic(err)
			}
			m.durable <- binary.BigEndian.Uint64(e[1:])
		}
	}()
	defer close(appends)
	var seq uint64
	for {
		var n [4]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return
		}
		payload := make([]byte, binary.BigEndian.Uint32(n[:]))
		if _, err := io.ReadFull(r, payload); err != nil {
			return
		}
		seq++
		e := floorFrame(floorEntry, seq, time.Now().UnixNano(), payload)
		for _, f := range m.followers {
			if _, err := f.Write(e); err != nil {
				return
			}
		}
		appends <- e
		for got := 0; got < 2; {
			if <-m.durable == seq {
				got++
			}
		}
		notice := binary.BigEndian.AppendUint64([]byte{floorCommit}, seq)
		for _, f := range m.followers {
			if _, err := f.Write(notice); err != nil {
				return
			}
		}
		m.notify(e[1:])
		if _, err := c.Write(notice[1:]); err != nil {
			return
		}
	}
}

// readAcks passes a follower's acknowledgements to the write in flight.
func (m *floorMember) readAcks(c net.Conn) {
	var ack [8]byte
	for {
		if _, err := io.ReadFull(c, ack[:]); err != nil {
			return
		}
		m.durable <- binary.BigEndian.Uint64(ack[:])
	}
}

// follow serves the leader's connection: entries are appended durably
// and acknowledged in order, in the background, while a commit notice
// sends its entry to this member's watchers at once.
func (m *floorMember) follow(c net.Conn) {
	r := bufio.NewReader(c)
	appends := make(chan []byte, 16)
	go func() {
		for e := range appends {
			if err := m.appendDurably(e); err != nil {
				panic(err)
			}
			if _, err := c.Write(e[1:9]); err != nil {
				return
			}
		}
	}()
	defer close(appends)
	for {
		kind, err := r.ReadByte()
		if err != nil {
			return
		}
		switch kind {
		case floorEntry:
			var h [20]byte
			if _, err := io.ReadFull(r, h[:]); err != nil {
				return
			}
			e := make([]byte, 1+20+binary.BigEndian.Uint32(h[16:]))
			e[0] = floorEntry
			copy(e[1:], h[:])
			if _, err := io.ReadFull(r, e[21:]); err != nil {
				return
			}
			m.mu.Lock()
			m.pending[binary.BigEndian.Uint64(h[:])] = e
			m.mu.Unlock()
			appends <- e
		case floorCommit:
			var s [8]byte
			if _, err := io.ReadFull(r, s[:]); err != nil {
				return
			}
			seq := binary.BigEndian.Uint64(s[:])
			m.mu.Lock()
			e := m.pending[seq]
			delete(m.pending, seq)
			m.mu.Unlock()
			m.notify(e[1:])
		default:
			return
		}
	}
}

// notify sends a committed entry to every watcher of this member.
func (m *floorMember) notify(frame []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.watchers {
		w.Write(frame)
	}
}

func floorFrame(kind byte, seq uint64, stamp int64, payload []byte) []byte {
	e := []byte{kind}
	e = binary.BigEndian.AppendUint64(e, seq)
	e = binary.BigEndian.AppendUint64(e, uint64(stamp))
	e = binary.BigEndian.AppendUint32(e, uint32(len(payload)))
	return append(e, payload...)
}

// floorRun is the floor's three members and n watchers, spread over the
// members as medmesh's enforcers and etcd's watchers are.
type floorRun struct {
	tally
	pids   []int
	writer net.Conn
}

// startFloor starts the members and the watchers. Everything stops when
// b ends.
func startFloor(b *testing.B, n int) *floorRun {
	dir := b.TempDir()
	var addrs []string
	for range 3 {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b)))
	}
	r := &floorRun{}
	r.n = n
	// Followers first: the leader connects to them as it starts.
	for _, i := range []int{2, 1, 0} {
		p := startHostProcess(b, []string{"-test.run=^TestFloorHost$", "-test.count=1"}, []string{fmt.Sprintf("%s=%d %s %s",
			floorHostEnv, i, memberDir(b, dir, i, fmt.Sprintf("f%d", i)), strings.Join(addrs, " "))})
		r.pids = append(r.pids, p.pid())
		out := bufio.NewReader(p.stdout)
		line, err := out.ReadString('\n')
		if err != nil || !strings.Contains(line, "FLOOR SERVING") {
			b.Fatalf("floor member %d: %q %v", i, line, err)
		}
		go io.Copy(io.Discard, out)
	}
	var wg sync.WaitGroup
	var conns []net.Conn
	b.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	})
	for i := range n {
		c, err := dialFloor(addrs[i%3], floorWatcher)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rd := bufio.NewReader(c)
			var h [20]byte
			for {
				if _, err := io.ReadFull(rd, h[:]); err != nil {
					return
				}
				now := time.Now()
				if _, err := rd.Discard(int(binary.BigEndian.Uint32(h[16:]))); err != nil {
					return
				}
				l := now.Sub(time.Unix(0, int64(binary.BigEndian.Uint64(h[8:]))))
				r.record(l)
			}
		}()
	}
	var err error
	if r.writer, err = dialFloor(addrs[0], floorClient); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.writer.Close() })
	// The watchers' connections are accepted asynchronously: write until
	// a write reaches them all, then start counting.
	testutil.Eventually(b, 10*time.Second, 10*time.Millisecond, func() bool {
		before := r.got.Load()
		r.write(b)
		time.Sleep(5 * time.Millisecond)
		return r.got.Load()-before == int64(n)
	}, "floor watchers connected")
	time.Sleep(50 * time.Millisecond)
	r.reset()
	return r
}

// write sends one write to the leader and waits for its commit.
func (r *floorRun) write(b *testing.B) {
	w := binary.BigEndian.AppendUint32(nil, floorEntrySize)
	if _, err := r.writer.Write(append(w, make([]byte, floorEntrySize)...)); err != nil {
		b.Fatal(err)
	}
	var seq [8]byte
	if _, err := io.ReadFull(r.writer, seq[:]); err != nil {
		b.Fatal(err)
	}
}

// sample writes once and waits until every watcher has read it.
func (r *floorRun) sample(b *testing.B, i int) {
	r.write(b)
	r.await(b, i, "floor write")
}
