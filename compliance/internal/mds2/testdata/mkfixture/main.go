// Command mkfixture writes the MDS2 workbooks the mds2 and compliance tests
// read, laid out as the published ANSI/NEMA HN 1-2019 form (NEMA/MITA,
// "Manufacturer Disclosure Statement for Medical Device Security"): a sheet
// "MDS2" with the document header, then one question a row under the
// column heads "Question ID", "Question", "See note", "Yes, No, N/A, or See
// Note", "Note #" and the standards references, grouped by section. The
// questions are paraphrased from the form; the IDs are the form's. The
// devices are invented.
//
//	go run ./compliance/internal/mds2/testdata/mkfixture compliance/internal/mds2/testdata
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/xuri/excelize/v2"
)

type row struct{ id, question, answer, note string }

type section struct {
	title string
	rows  []row
}

func form(manufacturer, description, model string, answers map[string]string) []section {
	a := func(id string) string {
		if v, ok := answers[id]; ok {
			return v
		}
		return "N/A"
	}
	return []section{
		{"DOCUMENTATION", []row{
			{"DOC-1", "Manufacturer Name", manufacturer, ""},
			{"DOC-2", "Device Description", description, ""},
			{"DOC-3", "Device Model", model, ""},
			{"DOC-4", "Document ID", "MDS2-" + model, ""},
			{"DOC-5", "Manufacturer Contact Information", "security@example.com", ""},
			{"DOC-6", "Intended use of device in network-connected environment", "Sends results to the hospital's HL7 interface engine", ""},
			{"DOC-7", "Document Release Date", "2024-03-01", ""},
			{"DOC-8", "Coordinated Vulnerability Disclosure: Does the manufacturer have a vulnerability disclosure program for this device?", a("DOC-8"), ""},
		}},
		{"MANAGEMENT OF PERSONALLY IDENTIFIABLE INFORMATION", []row{
			{"MPII-1", "Can this device display, transmit, store, or modify personally identifiable information (e.g. electronic Protected Health Information (ePHI))?", a("MPII-1"), ""},
			{"MPII-2", "Does the device maintain personally identifiable information?", a("MPII-2"), ""},
		}},
		{"AUTOMATIC LOGOFF (ALOF)", []row{
			{"ALOF-1", "Can the device be configured to force reauthorization of logged-in user(s) after a predetermined length of inactivity?", a("ALOF-1"), ""},
		}},
		{"AUDIT CONTROLS (AUDT)", []row{
			{"AUDT-1", "Can the medical device create additional audit logs or reports beyond standard operating system logs?", a("AUDT-1"), ""},
			{"AUDT-2", "Does the audit log record a USER ID?", a("AUDT-2"), ""},
			{"AUDT-3", "Can the audit log be exported to an external log server (e.g. syslog)?", a("AUDT-3"), "1"},
		}},
		{"AUTHORIZATION (AUTH)", []row{
			{"AUTH-1", "Does the device prevent access to unauthorized users through user login requirements or other mechanism?", a("AUTH-1"), ""},
			{"AUTH-2", "Are the types of access available to users configurable (e.g. role-based)?", a("AUTH-2"), ""},
			{"AUTH-3", "Can the device owner/operator obtain unrestricted administrative privileges?", a("AUTH-3"), ""},
		}},
		{"CYBER SECURITY PRODUCT UPGRADES (CSUP)", []row{
			{"CSUP-1", "Does the device contain any software or firmware which may require security updates during its operational life?", a("CSUP-1"), ""},
			{"CSUP-2", "Does the device have the capability to receive remote installation of patches or software updates?", a("CSUP-2"), ""},
		}},
		{"HEALTH DATA INTEGRITY AND AUTHENTICITY (IGAU)", []row{
			{"IGAU-1", "Does the device support any mechanism (e.g. digital signatures) intended to ensure data is not altered?", a("IGAU-1"), ""},
		}},
		{"MALWARE DETECTION/PROTECTION (MLDP)", []row{
			{"MLDP-1", "Is the device capable of hosting executable software?", a("MLDP-1"), ""},
			{"MLDP-2", "Does the device support the use of anti-malware software (or other anti-malware mechanism)?", a("MLDP-2"), ""},
		}},
		{"NODE AUTHENTICATION (NAUT)", []row{
			{"NAUT-1", "Does the device provide/support any means of node authentication that assures both the sender and the recipient of data are known to each other and are authorized to receive transferred information?", a("NAUT-1"), "2"},
			{"NAUT-2", "Are network access control mechanisms supported (e.g. an internal firewall, or a network connection allow list)?", a("NAUT-2"), ""},
		}},
		{"PERSON AUTHENTICATION (PAUT)", []row{
			{"PAUT-1", "Does the device support and enforce unique IDs and passwords for all users and roles (including service accounts)?", a("PAUT-1"), ""},
			{"PAUT-5", "Are all default accounts (e.g. technician service accounts, administrator accounts) listed in the documentation?", a("PAUT-5"), ""},
			{"PAUT-6", "Can all passwords be changed?", a("PAUT-6"), ""},
		}},
		{"REMOTE SERVICE (RMOT)", []row{
			{"RMOT-1", "Does the device permit remote service connections for device analysis or repair?", a("RMOT-1"), ""},
		}},
		{"SOFTWARE BILL OF MATERIALS (SBOM)", []row{
			{"SBOM-1", "Is the SBOM for this product available?", a("SBOM-1"), ""},
		}},
		{"SYSTEM AND APPLICATION HARDENING (SAHD)", []row{
			{"SAHD-1", "Is the device hardened in accordance with any industry standards?", a("SAHD-1"), ""},
			{"SAHD-3", "Does the device employ any mechanisms for software integrity checking (e.g. signed updates)?", a("SAHD-3"), ""},
		}},
		{"TRANSMISSION CONFIDENTIALITY (TXCF)", []row{
			{"TXCF-1", "Can personally identifiable information be transmitted only via a point-to-point dedicated cable?", a("TXCF-1"), ""},
			{"TXCF-2", "Is personally identifiable information encrypted prior to transmission via a network or removable media?", a("TXCF-2"), "3"},
			{"TXCF-3", "Is personally identifiable information transmission restricted to a fixed list of network destinations?", a("TXCF-3"), ""},
		}},
		{"TRANSMISSION INTEGRITY (TXIG)", []row{
			{"TXIG-1", "Does the device support any mechanism (e.g. digital signatures) intended to ensure data is not modified during transmission?", a("TXIG-1"), ""},
		}},
	}
}

