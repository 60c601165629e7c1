package detect

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/creds"
)

// testDefaults is the default-credential list medmesh ships.
var testDefaults = func() *creds.List {
	l, err := creds.Builtin()
	if err != nil {
		panic(err)
	}
	return l
}()

// step is one sample of a scripted exchange.
type step struct {
	dir flow.Dir
	p   string
}

// run feeds steps through one flow and returns every login reported,
// with End's at the close. No password may appear in anything returned.
func run(t *testing.T, tu flow.Tuple, steps []step, secrets ...string) ([]Login, *State) {
	t.Helper()
	var st State
	var out []Login
	var all strings.Builder
	for _, s := range steps {
		d := inspect(&st, tu, s.dir, []byte(s.p))
		out = append(out, d.Logins...)
		fmt.Fprintf(&all, "%#v %v %+v\n", d, d, d)
	}
	if l, ok := st.End(); ok {
		out = append(out, l)
	}
	fmt.Fprintf(&all, "%#v %v", out, out)
	for _, s := range secrets {
		if strings.Contains(all.String(), s) {
			t.Fatalf("the password %q appears in what the detectors returned:\n%s", s, all.String())
		}
	}
	if st.login != nil && (st.login.np != 0 || st.login.pass != [maxLogin]byte{}) {
		t.Fatalf("the typed password stays in the flow state")
	}
	return out, &st
}

func want(t *testing.T, got []Login, want ...Login) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("logins %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("login %d = %#v, want %#v", i, got[i], want[i])
		}
	}
}

func chars(dir flow.Dir, s string) []step {
	var out []step
	for _, c := range s {
		out = append(out, step{dir, string(c)})
	}
	return out
}

func TestTelnetLoginPerCharacter(t *testing.T) {
	steps := []step{{flow.Fwd, string([]byte{iac, 0xfd, 0x03, iac, 0xfb, 0x18})}, {flow.Rev, "\r\nMX450 monitor\r\nlogin: "}}
	for _, c := range "rooX\x7ft\r" { // one character per packet, with a backspace, echoed
		steps = append(steps, step{flow.Fwd, string(c)}, step{flow.Rev, string(c)})
	}
	steps = append(steps, step{flow.Rev, "Password: "})
	steps = append(steps, chars(flow.Fwd, "s3cr3t-Pw\r\n")...)
	steps = append(steps, step{flow.Rev, "\r\n"}, step{flow.Rev, "Last failed login: Mon Mar 2 on ttyp1\r\nThere was 1 failed login attempt.\r\nLast login: Mon Mar 2 08:00\r\n"})
	got, st := run(t, tcpTuple, steps, "s3cr3t")
	want(t, got, Login{Protocol: AppTelnet, User: "root", Cleartext: true, Outcome: Accepted, Subject: flow.Rev})
	if st.App() != AppTelnet || st.WantMore() {
		t.Fatalf("app %q, want more %v after the login", st.App(), st.WantMore())
	}
	// A long typed user name stays bounded.
	var st2 State
	inspect(&st2, tcpTuple, flow.Fwd, []byte{iac, 0xfd, 0x03})
	inspect(&st2, tcpTuple, flow.Rev, []byte("login: "))
	inspect(&st2, tcpTuple, flow.Fwd, []byte(strings.Repeat("a", 100)))
	if st2.login.nu != maxLogin {
		t.Fatalf("user buffer %d bytes", st2.login.nu)
	}
}

// TestTelnetConsole: a service console that sends no option negotiation
// (the lab's devices) is recognised by its login prompt; a refused try,
// then the factory login.
func TestTelnetConsole(t *testing.T) {
	got, st := run(t, tcpTuple, []step{
		{flow.Rev, "\r\nmodality1 service console\r\nlogin: "},
		{flow.Fwd, "admin\r\n"}, {flow.Rev, "Password: "}, {flow.Fwd, "letmein\r\n"},
		{flow.Rev, "\r\nLogin incorrect\r\n"},
		{flow.Rev, "login: "}, {flow.Fwd, "admin\r\n"}, {flow.Rev, "Password: "}, {flow.Fwd, "admin\r\n"},
		{flow.Rev, "\r\nWelcome\r\n# "},
	}, "letmein")
	if st.App() != AppTelnet {
		t.Fatalf("app %q", st.App())
	}
	want(t, got,
		Login{Protocol: AppTelnet, User: "admin", Cleartext: true, Outcome: Refused, Subject: flow.Rev},
		Login{Protocol: AppTelnet, User: "admin", Cleartext: true, Default: true, Outcome: Accepted, Subject: flow.Rev})
	if s := got[1].String(); s != "telnet user admin (default password, accepted)" {
		t.Errorf("String %q", s)
	}
	// A greeting that is no login prompt is not telnet.
	var other State
	inspect(&other, tcpTuple, flow.Rev, []byte("+OK POP3 server ready\r\n"))
	if other.App() != "" {
		t.Fatalf("POP3 greeting detected as %q", other.App())
	}
}

