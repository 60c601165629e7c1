package api

import (
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// FuzzIncidentToken: a page or resume token from a client never panics
// its decoding; what decodes is an (index, id) position that encodes
// back to the same position, and what does not is INVALID_ARGUMENT.
func FuzzIncidentToken(f *testing.F) {
	f.Add(incidentToken(&medmeshv1.Incident{Index: 42, Id: "inc-0011223344556677"}))
	f.Add(encodeToken("17/"))
	f.Add(encodeToken("x/inc"))
	f.Add("!!")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		idx, id, err := decodeIncidentToken("page_token", tok)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "page_token") {
				t.Fatalf("token %q: %v, want INVALID_ARGUMENT naming the field", tok, err)
			}
			return
		}
		if tok == "" {
			if idx != 0 || id != "" {
				t.Fatalf("empty token decoded to %d/%q", idx, id)
			}
			return
		}
		again := encodeToken(strconv.FormatUint(idx, 10) + "/" + id)
		idx2, id2, err := decodeIncidentToken("page_token", again)
		if err != nil || idx2 != idx || id2 != id {
			t.Fatalf("token %q: %d/%q does not round-trip (%d/%q, %v)", tok, idx, id, idx2, id2, err)
		}
	})
}
