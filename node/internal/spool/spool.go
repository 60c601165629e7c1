// Package spool is the sensor's bounded on-disk queue of records for the
// coordinators. It stores SensorRecords in a bbolt file, fsynced on every
// commit, stamps each with the sensor's sequence number (strictly
// increasing across restarts), and keeps them until the coordinators
// acknowledge them. When full it evicts by priority: the oldest flow
// summaries first, then device observations, then baselines, alerts last;
// every eviction is counted per kind.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Kind is what a record carries, in eviction order: a lower kind is
// evicted first.
type Kind uint8

// The kinds, lowest priority first.
const (
	KindFlowSummary Kind = iota
	KindDevice
	KindBaseline
	KindAlert
	numKinds
)

// String returns the name used in ReportRequest.dropped and metrics.
func (k Kind) String() string {
	switch k {
	case KindFlowSummary:
		return "flow_summary"
	case KindDevice:
		return "device"
	case KindBaseline:
		return "baseline"
	case KindAlert:
		return "alert"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// KindOf returns a record's kind.
func KindOf(r *medmeshv1.SensorRecord) (Kind, error) {
	switch r.GetRecord().(type) {
	case *medmeshv1.SensorRecord_FlowSummary:
		return KindFlowSummary, nil
	case *medmeshv1.SensorRecord_Device:
		return KindDevice, nil
	case *medmeshv1.SensorRecord_Baseline:
		return KindBaseline, nil
	case *medmeshv1.SensorRecord_Alert:
		return KindAlert, nil
	}
	return 0, errors.New("sensor record carries nothing")
}

// Config configures a spool.
type Config struct {
	// Dir holds the spool file (spool.db). Required.
	Dir string
	// MaxBytes bounds the stored record bytes; MaxRecords their number.
	MaxBytes   int64
	MaxRecords int
	// OpenTimeout bounds waiting for another process's file lock.
	OpenTimeout time.Duration
}

// DefaultConfig returns a 256 MiB, one-million-record spool.
func DefaultConfig() Config {
	return Config{MaxBytes: 256 << 20, MaxRecords: 1 << 20, OpenTimeout: 5 * time.Second}
}

func (c *Config) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("dir is required"))
	}
	if c.MaxBytes <= 0 {
		errs = append(errs, errors.New("max bytes must be positive"))
	}
	if c.MaxRecords <= 0 {
		errs = append(errs, errors.New("max records must be positive"))
	}
	if c.OpenTimeout <= 0 {
		errs = append(errs, errors.New("open timeout must be positive"))
	}
	return errors.Join(errs...)
}

var (
	bucketRecords = []byte("records") // seq -> kind byte + record
	bucketMeta    = []byte("meta")
	keyNextSeq    = []byte("next_seq")
	keyBytes      = []byte("bytes")
	keyCount      = []byte("count")
	keyAcked      = []byte("acked_seq")
)

func kindBucket(k Kind) []byte { return []byte("kind/" + k.String()) }
func droppedKey(k Kind) []byte { return []byte("dropped/" + k.String()) }
func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }
func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
func putU64(b *bolt.Bucket, k []byte, v uint64) error { return b.Put(k, seqKey(v)) }

// Spool is a bounded on-disk record queue. It is safe for concurrent use.
type Spool struct {
	cfg     Config
	log     *slog.Logger
	db      *bolt.DB
	metrics *metrics
	notify  chan struct{}

	mu      sync.Mutex // guards the cached counters below
	count   int
	bytes   int64
	lastSeq uint64
	acked   uint64
	dropped [numKinds]uint64
}

// Open opens (or creates) the spool in cfg.Dir.
func Open(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Spool, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("spool config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool dir: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(cfg.Dir, "spool.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: cfg.OpenTimeout})
	if err != nil {
		return nil, fmt.Errorf("open spool %s: %w", path, err)
	}
	s := &Spool{cfg: cfg, log: logger.With("component", "spool"), db: db, metrics: m, notify: make(chan struct{}, 1)}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketRecords, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		for k := range numKinds {
			if _, err := tx.CreateBucketIfNotExists(kindBucket(k)); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		s.lastSeq = u64(meta.Get(keyNextSeq))
		s.bytes = int64(u64(meta.Get(keyBytes)))
		s.count = int(u64(meta.Get(keyCount)))
		s.acked = u64(meta.Get(keyAcked))
		for k := range numKinds {
			s.dropped[k] = u64(meta.Get(droppedKey(k)))
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init spool %s: %w", path, err)
	}
	s.updateGauges()
	s.log.Info("spool opened", "path", path, "records", s.count, "bytes", s.bytes, "last_seq", s.lastSeq)
	return s, nil
}

