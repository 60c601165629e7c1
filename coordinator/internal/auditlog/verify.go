package auditlog

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Report is what Verify found.
type Report struct {
	Segments int
	// Records counts the records read (anchors excluded).
	Records uint64
	// First is the sequence number the trail starts at: 1, or later when
	// older segments were deleted by retention.
	First uint64
	Head  Head
	// Gaps are anchors: ranges of records this store never held.
	Gaps []Gap
	// Torn is the length of an incomplete last line (a crash mid-write;
	// the store cuts it when it next opens).
	Torn int
	// Break is the first record whose hash or link does not check, nil
	// when the chain verifies.
	Break *Break
}

// Gap is a range of records a store does not hold, marked by an anchor.
type Gap struct {
	Segment  string
	Line     int
	From, To uint64
}

// Break locates the first record that fails verification.
type Break struct {
	Segment string
	Line    int
	Seq     uint64
	Reason  string
}

func (b *Break) Error() string {
	return fmt.Sprintf("%s line %d (record %d): %s", b.Segment, b.Line, b.Seq, b.Reason)
}

// Verify reads every segment in dir in order, recomputes every hash and
// checks every link. An I/O error is returned as an error; a chain that
// does not check is reported in Report.Break.
func Verify(dir string) (Report, error) {
	var rep Report
	segs, err := segments(dir)
	if err != nil {
		return rep, err
	}
	rep.Segments = len(segs)
	var (
		head    Head
		started bool
	)
	for i, n := range segs {
		path := segPath(dir, n)
		name := filepath.Base(path)
		if i > 0 && n != segs[i-1]+1 {
			rep.Break = &Break{Segment: name, Line: 1, Seq: head.Seq + 1, Reason: fmt.Sprintf("segment %08d.seg is missing", segs[i-1]+1)}
			return rep, nil
		}
		f, err := os.Open(path)
		if err != nil {
			return rep, fmt.Errorf("verify: %w", err)
		}
		br := bufio.NewReaderSize(f, 1<<20)
		for ln := 1; ; ln++ {
			b, err := br.ReadBytes('\n')
			if errors.Is(err, io.EOF) {
				if len(b) > 0 {
					if i == len(segs)-1 {
						rep.Torn = len(b)
					} else {
						rep.Break = &Break{Segment: name, Line: ln, Seq: head.Seq + 1, Reason: "incomplete record inside the trail"}
					}
				}
				break
			}
			if err != nil {
				f.Close()
				return rep, fmt.Errorf("verify: read %s: %w", name, err)
			}
			e, perr := parseLine(bytes.TrimSuffix(b, []byte("\n")))
			if perr != nil {
				rep.Break = &Break{Segment: name, Line: ln, Seq: head.Seq + 1, Reason: perr.Error()}
				f.Close()
				return rep, nil
			}
			if brk := check(&head, started, e); brk != "" {
				rep.Break = &Break{Segment: name, Line: ln, Seq: e.Seq, Reason: brk}
				f.Close()
				return rep, nil
			}
			if !started {
				rep.First, started = e.Seq, true
				if e.Anchor {
					rep.First = e.Seq + 1
				}
			}
			if e.Anchor {
				rep.Gaps = append(rep.Gaps, Gap{Segment: name, Line: ln, From: head.Seq + 1, To: e.Seq})
			} else {
				rep.Records++
			}
			head = e.Head()
		}
		f.Close()
		if rep.Break != nil {
			return rep, nil
		}
	}
	rep.Head = head
	return rep, nil
}

// check verifies e after head and advances nothing; it returns why e does
// not check, or "".
func check(head *Head, started bool, e Entry) string {
	if e.Anchor {
		if started && e.Prev != head.Hash {
			return fmt.Sprintf("anchor does not follow the record before it (prev %x, expected %x)", e.Prev[:8], head.Hash[:8])
		}
		if e.Seq < head.Seq {
			return fmt.Sprintf("anchor goes back to record %d after record %d", e.Seq, head.Seq)
		}
		return ""
	}
	if started && e.Seq != head.Seq+1 {
		return fmt.Sprintf("sequence number %d, expected %d", e.Seq, head.Seq+1)
	}
	if started && e.Prev != head.Hash {
		return fmt.Sprintf("prev %x does not match the hash of record %d (%x)", e.Prev[:8], head.Seq, head.Hash[:8])
	}
	if !started && e.Seq == 1 && e.Prev != ([32]byte{}) {
		return "first record of the trail has a non-zero prev"
	}
	if got := hash(e.Seq, e.Prev, e.Body); got != e.Hash {
		return fmt.Sprintf("content does not match its hash (recorded %x, computed %x)", e.Hash[:8], got[:8])
	}
	return ""
}
