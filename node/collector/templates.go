package collector

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
)

// Template errors. A refused template is counted and its data sets stay
// undecoded: they are as good as data for a template never received.
var (
	errTemplateFull   = errors.New("template cache full for this exporter")
	errTemplateFields = fmt.Errorf("template has a field of length 0 or more than %d fields", maxFields)
)

// maxFields bounds the fields of a template: exporters use a few dozen.
const maxFields = 512

type templateKey struct {
	version uint16
	domain  uint32
	id      uint16
}

type templateEntry struct {
	tmpl any
	seen time.Time
}

// templates is one exporter's template cache: bounded, with templates
// expiring when their exporter stops refreshing them (RFC 7011 section
// 8.4: a UDP exporter resends its templates periodically; a collector
// drops those not refreshed within its template lifetime). It implements
// goflow2's netflow.NetFlowTemplateSystem; the decoder calls it from one
// goroutine, the collector's.
type templates struct {
	max int
	ttl time.Duration
	now time.Time // of the message being decoded
	m   map[templateKey]templateEntry
	// withdrawn and refused count template withdrawals and templates
	// not kept (cache full, zero-length records).
	withdrawn, refused uint64
}

var _ netflow.NetFlowTemplateSystem = (*templates)(nil)

func newTemplates(max int, ttl time.Duration) *templates {
	return &templates{max: max, ttl: ttl, m: make(map[templateKey]templateEntry)}
}

// fields returns the scope and non-scope fields of a template, and whether
// it is a withdrawal (a template record with no fields, RFC 7011 8.1).
func fields(tmpl any) (all []netflow.Field, withdrawal bool) {
	switch t := tmpl.(type) {
	case netflow.TemplateRecord:
		return t.Fields, t.FieldCount == 0
	case netflow.IPFIXOptionsTemplateRecord:
		return append(append([]netflow.Field(nil), t.Scopes...), t.Options...), t.FieldCount == 0
	case netflow.NFv9OptionsTemplateRecord:
		return append(append([]netflow.Field(nil), t.Scopes...), t.Options...), len(t.Scopes)+len(t.Options) == 0
	}
	return nil, false
}

// AddTemplate implements netflow.NetFlowTemplateSystem. A template with
// no fields withdraws the template of that id. A template with a field of
// length 0 is refused: were all its fields so, goflow2 would read a data
// set of it forever (its loop consumes nothing), and with one
// variable-length field, each byte of data would be a record of all the
// template's values.
func (ts *templates) AddTemplate(version uint16, domain uint32, id uint16, tmpl any) error {
	k := templateKey{version, domain, id}
	fs, withdrawal := fields(tmpl)
	if withdrawal {
		delete(ts.m, k)
		ts.withdrawn++
		return nil
	}
	if len(fs) > maxFields || slices.ContainsFunc(fs, func(f netflow.Field) bool { return f.Length == 0 }) {
		// Every field of a record then takes a byte at least, so what a
		// data set decodes into is bounded by its own size: a template
		// of thousands of empty fields would make each byte of data a
		// record of thousands of values.
		ts.refused++
		return fmt.Errorf("template %d: %w", id, errTemplateFields)
	}
	if _, ok := ts.m[k]; !ok && len(ts.m) >= ts.max {
		ts.expire()
		if len(ts.m) >= ts.max {
			ts.refused++
			return fmt.Errorf("template %d: %w", id, errTemplateFull)
		}
	}
	ts.m[k] = templateEntry{tmpl: tmpl, seen: ts.now}
	return nil
}

// GetTemplate implements netflow.NetFlowTemplateSystem. An expired
// template is not found.
func (ts *templates) GetTemplate(version uint16, domain uint32, id uint16) (any, error) {
	k := templateKey{version, domain, id}
	e, ok := ts.m[k]
	if !ok {
		return nil, netflow.ErrorTemplateNotFound
	}
	if ts.now.Sub(e.seen) > ts.ttl {
		delete(ts.m, k)
		return nil, netflow.ErrorTemplateNotFound
	}
	return e.tmpl, nil
}

// RemoveTemplate implements netflow.NetFlowTemplateSystem.
func (ts *templates) RemoveTemplate(version uint16, domain uint32, id uint16) (any, error) {
	k := templateKey{version, domain, id}
	e, ok := ts.m[k]
	if !ok {
		return nil, netflow.ErrorTemplateNotFound
	}
	delete(ts.m, k)
	return e.tmpl, nil
}

// GetTemplates implements netflow.NetFlowTemplateSystem; goflow2's
// decoder does not call it. Keys are goflow2's (version, domain, id)
// packing.
func (ts *templates) GetTemplates() netflow.FlowBaseTemplateSet {
	out := make(netflow.FlowBaseTemplateSet, len(ts.m))
	for k, e := range ts.m {
		out[uint64(k.version)<<48|uint64(k.domain)<<16|uint64(k.id)] = e.tmpl
	}
	return out
}

// expire drops the templates not refreshed within the lifetime.
func (ts *templates) expire() {
	for k, e := range ts.m {
		if ts.now.Sub(e.seen) > ts.ttl {
			delete(ts.m, k)
		}
	}
}