func TestTelnetPasswordOnly(t *testing.T) {
	got, _ := run(t, tcpTuple, []step{
		{flow.Rev, string([]byte{iac, 0xfb, 0x01, iac, 0xfb, 0x03})},
		{flow.Rev, "\r\nUser Access Verification\r\n\r\nPassword: "},
		{flow.Fwd, "cisco\r"},
		{flow.Rev, "\r\nRouter>"},
	})
	want(t, got, Login{Protocol: AppTelnet, Cleartext: true, Default: true, Outcome: Accepted, Subject: flow.Rev})
}

func TestTelnetAnswerNotSeen(t *testing.T) {
	got, _ := run(t, tcpTuple, []step{{flow.Rev, "login: "}, {flow.Fwd, "root\r\n"}, {flow.Rev, "Password: "}, {flow.Fwd, "root\r\n"}})
	want(t, got, Login{Protocol: AppTelnet, User: "root", Cleartext: true, Default: true, Outcome: NotSeen, Subject: flow.Rev})
}

func TestFTPLogins(t *testing.T) {
	var st State
	inspect(&st, tcpTuple, flow.Rev, []byte("220 Welcome\r\n"))
	if st.App() != "" || !st.WantMore() {
		t.Fatalf("a bare 220 greeting: app %q, want more %v", st.App(), st.WantMore())
	}
	d := inspect(&st, tcpTuple, flow.Fwd, []byte("USER nurse\r\n"))
	if st.App() != AppFTP || d.Field(FieldFTPUser) != "nurse" {
		t.Fatalf("app %q fields %v", st.App(), d.Fields)
	}
	got, _ := run(t, tcpTuple, []step{
		{flow.Rev, "220 FTP ready\r\n"}, {flow.Fwd, "USER nurse\r\n"}, {flow.Rev, "331 Password required\r\n"},
		{flow.Fwd, "PASS Hosp1tal!\r\n"}, {flow.Rev, "530 Login incorrect.\r\n"},
		{flow.Fwd, "USER admin\r\n"}, {flow.Rev, "331 Password required\r\n"},
		{flow.Fwd, "PASS admin\r\n"}, {flow.Rev, "230 Login successful.\r\n"},
	}, "Hosp1tal")
	want(t, got,
		Login{Protocol: AppFTP, User: "nurse", Cleartext: true, Outcome: Refused, Subject: flow.Rev},
		Login{Protocol: AppFTP, User: "admin", Cleartext: true, Default: true, Outcome: Accepted, Subject: flow.Rev})
	// A server that lets a user in without a password.
	got, _ = run(t, tcpTuple, []step{{flow.Rev, "220 FTP ready\r\n"}, {flow.Fwd, "USER ftp\r\n"}, {flow.Rev, "230 Anonymous access granted\r\n"}})
	want(t, got, Login{Protocol: AppFTP, User: "ftp", Cleartext: true, NoPassword: true, Default: true, Outcome: Accepted, Subject: flow.Rev})
	// SMTP greets with 220 too.
	var smtp State
	inspect(&smtp, tcpTuple, flow.Rev, []byte("220 mail ESMTP Postfix\r\n"))
	inspect(&smtp, tcpTuple, flow.Fwd, []byte("EHLO client\r\n"))
	if smtp.App() != "" {
		t.Fatalf("smtp detected as %q", smtp.App())
	}
}

