// Package fhirapi serves the inventory read-only as FHIR R4 Device resources over HTTPS.
package fhirapi

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strings"

	model "github.com/samply/golang-fhir-models/fhir-models/fhir"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/integrations/fhir"
	"github.com/medmesh/medmesh/internal/authz"
	"github.com/medmesh/medmesh/internal/pki"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Inventory is what the endpoint reads: the coordinator's own
// InventoryService handlers, so reads are routed, linearizable and
// authorized exactly as over gRPC.
type Inventory interface {
	ListDevices(context.Context, *medmeshv1.ListDevicesRequest) (*medmeshv1.ListDevicesResponse, error)
	GetDevice(context.Context, *medmeshv1.GetDeviceRequest) (*medmeshv1.GetDeviceResponse, error)
}

// Handler serves GET /fhir/Device (search parameters identifier and
// udi-di) and GET /fhir/Device/{id}. Every request needs a client
// certificate of the campus CA whose role may read the inventory (the
// authorization table's row for InventoryService.ListDevices and
// GetDevice); errors are OperationOutcome resources.
type Handler struct {
	inv   Inventory
	table authz.Table
}

// New returns the handler.
func New(inv Inventory, table authz.Table) *Handler { return &Handler{inv: inv, table: table} }

// TLSConfig is the endpoint's TLS: the coordinator's certificate, and a
// client certificate from the campus CA required in the handshake.
func TLSConfig(f pki.Files) (*tls.Config, error) {
	return pki.ServerConfig(f, pki.ServerOptions{RequireClientCert: true})
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/fhir/Device")
	if !ok || (rest != "" && !strings.HasPrefix(rest, "/")) {
		outcome(w, http.StatusNotFound, model.IssueTypeNotFound, "only /fhir/Device and /fhir/Device/{id} are served")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		outcome(w, http.StatusMethodNotAllowed, model.IssueTypeNotSupported, "this endpoint is read-only")
		return
	}
	id := strings.TrimPrefix(rest, "/")
	method := medmeshv1.InventoryService_ListDevices_FullMethodName
	if id != "" {
		method = medmeshv1.InventoryService_GetDevice_FullMethodName
	}
	ctx, code, err := h.authorize(r, method)
	if err != nil {
		outcome(w, code, model.IssueTypeSecurity, err.Error())
		return
	}
	if id != "" {
		h.read(ctx, w, id)
		return
	}
	h.search(ctx, w, r)
}

func (h *Handler) authorize(r *http.Request, method string) (context.Context, int, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil, http.StatusUnauthorized, status.Error(codes.Unauthenticated, "a client certificate from the campus CA is required")
	}
	id, err := pki.IdentityFromCert(r.TLS.VerifiedChains[0][0])
	if err != nil {
		return nil, http.StatusUnauthorized, err
	}
	if !h.table.Allows(method, id.Role) {
		return nil, http.StatusForbidden, status.Errorf(codes.PermissionDenied, "%s may not read the inventory", id)
	}
	return authz.WithIdentity(r.Context(), id), 0, nil
}

func (h *Handler) read(ctx context.Context, w http.ResponseWriter, id string) {
	mac, ok := fhir.MAC(id)
	if !ok {
		outcome(w, http.StatusNotFound, model.IssueTypeNotFound, "Device/"+id+": not a medmesh device id")
		return
	}
	resp, err := h.inv.GetDevice(ctx, &medmeshv1.GetDeviceRequest{Mac: mac})
	if err != nil {
		grpcOutcome(w, err)
		return
	}
	b, err := fhir.Device(resp.GetDevice()).MarshalJSON()
	if err != nil {
		outcome(w, http.StatusInternalServerError, model.IssueTypeException, err.Error())
		return
	}
	write(w, http.StatusOK, b)
}

// search lists every device and keeps those matching the parameters:
// identifier (system|value, |value or value; comma-separated values are
// alternatives) and udi-di. Parameters repeat as AND.
func (h *Handler) search(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "identifier", "udi-di", "_format":
		default:
			outcome(w, http.StatusBadRequest, model.IssueTypeNotSupported, "search parameter "+k+" is not supported (identifier, udi-di)")
			return
		}
	}
	if f := q.Get("_format"); f != "" && f != "json" && f != fhir.ContentType && f != "application/json" {
		outcome(w, http.StatusNotAcceptable, model.IssueTypeNotSupported, "only JSON is served")
		return
	}
	var devs []*medmeshv1.Device
	token := ""
	for {
		resp, err := h.inv.ListDevices(ctx, &medmeshv1.ListDevicesRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			grpcOutcome(w, err)
			return
		}
		for _, d := range resp.GetDevices() {
			if matches(d, q["identifier"], q["udi-di"]) {
				devs = append(devs, d)
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	b, err := fhir.Bundle(devs, model.BundleTypeSearchset, baseURL(r))
	if err != nil {
		outcome(w, http.StatusInternalServerError, model.IssueTypeException, err.Error())
		return
	}
	write(w, http.StatusOK, b)
}

func baseURL(r *http.Request) string {
	return "https://" + r.Host + "/fhir"
}

func matches(d *medmeshv1.Device, identifiers, dis []string) bool {
	fd := fhir.Device(d)
	for _, param := range identifiers {
		if !anyOf(param, func(v string) bool {
			sys, val, hasSys := strings.Cut(v, "|")
			if !hasSys {
				sys, val = "", v
			}
			for _, id := range fd.Identifier {
				if sys != "" && sys != deref(id.System) {
					continue
				}
				if sameIdentifier(deref(id.System), deref(id.Value), val) {
					return true
				}
			}
			return false
		}) {
			return false
		}
	}
	for _, param := range dis {
		if !anyOf(param, func(v string) bool {
			for _, c := range fd.UdiCarrier {
				if deref(c.DeviceIdentifier) == v || (c.CarrierHRF != nil && strings.Contains(*c.CarrierHRF, v)) {
					return true
				}
			}
			return false
		}) {
			return false
		}
	}
	return true
}

// sameIdentifier compares a MAC in any notation, an address in any
// form, other identifiers exactly.
func sameIdentifier(system, have, want string) bool {
	switch system {
	case fhir.SystemMAC:
		if hw, err := net.ParseMAC(want); err == nil {
			return hw.String() == have
		}
	case fhir.SystemIP:
		if ip := net.ParseIP(want); ip != nil {
			return ip.Equal(net.ParseIP(have))
		}
	}
	return have == want
}

func anyOf(param string, ok func(string) bool) bool {
	for _, v := range strings.Split(param, ",") {
		if v != "" && ok(v) {
			return true
		}
	}
	return false
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func grpcOutcome(w http.ResponseWriter, err error) {
	st, _ := status.FromError(err)
	code, issue := http.StatusInternalServerError, model.IssueTypeException
	switch st.Code() {
	case codes.NotFound:
		code, issue = http.StatusNotFound, model.IssueTypeNotFound
	case codes.InvalidArgument:
		code, issue = http.StatusBadRequest, model.IssueTypeInvalid
	case codes.PermissionDenied:
		code, issue = http.StatusForbidden, model.IssueTypeForbidden
	case codes.Unauthenticated:
		code, issue = http.StatusUnauthorized, model.IssueTypeLogin
	case codes.Unavailable, codes.DeadlineExceeded:
		code, issue = http.StatusServiceUnavailable, model.IssueTypeTransient
	}
	outcome(w, code, issue, st.Message())
}

func outcome(w http.ResponseWriter, code int, issue model.IssueType, msg string) {
	write(w, code, fhir.OperationOutcome(issue, msg))
}

func write(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", fhir.ContentType+"; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(b)
}
