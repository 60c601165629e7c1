package sim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// MLLP framing: <VT> message <FS><CR>.
const (
	mllpStart = 0x0b
	mllpEnd1  = 0x1c
	mllpEnd2  = 0x0d
	maxHL7    = 1 << 20
)

func writeMLLP(w io.Writer, msg string) error {
	buf := make([]byte, 0, len(msg)+3)
	buf = append(buf, mllpStart)
	buf = append(buf, msg...)
	buf = append(buf, mllpEnd1, mllpEnd2)
	_, err := w.Write(buf)
	return err
}

func readMLLP(r *bufio.Reader) (string, error) {
	b, err := r.ReadByte()
	if err != nil {
		return "", err
	}
	if b != mllpStart {
		return "", fmt.Errorf("mllp: frame starts with 0x%02x, want 0x0b", b)
	}
	var msg bytes.Buffer
	for {
		chunk, err := r.ReadSlice(mllpEnd1)
		msg.Write(chunk)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", fmt.Errorf("mllp: %w", err)
		}
		if msg.Len() > maxHL7 {
			return "", errors.New("mllp: message too long")
		}
	}
	if b, err := r.ReadByte(); err != nil || b != mllpEnd2 {
		return "", errors.New("mllp: frame does not end with FS CR")
	}
	return strings.TrimSuffix(msg.String(), string(rune(mllpEnd1))), nil
}

// hl7Time formats t as an HL7 DTM.
func hl7Time(t time.Time) string { return t.UTC().Format("20060102150405") }

// hl7Field returns field n (1-based, MSH-1 being the separator) of the first
// segment named seg, or "".
func hl7Field(msg, seg string, n int) string {
	for _, s := range strings.Split(msg, "\r") {
		f := strings.Split(s, "|")
		if f[0] != seg {
			continue
		}
		if seg == "MSH" { // MSH-1 is the field separator itself
			n--
		}
		if n < len(f) {
			return f[n]
		}
		return ""
	}
	return ""
}

// pumpMessage is an IHE PCD-01 style ORU^R40 observation from an infusion
// pump, with the pump's UDI in PRT-16. Values are synthetic.
func pumpMessage(id, udi string, seq int, now time.Time) string {
	ts := hl7Time(now)
	segs := []string{
		"MSH|^~\\&|PUMP^" + id + "|WARD|IE|HOSPITAL|" + ts + "||ORU^R40^ORU_R40|" + fmt.Sprintf("%s-%06d", id, seq) + "|P|2.6|||AL|NE||UNICODE UTF-8",
		"PID|||SIM000" + fmt.Sprint(seq%10) + "^^^LAB^MR||SYNTHETIC^PATIENT||19700101|U",
		"PV1||I|WARD^101^1",
		"OBR|1|||69837^MDC_DEV_PUMP_INFUS_VMD^MDC|||" + ts,
		"PRT|1|UC||AUT^Automated Device^HL70912||||||||||||" + udi,
		"OBX|1|NM|157784^MDC_FLOW_FLUID_PUMP^MDC|1.1.1.1|12.5|265266^MDC_DIM_MILLI_L_PER_HR^MDC|||||R|||" + ts,
	}
	return strings.Join(segs, "\r")
}

// monitorMessage is an ORU^R01 with one heart-rate observation.
func monitorMessage(id string, seq int, now time.Time) string {
	ts := hl7Time(now)
	segs := []string{
		"MSH|^~\\&|MONITOR^" + id + "|WARD|CENTRAL|HOSPITAL|" + ts + "||ORU^R01^ORU_R01|" + fmt.Sprintf("%s-%06d", id, seq) + "|P|2.6",
		"PID|||SIM000" + fmt.Sprint(seq%10) + "^^^LAB^MR||SYNTHETIC^PATIENT||19700101|U",
		"OBR|1|||182777000^monitoring of patient^SCT|||" + ts,
		"OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC||" + fmt.Sprint(60+seq%20) + "|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R|||" + ts,
	}
	return strings.Join(segs, "\r")
}

// ackFor builds the MSA|AA acknowledgement of msg from application app.
// software, if set, is the SFT segment's fields after "SFT|" (vendor,
// version, product, binary id): an HL7 v2.5+ ACK may carry it.
func ackFor(msg, app, software string, now time.Time) string {
	ctl := hl7Field(msg, "MSH", 10)
	trigger := hl7Field(msg, "MSH", 9)
	event := ""
	if parts := strings.Split(trigger, "^"); len(parts) > 1 {
		event = parts[1]
	}
	segs := []string{"MSH|^~\\&|" + app + "|HOSPITAL|" + hl7Field(msg, "MSH", 3) + "|" + hl7Field(msg, "MSH", 4) + "|" + hl7Time(now) + "||ACK^" + event + "^ACK|ACK-" + ctl + "|P|2.6"}
	if software != "" {
		segs = append(segs, "SFT|"+software)
	}
	return strings.Join(append(segs, "MSA|AA|"+ctl), "\r")
}

// exchangeHL7 sends msg over an MLLP connection and checks for an AA ACK
// that names msg's control id.
func exchangeHL7(rw io.ReadWriter, r *bufio.Reader, msg string) error {
	if err := writeMLLP(rw, msg); err != nil {
		return fmt.Errorf("send hl7: %w", err)
	}
	ack, err := readMLLP(r)
	if err != nil {
		return fmt.Errorf("read hl7 ack: %w", err)
	}
	if code := hl7Field(ack, "MSA", 1); code != "AA" {
		return fmt.Errorf("hl7 ack code %q", code)
	}
	if got, want := hl7Field(ack, "MSA", 2), hl7Field(msg, "MSH", 10); got != want {
		return fmt.Errorf("hl7 ack for %q, want %q", got, want)
	}
	return nil
}