func TestMQTTLogins(t *testing.T) {
	connect := func(user, pass string) string {
		body := "\x00\x04MQTT\x04\xc2\x00\x3c\x00\x08pump-007" + string([]byte{0, byte(len(user))}) + user + string([]byte{0, byte(len(pass))}) + pass
		return "\x10" + string([]byte{byte(len(body))}) + body
	}
	got, _ := run(t, tcpTuple, []step{{flow.Fwd, connect("admin", "secret-pass")}, {flow.Rev, "\x20\x02\x00\x00"}}, "secret-pass")
	want(t, got, Login{Protocol: AppMQTT, User: "admin", Cleartext: true, Outcome: Accepted, Subject: flow.Rev})
	got, _ = run(t, tcpTuple, []step{{flow.Fwd, connect("admin", "admin")}, {flow.Rev, "\x20\x02\x00\x05"}})
	want(t, got, Login{Protocol: AppMQTT, User: "admin", Cleartext: true, Default: true, Outcome: Refused, Subject: flow.Rev})
	// MQTT 5: reason code 0x86, bad user name or password.
	got, _ = run(t, tcpTuple, []step{{flow.Fwd, connect("admin", "12345")}, {flow.Rev, "\x20\x03\x00\x86\x00"}})
	want(t, got, Login{Protocol: AppMQTT, User: "admin", Cleartext: true, Default: true, Outcome: Refused, Subject: flow.Rev})
	// A broker that is unavailable says nothing about the credentials.
	got, _ = run(t, tcpTuple, []step{{flow.Fwd, connect("admin", "admin")}, {flow.Rev, "\x20\x02\x00\x03"}})
	want(t, got, Login{Protocol: AppMQTT, User: "admin", Cleartext: true, Default: true, Outcome: NotSeen, Subject: flow.Rev})
}

func TestHTTPBasicLogins(t *testing.T) {
	req := func(user, pass string) string {
		return "GET /config HTTP/1.1\r\nHost: pump\r\nAuthorization: Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass)) + "\r\n\r\n"
	}
	got, _ := run(t, tcpTuple, []step{
		{flow.Fwd, req("admin", "Winter2026")}, {flow.Rev, "HTTP/1.1 401 Unauthorized\r\n\r\n"},
		{flow.Fwd, req("admin", "admin")}, {flow.Rev, "HTTP/1.1 100 Continue\r\n\r\n"}, {flow.Rev, "HTTP/1.1 200 OK\r\nServer: pumpd\r\n\r\n"},
	}, "Winter2026", base64.StdEncoding.EncodeToString([]byte("admin:Winter2026")))
	want(t, got,
		Login{Protocol: AppHTTP, Method: "basic", User: "admin", Cleartext: true, Outcome: Refused, Subject: flow.Rev},
		Login{Protocol: AppHTTP, Method: "basic", User: "admin", Cleartext: true, Default: true, Outcome: Accepted, Subject: flow.Rev})
}

