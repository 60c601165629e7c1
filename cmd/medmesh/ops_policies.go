package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func newPoliciesCmd(o *opFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "policies",
		Short: "Manage least-privilege policies",
	}
	var (
		device string
		limit  int
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List policies by name",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				cl := medmeshv1.NewPolicyServiceClient(conn)
				var last *medmeshv1.ListPoliciesResponse
				ps, next, err := listAll(limit, func(token string, size int32) ([]*medmeshv1.Policy, string, error) {
					resp, err := cl.ListPolicies(ctx, &medmeshv1.ListPoliciesRequest{
						PageSize: size, PageToken: token, DeviceMac: device, Consistency: o.consistency()})
					last = resp
					return resp.GetPolicies(), resp.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, &medmeshv1.ListPoliciesResponse{Policies: ps, NextPageToken: next, ReadInfo: last.GetReadInfo()})
				}
				t := newTable(w, "NAME", "SUBJECT", "MODE", "ACTIVE", "VERSION", "RULES", "UPDATED BY", "UPDATED")
				for _, p := range ps {
					t.row(p.GetName(), policySubject(p), names.Enum(p.GetMode()), p.GetActive(), p.GetVersion(),
						len(p.GetRules()), p.GetUpdatedBy(), ts(p.GetUpdateTime()))
				}
				return t.flush()
			})
		},
	}
	list.Flags().StringVar(&device, "device", "", "only policies of this device MAC")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many policies (0: all)")

	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show one policy, and what the enforcers installed for its DNS-named peers",
		Long: "Show one policy. For rules that name a peer by DNS name, each enforcer reports the\n" +
			"addresses it resolved and installed, when it resolved them, the answer's TTL, when it\n" +
			"asks again and, if the last resolution failed, why (the last good addresses stay).\n" +
			"Those reports live in the leader's memory: --consistency stale on a follower shows none.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewPolicyServiceClient(conn).GetPolicy(ctx,
					&medmeshv1.GetPolicyRequest{Name: args[0], Consistency: o.consistency()})
				if err != nil {
					return err
				}
				if o.json() {
					return printProto(cmd.OutOrStdout(), resp)
				}
				if err := printPolicy(cmd.OutOrStdout(), resp.GetPolicy()); err != nil {
					return err
				}
				return printResolvedPeers(cmd.OutOrStdout(), resp.GetResolvedPeers())
			})
		},
	}

	var w writeFlags
	put := &cobra.Command{
		Use:   "put [FILE|-]",
		Short: "Create or replace a policy from its JSON (a file, or stdin)",
		Long: "Create or replace a policy. The policy is read as protobuf JSON, e.g.\n" +
			`  {"name": "device/00:1b:44:11:3a:b7", "device_mac": "00:1b:44:11:3a:b7", "mode": "POLICY_MODE_MONITOR",` + "\n" +
			`   "rules": [{"name": "pacs", "peer_cidr": "10.20.0.5/32", "protocol": 6, "port_min": 104, "port_max": 104}]}` + "\n" +
			"With --expected-version the write is a compare-and-set (0: must not exist yet).",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src := "-"
			if len(args) == 1 {
				src = args[0]
			}
			p, err := readPolicy(cmd.InOrStdin(), src)
			if err != nil {
				return err
			}
			req := &medmeshv1.PutPolicyRequest{Policy: p, Actor: w.actor, Reason: w.reason}
			if cmd.Flags().Changed("expected-version") {
				req.ExpectedVersion = &w.expectedVersion
			}
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				req.RequestId = requestID
				resp, err := medmeshv1.NewPolicyServiceClient(conn).PutPolicy(ctx, req)
				if err != nil {
					return err
				}
				if o.json() {
					return printProto(cmd.OutOrStdout(), resp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "policy %s stored: version %d, index %d\n",
					resp.GetPolicy().GetName(), resp.GetPolicy().GetVersion(), resp.GetIndex())
				return nil
			})
		},
	}
	w.register(put)

	var dw writeFlags
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a policy",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &medmeshv1.DeletePolicyRequest{Name: args[0], Actor: dw.actor, Reason: dw.reason}
			if cmd.Flags().Changed("expected-version") {
				req.ExpectedVersion = &dw.expectedVersion
			}
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				req.RequestId = requestID
				resp, err := medmeshv1.NewPolicyServiceClient(conn).DeletePolicy(ctx, req)
				if err != nil {
					return err
				}
				if o.json() {
					return printProto(cmd.OutOrStdout(), resp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "policy %s deleted at index %d\n", args[0], resp.GetIndex())
				return nil
			})
		},
	}
	dw.register(del)
	var (
		mode string
		aw   writeFlags
	)
	activate := &cobra.Command{
		Use:   "activate NAME",
		Short: "Activate a policy: the enforcers receive it as a decision",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if aw.reason == "" {
				return usagef("activate: --reason is required")
			}
			m, err := parseEnum(medmeshv1.PolicyMode(0).Descriptor(), "mode", mode)
			if err != nil {
				return err
			}
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				resp, err := medmeshv1.NewPolicyServiceClient(conn).ActivatePolicy(ctx, &medmeshv1.ActivatePolicyRequest{
					Name: args[0], Mode: medmeshv1.PolicyMode(m), Actor: aw.actor, Reason: aw.reason, RequestId: requestID})
				if err != nil {
					return err
				}
				if o.json() {
					return printProto(cmd.OutOrStdout(), resp)
				}
				p := resp.GetPolicy()
				if p.GetDeviceMac() == "" {
					// A class policy: one decision per known device of the
					// class, and one for each device classified later.
					fmt.Fprintf(cmd.OutOrStdout(), "policy %s active in %s mode at index %d: a decision for each device of class %s\n",
						p.GetName(), names.Enum(p.GetMode()), resp.GetDecisionIndex(), names.Enum(p.GetDeviceClass()))
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "policy %s active in %s mode: decision %s at index %d\n",
					p.GetName(), names.Enum(p.GetMode()), resp.GetDecisionId(), resp.GetDecisionIndex())
				return nil
			})
		},
	}
	activate.Flags().StringVar(&mode, "mode", "", "monitor or enforce (default: the policy's mode)")
	activate.Flags().StringVar(&aw.actor, "actor", defaultActor(), "a comment on who activates (the audit actor is your certificate's identity)")
	activate.Flags().StringVar(&aw.reason, "reason", "", "why (required, recorded in the audit trail)")
	c.AddCommand(list, get, put, del, activate)
	addPolicyModelCmds(c, o)
	return c
}