func write(path string, secs []section) error {
	f := excelize.NewFile()
	defer f.Close()
	const sheet = "MDS2"
	if err := f.SetSheetName("Sheet1", sheet); err != nil {
		return err
	}
	r := 1
	set := func(vals ...string) error {
		for i, v := range vals {
			cell, err := excelize.CoordinatesToCellName(i+1, r)
			if err != nil {
				return err
			}
			if err := f.SetCellStr(sheet, cell, v); err != nil {
				return err
			}
		}
		r++
		return nil
	}
	if err := set("Manufacturer Disclosure Statement for Medical Device Security -- MDS2"); err != nil {
		return err
	}
	r++
	if err := set("Question ID", "Question", "See note", "Yes, No, N/A, or See Note", "Note #", "IEC TR 80001-2-2:2012", "NIST SP 800-53 Rev. 4", "ISO 27002:2013"); err != nil {
		return err
	}
	for _, s := range secs {
		if err := set(s.title); err != nil {
			return err
		}
		for _, q := range s.rows {
			if err := set(q.id, q.question, "", q.answer, q.note); err != nil {
				return err
			}
		}
	}
	notes := f.NewSheet
	if _, err := notes("Notes"); err != nil {
		return err
	}
	for i, n := range []string{"1: syslog export is a licensed option.", "2: DICOM associations are checked against a configured AE title list.", "3: HL7 results are sent over MLLP without TLS."} {
		if err := f.SetCellStr("Notes", fmt.Sprintf("A%d", i+1), n); err != nil {
			return err
		}
	}
	// Fixed document properties keep the file the same from run to run.
	if err := f.SetDocProps(&excelize.DocProperties{Created: "2024-03-01T00:00:00Z", Modified: "2024-03-01T00:00:00Z", Creator: "mkfixture"}); err != nil {
		return err
	}
	return f.SaveAs(path)
}

func main() {
	dir := "."
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	weak := map[string]string{
		"DOC-8": "Yes", "MPII-1": "Yes", "MPII-2": "Yes", "ALOF-1": "No", "AUDT-1": "No", "AUDT-2": "No", "AUDT-3": "No",
		"AUTH-1": "Yes", "AUTH-2": "No", "AUTH-3": "No", "CSUP-1": "Yes", "CSUP-2": "No", "IGAU-1": "No",
		"MLDP-1": "No", "MLDP-2": "N/A", "NAUT-1": "No", "NAUT-2": "No", "PAUT-1": "No", "PAUT-5": "Yes", "PAUT-6": "No",
		"RMOT-1": "Yes", "SBOM-1": "Yes", "SAHD-1": "No", "SAHD-3": "No", "TXCF-1": "No", "TXCF-2": "No", "TXCF-3": "No", "TXIG-1": "No",
	}
	strong := map[string]string{
		"DOC-8": "Yes", "MPII-1": "Yes", "MPII-2": "Yes", "ALOF-1": "Yes", "AUDT-1": "Yes", "AUDT-2": "Yes", "AUDT-3": "Yes",
		"AUTH-1": "Yes", "AUTH-2": "Yes", "AUTH-3": "Yes", "CSUP-1": "Yes", "CSUP-2": "Yes", "IGAU-1": "Yes",
		"MLDP-1": "Yes", "MLDP-2": "Yes", "NAUT-1": "Yes", "NAUT-2": "Yes", "PAUT-1": "Yes", "PAUT-5": "Yes", "PAUT-6": "Yes",
		"RMOT-1": "See Note", "SBOM-1": "Yes", "SAHD-1": "Yes", "SAHD-3": "Yes", "TXCF-1": "No", "TXCF-2": "Yes", "TXCF-3": "Yes", "TXIG-1": "Yes",
	}
	for name, secs := range map[string][]section{
		"acme-infuser-3000.xlsx": form("Acme Medical", "Large-volume infusion pump", "Infuser 3000", weak),
		"acme-imager-9.xlsx":     form("Acme Medical", "Digital radiography system", "Imager 9", strong),
	} {
		if err := write(filepath.Join(dir, name), secs); err != nil {
			fmt.Fprintln(os.Stderr, "mkfixture:", err)
			os.Exit(1)
		}
	}
}
