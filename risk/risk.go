// Package risk matches devices to vulnerabilities, end of life, recalls and default credentials from an offline intelligence bundle.
//
// A bundle is a directory or .tar.gz of source files in their published
// formats, laid out by kind (csaf/, osv/, kev/, epss/, endoflife/,
// openfda/, gudid/, credentials/), with a manifest.json of every file's
// SHA-256, source and date and an optional ed25519 signature over the
// manifest (risk/internal/bundle). The API:
//
//	in, err := risk.Load(path, key)       // dir or .tar.gz; checked, signature required when key != nil
//	fs, err := in.Assess(device, at)      // findings for one device at a time, most urgent first
//	in.Status(now, maxAge)                // every source with its date and age; stale ones marked, never refused
//	in.Digest()                           // SHA-256 of the manifest: the bundle's identity
//	risk.Build(dirs, created, signKey)    // a bundle's manifest, checked file by file
//
// Assess is deterministic: the same device, time and bundle give the same
// findings in the same order. CSAF advisories are matched by vendor (with
// aliases), model and version (risk/internal/version orders vendor firmware
// versions and reads advisories' range text); confidence says how: exact
// (an affected version equals the device's), range (the device's version
// lies in an affected range, or every version is affected), model (the
// model matched, the device's version is unknown or the advisory names no
// evaluable version), vendor (the device has no model; only its vendor
// matched). VEX known_not_affected and fixed statements suppress a finding
// and say so. Vulnerabilities carry CVSS from the advisory, EPSS and the
// KEV flag. End of life comes from endoflife.date data plus a shipped
// legacy-Windows table, recalls from openFDA joined with GUDID (exact when
// a 510(k)/PMA number, or product code and firm, match; possible on firm
// and model text alone), default credentials from the shipped list plus the
// bundle's (account and protocol only, never a password). SBOM components
// are matched by an SBOMMatcher plugged in with UseSBOM.
package risk

// Kind names what a finding is about. The strings are the wire spelling in
// JSON output and in the API.
type Kind string

const (
	KindVulnerability         Kind = "vulnerability"
	KindEndOfLife             Kind = "end_of_life"
	KindRecall                Kind = "recall"
	KindDefaultCredentials    Kind = "default_credentials"
	KindExternalCommunication Kind = "external_communication"
	KindCleartextPHI          Kind = "cleartext_phi_protocol"
)

// Confidence says how a finding was matched, from surest to least sure.
type Confidence string

const (
	// ConfidenceExact: vendor, product and an exact affected version matched.
	ConfidenceExact Confidence = "exact"
	// ConfidenceRange: the device's version lies inside an affected range.
	ConfidenceRange Confidence = "range"
	// ConfidenceModel: the model matched; the device's version is unknown.
	ConfidenceModel Confidence = "model"
	// ConfidenceVendor: only the vendor matched.
	ConfidenceVendor Confidence = "vendor"
	// ConfidencePossible: a recall matched on firm and model text only.
	ConfidencePossible Confidence = "possible"
)

// Device is what is known of one device: a line of an inventory file
// (JSON Lines) or a device in the coordinator's inventory. Empty fields are
// unknown.
type Device struct {
	MAC      string `json:"mac,omitempty"`
	IP       string `json:"ip,omitempty"`
	Name     string `json:"name,omitempty"`
	Vendor   string `json:"vendor,omitempty"`
	Model    string `json:"model,omitempty"`
	Version  string `json:"version,omitempty"`
	OS       string `json:"os,omitempty"`
	UDIDI    string `json:"udi_di,omitempty"`
	Serial   string `json:"serial,omitempty"`
	Location string `json:"location,omitempty"`
	Owner    string `json:"owner,omitempty"`
	// SBOM is the path of a CycloneDX or SPDX document for this device.
	SBOM string `json:"sbom,omitempty"`
}

// Finding is one reason a device is at risk. ID is stable for the same
// finding across runs (a CVE id, a recall number, an end-of-life product
// and release), so findings can be diffed and deduplicated.
type Finding struct {
	Kind       Kind       `json:"kind"`
	ID         string     `json:"id"`
	Source     string     `json:"source"`
	Confidence Confidence `json:"confidence"`
	// Severity is one of "critical", "high", "medium", "low", "info".
	Severity string `json:"severity"`
	Summary  string `json:"summary,omitempty"`

	// Vulnerability fields.
	CVSS         float64 `json:"cvss,omitempty"`
	CVSSVector   string  `json:"cvss_vector,omitempty"`
	EPSS         float64 `json:"epss,omitempty"`
	KEV          bool    `json:"kev,omitempty"`
	FixedVersion string  `json:"fixed_version,omitempty"`
	Remediation  string  `json:"remediation,omitempty"`
	// Component is the SBOM component (a package URL) a vulnerability was
	// found in; empty when the device or its OS matched.
	Component string `json:"component,omitempty"`

	// End-of-life fields.
	Product string `json:"product,omitempty"`
	Release string `json:"release,omitempty"`
	EOLDate string `json:"eol_date,omitempty"`

	// Recall fields.
	RecallNumber string `json:"recall_number,omitempty"`
	RecallClass  string `json:"recall_class,omitempty"`
	Reason       string `json:"reason,omitempty"`

	// Default-credential fields: the protocol and account, never a password.
	Protocol string `json:"protocol,omitempty"`
	Account  string `json:"account,omitempty"`

	// Suppressed says why a matched finding does not apply (a VEX
	// statement); suppressed findings are reported but not scored.
	Suppressed string `json:"suppressed,omitempty"`
}