// writeFlags are the audit and compare-and-set flags of a change.
type writeFlags struct {
	actor, reason   string
	expectedVersion uint64
}

func (w *writeFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&w.actor, "actor", defaultActor(), "a comment on who makes the change (the audit actor is your certificate's identity)")
	c.Flags().StringVar(&w.reason, "reason", "", "why (recorded in the audit trail)")
	c.Flags().Uint64Var(&w.expectedVersion, "expected-version", 0, "compare-and-set: the stored version must be this (0: must not exist)")
}

func readPolicy(stdin io.Reader, src string) (*medmeshv1.Policy, error) {
	var (
		b   []byte
		err error
	)
	if src == "-" {
		b, err = io.ReadAll(io.LimitReader(stdin, 4<<20))
	} else {
		b, err = os.ReadFile(src)
	}
	if err != nil {
		return nil, usagef("read policy: %w", err)
	}
	return parsePolicy(src, b)
}

// parsePolicy reads a policy as protobuf JSON: the policy itself, or the
// `{"policy": ..., "warnings": [...]}` that `policies import-mud -o json`
// prints.
func parsePolicy(src string, b []byte) (*medmeshv1.Policy, error) {
	var top map[string]json.RawMessage
	if json.Unmarshal(b, &top) == nil && top["policy"] != nil {
		imp := &medmeshv1.ImportPolicyMudResponse{}
		if err := protojson.Unmarshal(b, imp); err != nil {
			return nil, usagef("parse policy %s: %w", src, err)
		}
		if imp.GetPolicy() == nil {
			return nil, usagef("parse policy %s: policy is null", src)
		}
		return imp.GetPolicy(), nil
	}
	p := &medmeshv1.Policy{}
	if err := protojson.Unmarshal(b, p); err != nil {
		return nil, usagef("parse policy %s: %w", src, err)
	}
	return p, nil
}