// Append stamps each record with the next sequence number and stores them
// all in one fsynced transaction, evicting by priority when over the
// bounds. It returns the sequence numbers given. The records are modified
// (their Seq field is set).
func (s *Spool) Append(recs ...*medmeshv1.SensorRecord) ([]uint64, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seqs := make([]uint64, 0, len(recs))
	count, size, next := s.count, s.bytes, s.lastSeq
	dropped := s.dropped
	err := s.db.Update(func(tx *bolt.Tx) error {
		records := tx.Bucket(bucketRecords)
		for _, r := range recs {
			kind, err := KindOf(r)
			if err != nil {
				return err
			}
			next++
			r.Seq = next
			b, err := proto.Marshal(r)
			if err != nil {
				return fmt.Errorf("marshal record: %w", err)
			}
			key := seqKey(next)
			if err := records.Put(key, append([]byte{byte(kind)}, b...)); err != nil {
				return err
			}
			if err := tx.Bucket(kindBucket(kind)).Put(key, nil); err != nil {
				return err
			}
			count++
			size += int64(len(b))
			seqs = append(seqs, next)
		}
		for count > s.cfg.MaxRecords || size > s.cfg.MaxBytes {
			k, n, err := evictOne(tx)
			if err != nil {
				return err
			}
			count--
			size -= int64(n)
			dropped[k]++
		}
		meta := tx.Bucket(bucketMeta)
		for k := range numKinds {
			if dropped[k] != s.dropped[k] {
				if err := putU64(meta, droppedKey(k), dropped[k]); err != nil {
					return err
				}
			}
		}
		return errors.Join(putU64(meta, keyNextSeq, next), putU64(meta, keyBytes, uint64(size)), putU64(meta, keyCount, uint64(count)))
	})
	if err != nil {
		for _, r := range recs {
			r.Seq = 0
		}
		return nil, fmt.Errorf("spool append: %w", err)
	}
	for k := range numKinds {
		if d := dropped[k] - s.dropped[k]; d > 0 {
			s.metrics.dropped.WithLabelValues(Kind(k).String()).Add(float64(d))
		}
	}
	s.count, s.bytes, s.lastSeq, s.dropped = count, size, next, dropped
	s.metrics.appended.Add(float64(len(recs)))
	s.updateGauges()
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return seqs, nil
}

// evictOne deletes the oldest record of the lowest non-empty kind.
func evictOne(tx *bolt.Tx) (Kind, int, error) {
	for k := range numKinds {
		kb := tx.Bucket(kindBucket(k))
		key, _ := kb.Cursor().First()
		if key == nil {
			continue
		}
		records := tx.Bucket(bucketRecords)
		v := records.Get(key)
		n := max(len(v)-1, 0)
		if err := errors.Join(records.Delete(key), kb.Delete(key)); err != nil {
			return 0, 0, err
		}
		return k, n, nil
	}
	return 0, 0, errors.New("spool over its bounds but empty")
}

// Pending returns up to max stored records with seq > after, in seq order.
func (s *Spool) Pending(after uint64, max int) ([]*medmeshv1.SensorRecord, error) {
	var out []*medmeshv1.SensorRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(out) < max; k, v = c.Next() {
			if len(v) < 1 {
				return fmt.Errorf("record %d is empty", u64(k))
			}
			r := new(medmeshv1.SensorRecord)
			if err := proto.Unmarshal(v[1:], r); err != nil {
				return fmt.Errorf("record %d: %w", u64(k), err)
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool read: %w", err)
	}
	return out, nil
}

// Ack deletes every record with seq <= upTo: the coordinators committed
// them. It returns how many were deleted.
func (s *Spool) Ack(upTo uint64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if upTo <= s.acked {
		return 0, nil
	}
	count, size, n := s.count, s.bytes, 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		records := tx.Bucket(bucketRecords)
		c := records.Cursor()
		for k, v := c.First(); k != nil && u64(k) <= upTo; k, v = c.First() {
			if len(v) > 0 {
				if err := tx.Bucket(kindBucket(Kind(v[0]))).Delete(k); err != nil {
					return err
				}
			}
			size -= int64(max(len(v)-1, 0))
			if err := c.Delete(); err != nil {
				return err
			}
			count--
			n++
		}
		meta := tx.Bucket(bucketMeta)
		return errors.Join(putU64(meta, keyAcked, upTo), putU64(meta, keyBytes, uint64(size)), putU64(meta, keyCount, uint64(count)))
	})
	if err != nil {
		return 0, fmt.Errorf("spool ack %d: %w", upTo, err)
	}
	s.count, s.bytes, s.acked = count, size, upTo
	s.metrics.acked.Add(float64(n))
	s.updateGauges()
	return n, nil
}

// Notify is signalled (coalesced) after each Append.
func (s *Spool) Notify() <-chan struct{} { return s.notify }

// Stats is the spool's state.
type Stats struct {
	Records int
	Bytes   int64
	// LastSeq is the last sequence number given; AckedSeq the highest acknowledged.
	LastSeq, AckedSeq uint64
	// Dropped counts evictions by kind name since the spool was created.
	Dropped map[string]uint64
}

// Stats returns the spool's counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Records: s.count, Bytes: s.bytes, LastSeq: s.lastSeq, AckedSeq: s.acked, Dropped: map[string]uint64{}}
	for k := range numKinds {
		if s.dropped[k] > 0 {
			st.Dropped[Kind(k).String()] = s.dropped[k]
		}
	}
	return st
}

// Close closes the spool file.
func (s *Spool) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close spool: %w", err)
	}
	return nil
}

func (s *Spool) updateGauges() {
	s.metrics.records.Set(float64(s.count))
	s.metrics.bytes.Set(float64(s.bytes))
}

type metrics struct {
	records, bytes  prometheus.Gauge
	appended, acked prometheus.Counter
	dropped         *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		records:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "medmesh_spool_records", Help: "Records in the spool."}),
		bytes:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "medmesh_spool_bytes", Help: "Record bytes in the spool."}),
		appended: prometheus.NewCounter(prometheus.CounterOpts{Name: "medmesh_spool_appended_total", Help: "Records appended."}),
		acked:    prometheus.NewCounter(prometheus.CounterOpts{Name: "medmesh_spool_acked_total", Help: "Records deleted after the coordinators acknowledged them."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medmesh_spool_dropped_total", Help: "Records evicted unsent because the spool was full, by kind.",
		}, []string{"kind"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.records, m.bytes, m.appended, m.acked, m.dropped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register spool metrics: %w", err)
		}
	}
	return m, nil
}
