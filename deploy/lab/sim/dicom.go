package sim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// DICOM upper-layer PDU types (PS3.8 section 9.3).
const (
	pduAssociateRQ = 0x01
	pduAssociateAC = 0x02
	pduAssociateRJ = 0x03
	pduPData       = 0x04
	pduReleaseRQ   = 0x05
	pduReleaseRP   = 0x06
	pduAbort       = 0x07
	maxPDU         = 1 << 20
)

const (
	uidAppContext     = "1.2.840.10008.3.1.1.1"
	uidCTImageStorage = "1.2.840.10008.5.1.4.1.1.2"
	uidImplicitVRLE   = "1.2.840.10008.1.2"
	uidSimImplClass   = "1.2.826.0.1.3680043.9.7433.1.1" // synthetic implementation class
	simImplVersion    = "MEDMESH_SIM_1"
)

func aeTitle(s string) []byte {
	b := []byte(strings.ToUpper(s))
	if len(b) > 16 {
		b = b[:16]
	}
	out := []byte("                ")
	copy(out, b)
	return out
}

func item(typ byte, body []byte) []byte {
	b := []byte{typ, 0, 0, 0}
	binary.BigEndian.PutUint16(b[2:], uint16(len(body)))
	return append(b, body...)
}

func uidItem(typ byte, uid string) []byte { return item(typ, []byte(uid)) }

func userInfo() []byte {
	var ml [4]byte
	binary.BigEndian.PutUint32(ml[:], 16384)
	var ui []byte
	ui = append(ui, item(0x51, ml[:])...)
	ui = append(ui, uidItem(0x52, uidSimImplClass)...)
	ui = append(ui, item(0x55, []byte(simImplVersion))...)
	return item(0x50, ui)
}

func pdu(typ byte, body []byte) []byte {
	b := make([]byte, 6, 6+len(body))
	b[0] = typ
	binary.BigEndian.PutUint32(b[2:], uint32(len(body)))
	return append(b, body...)
}

// associateRQ builds an A-ASSOCIATE-RQ proposing CT Image Storage.
func associateRQ(called, calling string) []byte {
	body := []byte{0x00, 0x01, 0, 0}
	body = append(body, aeTitle(called)...)
	body = append(body, aeTitle(calling)...)
	body = append(body, make([]byte, 32)...)
	body = append(body, uidItem(0x10, uidAppContext)...)
	pc := []byte{1, 0, 0, 0}
	pc = append(pc, uidItem(0x30, uidCTImageStorage)...)
	pc = append(pc, uidItem(0x40, uidImplicitVRLE)...)
	body = append(body, item(0x20, pc)...)
	body = append(body, userInfo()...)
	return pdu(pduAssociateRQ, body)
}

// associateAC answers rq (the RQ body after the 6-byte header), accepting
// presentation context 1.
func associateAC(rqBody []byte) []byte {
	body := []byte{0x00, 0x01, 0, 0}
	body = append(body, rqBody[4:68]...) // called and calling AE echoed, reserved
	body = append(body, uidItem(0x10, uidAppContext)...)
	pc := []byte{1, 0, 0, 0} // id 1, result 0 (acceptance)
	pc = append(pc, uidItem(0x40, uidImplicitVRLE)...)
	body = append(body, item(0x21, pc)...)
	body = append(body, userInfo()...)
	return pdu(pduAssociateAC, body)
}

func readPDU(r io.Reader) (byte, []byte, error) {
	var h [6]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[2:])
	if n > maxPDU {
		return 0, nil, fmt.Errorf("dicom pdu of %d bytes is too long", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, fmt.Errorf("read dicom pdu body: %w", err)
	}
	return h[0], body, nil
}

// pData wraps one fragment of a dataset in a P-DATA-TF PDU with one PDV.
func pData(fragment []byte, last bool) []byte {
	hdr := byte(0x00) // dataset, not last
	if last {
		hdr = 0x02
	}
	pdv := make([]byte, 4, 6+len(fragment))
	binary.BigEndian.PutUint32(pdv, uint32(2+len(fragment)))
	pdv = append(pdv, 1, hdr)
	pdv = append(pdv, fragment...)
	return pdu(pduPData, pdv)
}

// syntheticDataset returns n bytes standing for pixel data: a deterministic
// gradient, never anything patient-derived.
func syntheticDataset(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

// dicomStore associates with the PACS as callingAE, sends size bytes in
// P-DATA-TF PDUs of at most 4 KiB, and releases the association.
func dicomStore(rw io.ReadWriter, calledAE, callingAE string, size int) error {
	if _, err := rw.Write(associateRQ(calledAE, callingAE)); err != nil {
		return fmt.Errorf("send a-associate-rq: %w", err)
	}
	typ, body, err := readPDU(rw)
	if err != nil {
		return fmt.Errorf("read association answer: %w", err)
	}
	switch {
	case typ == pduAssociateRJ:
		return errors.New("pacs rejected the association")
	case typ != pduAssociateAC:
		return fmt.Errorf("pacs answered pdu type 0x%02x, want a-associate-ac", typ)
	case len(body) < 68 || string(body[20:36]) != string(aeTitle(callingAE)):
		return errors.New("a-associate-ac does not echo the calling ae title")
	}
	data := syntheticDataset(size)
	for off := 0; off < len(data); off += 4096 {
		end := min(off+4096, len(data))
		if _, err := rw.Write(pData(data[off:end], end == len(data))); err != nil {
			return fmt.Errorf("send p-data-tf: %w", err)
		}
	}
	if _, err := rw.Write(pdu(pduReleaseRQ, make([]byte, 4))); err != nil {
		return fmt.Errorf("send a-release-rq: %w", err)
	}
	typ, _, err = readPDU(rw)
	if err != nil {
		return fmt.Errorf("read a-release-rp: %w", err)
	}
	if typ != pduReleaseRP {
		return fmt.Errorf("pacs answered pdu type 0x%02x, want a-release-rp", typ)
	}
	return nil
}

// serveDICOM is the PACS side of one association. It returns the bytes of
// dataset received.
func serveDICOM(rw io.ReadWriter) (int, error) {
	typ, body, err := readPDU(rw)
	if err != nil {
		return 0, err
	}
	if typ != pduAssociateRQ || len(body) < 68 {
		_, _ = rw.Write(pdu(pduAbort, make([]byte, 4)))
		return 0, fmt.Errorf("first pdu type 0x%02x is not an a-associate-rq", typ)
	}
	if _, err := rw.Write(associateAC(body)); err != nil {
		return 0, err
	}
	received := 0
	for {
		typ, body, err := readPDU(rw)
		if err != nil {
			return received, err
		}
		switch typ {
		case pduPData:
			for len(body) >= 6 {
				n := int(binary.BigEndian.Uint32(body))
				if n < 2 || 4+n > len(body) {
					return received, errors.New("malformed pdv item")
				}
				received += n - 2
				body = body[4+n:]
			}
		case pduReleaseRQ:
			_, err := rw.Write(pdu(pduReleaseRP, make([]byte, 4)))
			return received, err
		default:
			return received, fmt.Errorf("unexpected pdu type 0x%02x", typ)
		}
	}
}