func policySubject(p *medmeshv1.Policy) string {
	switch s := p.GetSubject().(type) {
	case *medmeshv1.Policy_DeviceMac:
		return "device " + s.DeviceMac
	case *medmeshv1.Policy_DeviceClass:
		return "class " + names.Enum(s.DeviceClass)
	}
	return ""
}

func printPolicy(w io.Writer, p *medmeshv1.Policy) error {
	fmt.Fprintf(w, "name: %s\nsubject: %s\nmode: %s  active: %t  quarantine: %t\n",
		p.GetName(), policySubject(p), names.Enum(p.GetMode()), p.GetActive(), p.GetQuarantine())
	// A generated or imported policy was never stored: it has no version,
	// no revision and no author yet.
	if p.GetVersion() != 0 || p.GetRevision() != 0 {
		fmt.Fprintf(w, "version: %d  revision: %d\n", p.GetVersion(), p.GetRevision())
	}
	if upd := updated(p); upd != "" {
		fmt.Fprintf(w, "updated: %s\n", upd)
	}
	fmt.Fprintf(w, "description: %s\n\n", truncate(p.GetDescription(), 200))
	t := newTable(w, "RULE", "PEER", "PROTO", "PORTS", "DIRECTION")
	for i, r := range p.GetRules() {
		name := r.GetName()
		if name == "" {
			name = "#" + strconv.Itoa(i)
		}
		peer := r.GetPeerCidr()
		if r.GetPeerDnsName() != "" {
			peer = r.GetPeerDnsName()
		}
		if peer == "" {
			peer = "any"
		}
		dir := names.Enum(r.GetDirection())
		if dir == "" {
			dir = "both"
		}
		t.row(name, peer, names.Protocol(r.GetProtocol()), names.Ports(r.GetPortMin(), r.GetPortMax()), dir)
	}
	return t.flush()
}

// printResolvedPeers shows what each enforcer installed for the policy's
// DNS-named peers.
func printResolvedPeers(w io.Writer, peers []*medmeshv1.ResolvedPeer) error {
	if len(peers) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nDNS-named peers, as the enforcers installed them:\n")
	t := newTable(w, "ENFORCER", "DNS NAME", "ADDRESSES", "TTL", "RESOLVED", "REFRESH", "DEVICES", "ERROR", "REPORTED")
	for _, p := range peers {
		addrs := strings.Join(p.GetAddresses(), ",")
		if addrs == "" {
			addrs = "none"
			if p.GetResolveTime() == nil {
				addrs = "none yet"
			}
		}
		if n := p.GetAddressesLeftOut(); n > 0 {
			addrs += fmt.Sprintf(" (+%d left out)", n)
		}
		ttl := ""
		if p.GetResolveTime() != nil {
			ttl = (time.Duration(p.GetTtlSeconds()) * time.Second).String()
		}
		t.row(p.GetEnforcerId(), p.GetDnsName(), addrs, ttl, ts(p.GetResolveTime()), ts(p.GetRefreshTime()), p.GetDevices(),
			truncate(p.GetError(), 80), ts(p.GetReportTime()))
	}
	return t.flush()
}

// updated is "TIME by ACTOR", either part alone, or "" for a policy never
// stored.
func updated(p *medmeshv1.Policy) string {
	when, who := ts(p.GetUpdateTime()), p.GetUpdatedBy()
	switch {
	case when != "" && who != "":
		return when + " by " + who
	case who != "":
		return "by " + who
	}
	return when
}