func TestHTTPFormLogins(t *testing.T) {
	post := func(body string) string {
		return fmt.Sprintf("POST /login HTTP/1.1\r\nHost: pump\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
	got, _ := run(t, tcpTuple, []step{
		{flow.Fwd, post("username=admin&password=admin&remember=1")},
		{flow.Rev, "HTTP/1.1 302 Found\r\nLocation: /dashboard\r\n\r\n"},
	})
	want(t, got, Login{Protocol: AppHTTP, Method: "form", User: "admin", Cleartext: true, Default: true, Outcome: Accepted, Subject: flow.Rev})
	// The body in the next packet, URL-encoded; redirected back to the form.
	hdr := post("x")
	hdr = hdr[:len(hdr)-1]
	got, _ = run(t, tcpTuple, []step{
		{flow.Fwd, hdr}, {flow.Fwd, "csrf=1&j_username=biomed&j_password=P%40ss+word%21"},
		{flow.Rev, "HTTP/1.1 303 See Other\r\nLocation: /login?error=1\r\n\r\n"},
	}, "P@ss word!", "P%40ss")
	want(t, got, Login{Protocol: AppHTTP, Method: "form", User: "biomed", Cleartext: true, Outcome: Refused, Subject: flow.Rev})
	// A 200 may be the form again, with an error: not an answer.
	got, _ = run(t, tcpTuple, []step{{flow.Fwd, post("user=root&pwd=root")}, {flow.Rev, "HTTP/1.1 200 OK\r\n\r\n"}})
	want(t, got, Login{Protocol: AppHTTP, Method: "form", User: "root", Cleartext: true, Default: true, Outcome: NotSeen, Subject: flow.Rev})
	// A form without a password field, and a JSON body, are no logins.
	got, _ = run(t, tcpTuple, []step{{flow.Fwd, post("q=pump&page=2")}, {flow.Fwd, "POST /api HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"password\":\"x\"}"}})
	want(t, got)
	// A password cut by the sample end is partial, not compared.
	long := post("username=admin&password=" + strings.Repeat("a", 600))
	got, _ = run(t, tcpTuple, []step{{flow.Fwd, long}})
	want(t, got, Login{Protocol: AppHTTP, Method: "form", User: "admin", Cleartext: true, Partial: true, Subject: flow.Rev})
}

func snmpMsg(community string, pdu byte) string {
	inner := "\x02\x04\x50\x67\xd6\x5d\x02\x01\x00\x02\x01\x00\x30\x0e\x30\x0c\x06\x08\x2b\x06\x01\x02\x01\x01\x05\x00\x05\x00"
	body := "\x02\x01\x01\x04" + string([]byte{byte(len(community))}) + community + string([]byte{pdu, byte(len(inner))}) + inner
	return "\x30" + string([]byte{byte(len(body))}) + body
}

func TestSNMPCommunities(t *testing.T) {
	got, _ := run(t, udpTuple, []step{{flow.Fwd, snmpMsg("public", pduGet)}, {flow.Rev, snmpMsg("public", pduResponse)}})
	want(t, got, Login{Protocol: AppSNMP, Cleartext: true, Default: true, Outcome: Accepted, Subject: flow.Rev})
	// A wrong community: the agent stays silent.
	got, _ = run(t, udpTuple, []step{{flow.Fwd, snmpMsg("n0tpublic", pduGet)}}, "n0tpublic")
	want(t, got, Login{Protocol: AppSNMP, Cleartext: true, Outcome: NotSeen, Subject: flow.Rev})
	// A trap carries the agent's community, asking for no login.
	got, _ = run(t, udpTuple, []step{{flow.Fwd, snmpMsg("public2c", pduTrapV2)}}, "public2c")
	want(t, got, Login{Protocol: AppSNMP, Cleartext: true, Outcome: NoAnswer, Subject: flow.Fwd})
	// A response seen without its request: the sender took the community.
	got, _ = run(t, udpTuple, []step{{flow.Fwd, snmpMsg("private", pduResponse)}, {flow.Fwd, snmpMsg("private", pduResponse)}})
	want(t, got, Login{Protocol: AppSNMP, Cleartext: true, Default: true, Outcome: Accepted, Subject: flow.Fwd})
}

func TestVNC(t *testing.T) {
	challenge := strings.Repeat("\x5a", 16)
	for _, c := range []struct {
		name  string
		steps []step
		want  []Login
	}{
		{"3.8 none", []step{{flow.Rev, "RFB 003.008\n"}, {flow.Fwd, "RFB 003.008\n"}, {flow.Rev, "\x02\x01\x02"}, {flow.Fwd, "\x01"}, {flow.Rev, "\x00\x00\x00\x00"}},
			[]Login{{Protocol: AppVNC, Method: "none", NoPassword: true, Default: true, Outcome: Accepted, Subject: flow.Rev}}},
		{"3.7 none", []step{{flow.Rev, "RFB 003.007\n"}, {flow.Fwd, "RFB 003.007\n"}, {flow.Rev, "\x01\x01"}, {flow.Fwd, "\x01"}},
			[]Login{{Protocol: AppVNC, Method: "none", NoPassword: true, Default: true, Outcome: Accepted, Subject: flow.Rev}}},
		{"3.3 none", []step{{flow.Rev, "RFB 003.003\n"}, {flow.Fwd, "RFB 003.003\n"}, {flow.Rev, "\x00\x00\x00\x01"}},
			[]Login{{Protocol: AppVNC, Method: "none", NoPassword: true, Default: true, Outcome: Accepted, Subject: flow.Rev}}},
		{"3.8 password refused", []step{{flow.Rev, "RFB 003.008\n"}, {flow.Fwd, "RFB 003.008\n"}, {flow.Rev, "\x01\x02"}, {flow.Fwd, "\x02"},
			{flow.Rev, challenge}, {flow.Fwd, challenge}, {flow.Rev, "\x00\x00\x00\x01\x00\x00\x00\x0eAuthentication"}},
			[]Login{{Protocol: AppVNC, Method: "vnc-auth", Outcome: Refused, Subject: flow.Rev}}},
		{"3.3 password accepted", []step{{flow.Rev, "RFB 003.003\n"}, {flow.Fwd, "RFB 003.003\n"}, {flow.Rev, "\x00\x00\x00\x02" + challenge},
			{flow.Fwd, challenge}, {flow.Rev, "\x00\x00\x00\x00"}},
			[]Login{{Protocol: AppVNC, Method: "vnc-auth", Outcome: Accepted, Subject: flow.Rev}}},
		{"server refuses", []step{{flow.Rev, "RFB 003.008\n"}, {flow.Fwd, "RFB 003.008\n"}, {flow.Rev, "\x00\x00\x00\x00\x05busy!"}}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, st := run(t, tcpTuple, c.steps)
			if st.App() != AppVNC {
				t.Fatalf("app %q", st.App())
			}
			want(t, got, c.want...)
		})
	}
}

func TestSSHBanner(t *testing.T) {
	got, st := run(t, tcpTuple, []step{{flow.Rev, "SSH-2.0-OpenSSH_7.9p1 Raspbian-10+deb10u2\r\n"}, {flow.Fwd, "SSH-2.0-OpenSSH_9.6\r\n"}, {flow.Rev, "\x00\x00\x01\x14\x0a\x14"}})
	if st.App() != AppSSH {
		t.Fatalf("app %q", st.App())
	}
	want(t, got, Login{Protocol: AppSSH, Method: "banner", User: "pi", Default: true, Inferred: true, Subject: flow.Rev})
	if s := got[0].String(); s != "ssh user pi (model ships with this account; login not visible)" {
		t.Errorf("String %q", s)
	}
	var st2 State
	d := inspect(&st2, tcpTuple, flow.Rev, []byte("SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n"))
	if d.App != AppSSH || d.Field(FieldSSHBanner) != "2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13" || len(d.Logins) != 0 {
		t.Fatalf("detection %+v", d)
	}
}

func TestParseARP(t *testing.T) {
	req := []byte{0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 0x42, 10, 1, 0, 66, 0, 0, 0, 0, 0, 0, 10, 1, 1, 5}
	a, ok := ParseARP(req)
	if !ok || a.Op == 2 || a.SenderIP.String() != "10.1.0.66" || a.TargetIP.String() != "10.1.1.5" || a.SenderMAC.String() != "02:00:00:00:00:42" {
		t.Fatalf("ARP %+v %v", a, ok)
	}
	req[7] = 2
	if a, ok := ParseARP(req); !ok || a.Op != 2 {
		t.Fatalf("reply %+v %v", a, ok)
	}
	req[7] = 3
	if _, ok := ParseARP(req); ok {
		t.Fatal("RARP accepted")
	}
	if _, ok := ParseARP(req[:27]); ok {
		t.Fatal("short packet accepted")
	}
}

// TestServerSeenFirst: a capture (or a sensor) that starts mid-handshake
// orients the flow from the server's first packet; the login is still
// followed, from the side that sends it, to the side that answers.
func TestServerSeenFirst(t *testing.T) {
	connect := "\x10\x1d\x00\x04MQTT\x04\xc2\x00\x3c\x00\x03dev\x00\x05admin\x00\x05admin"
	got, _ := run(t, tcpTuple, []step{{flow.Rev, connect}, {flow.Fwd, "\x20\x02\x00\x00"}})
	want(t, got, Login{Protocol: AppMQTT, User: "admin", Cleartext: true, Default: true, Outcome: Accepted, Subject: flow.Fwd})
	got, _ = run(t, tcpTuple, []step{{flow.Fwd, "\r\nconsole\r\nlogin: "}, {flow.Rev, "admin\r\n"}, {flow.Fwd, "Password: "},
		{flow.Rev, "admin\r\n"}, {flow.Fwd, "\r\n# "}})
	want(t, got, Login{Protocol: AppTelnet, User: "admin", Cleartext: true, Default: true, Outcome: Accepted, Subject: flow.Fwd})
	got, _ = run(t, tcpTuple, []step{{flow.Fwd, "220 ProFTPD Server\r\n"}, {flow.Rev, "USER ftp\r\n"}, {flow.Fwd, "331 Password\r\n"},
		{flow.Rev, "PASS x\r\n"}, {flow.Fwd, "230 OK\r\n"}})
	want(t, got, Login{Protocol: AppFTP, User: "ftp", Cleartext: true, Default: true, Outcome: Accepted, Subject: flow.Fwd})
	got, _ = run(t, tcpTuple, []step{{flow.Fwd, "RFB 003.008\n"}, {flow.Rev, "RFB 003.008\n"}, {flow.Fwd, "\x01\x01"}, {flow.Rev, "\x01"}, {flow.Fwd, "\x00\x00\x00\x00"}})
	want(t, got, Login{Protocol: AppVNC, Method: "none", NoPassword: true, Default: true, Outcome: Accepted, Subject: flow.Fwd})
	got, _ = run(t, tcpTuple, []step{{flow.Rev, "GET / HTTP/1.1\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\n\r\n"}, {flow.Fwd, "HTTP/1.1 200 OK\r\n\r\n"}})
	want(t, got, Login{Protocol: AppHTTP, Method: "basic", User: "admin", Cleartext: true, Default: true, Outcome: Accepted, Subject: flow.Fwd})
}
