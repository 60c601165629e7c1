//go:build e2e && linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/medmesh/medmesh/deploy/lab"
)

// Partition drops TCP and UDP between two groups of addresses, in both
// directions, with an nftables table in one namespace ("" is the host,
// where the coordinators live on 127.0.0.1..3). Rules sit on the input,
// output and forward hooks, so the namespace may be an end or a router.
type Partition struct {
	Netns string
	// Table names the nftables table; unique per nemesis instance.
	Table string
	A, B  []netip.Prefix
}

var _ Nemesis = (*Partition)(nil)

func (p *Partition) Name() string     { return "partition" }
func (p *Partition) Available() error { return nftAvailable() }

// Script is the nftables script Inject loads.
func (p *Partition) Script() string {
	a, b := set(p.A), set(p.B)
	var s strings.Builder
	fmt.Fprintf(&s, "table inet %s {\n", p.Table)
	for _, hook := range []string{"input", "output", "forward"} {
		fmt.Fprintf(&s, "  chain %s {\n    type filter hook %s priority -10; policy accept;\n", hook, hook)
		fmt.Fprintf(&s, "    meta l4proto { tcp, udp } ip saddr %s ip daddr %s drop\n", a, b)
		fmt.Fprintf(&s, "    meta l4proto { tcp, udp } ip saddr %s ip daddr %s drop\n", b, a)
		s.WriteString("  }\n")
	}
	s.WriteString("}\n")
	return s.String()
}

func (p *Partition) Inject(context.Context) error {
	if len(p.A) == 0 || len(p.B) == 0 {
		return fmt.Errorf("partition %s: both sides need addresses", p.Table)
	}
	return nftIn(p.Netns, p.Script())
}

func (p *Partition) Heal(context.Context) error { return dropTable(p.Netns, p.Table) }

// Loss drops a share of the packets arriving on one interface, chosen by
// nftables `numgen random`.
type Loss struct {
	Netns   string
	Table   string
	Iface   string
	Percent int // 1-100
	// Matches, if set, narrow the loss to packets matching any of these
	// nftables expressions (one rule each), e.g. "tcp dport 7401".
	Matches []string
}

var _ Nemesis = (*Loss)(nil)

func (l *Loss) Name() string     { return "loss" }
func (l *Loss) Available() error { return nftAvailable() }

// Script is the nftables script Inject loads.
func (l *Loss) Script() string {
	match := fmt.Sprintf("numgen random mod 100 < %d ", l.Percent)
	if l.Percent >= 100 { // numgen's range is 0-99
		match = ""
	}
	matches := l.Matches
	if len(matches) == 0 {
		matches = []string{""}
	}
	var rules strings.Builder
	for _, m := range matches {
		if m != "" {
			m += " "
		}
		fmt.Fprintf(&rules, "    iifname %q %s%sdrop\n", l.Iface, m, match)
	}
	return fmt.Sprintf("table inet %s {\n  chain pre {\n    type filter hook prerouting priority -300; policy accept;\n%s  }\n}\n",
		l.Table, rules.String())
}

func (l *Loss) Inject(context.Context) error {
	if l.Percent < 1 || l.Percent > 100 {
		return fmt.Errorf("loss %s: percent %d not in [1, 100]", l.Table, l.Percent)
	}
	return nftIn(l.Netns, l.Script())
}

func (l *Loss) Heal(context.Context) error { return dropTable(l.Netns, l.Table) }

func set(ps []netip.Prefix) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, p.Masked().String())
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}

func nftIn(ns, script string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := lab.RunIn(ns, cmd); err != nil {
		return fmt.Errorf("nft in %q: %w: %s", ns, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// dropTable removes a table; a table already gone is healed.
func dropTable(ns, table string) error {
	err := nftIn(ns, "delete table inet "+table+"\n")
	if err != nil && strings.Contains(err.Error(), "No such file") {
		return nil
	}
	return err
}
