// Package doctor checks a host before medmesh is installed or started on
// it: the kernel and its BTF, XDP on the chosen interface, bpffs, clock
// synchronisation, the ports, and the certificates. Each check says what
// to fix. `medmesh doctor` prints the report.
package doctor

import (
	"bufio"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
)

// Status of one check.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "FAIL"
)

// Result is one check's outcome; Fix says what to do when it is not OK.
type Result struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Config says what to check.
type Config struct {
	Interface  string        // capture or enforcement interface; "" skips the XDP check
	Ports      []int         // TCP ports that must be free (UDP too for gossip's 7402)
	CertFile   string        // a daemon's certificate; "" skips
	CAFile     string        // the campus CA; "" skips the chain check
	ExpiryWarn time.Duration // a certificate expiring sooner fails
	MountInfo  string        // /proc/self/mountinfo
	BTF        string        // /sys/kernel/btf/vmlinux
}

// DefaultConfig checks every medmesh port and 30 days of certificate life.
func DefaultConfig() Config {
	return Config{
		Ports:      []int{7400, 7401, 7402, 7403, 7404, 7405},
		ExpiryWarn: 30 * 24 * time.Hour,
		MountInfo:  "/proc/self/mountinfo",
		BTF:        "/sys/kernel/btf/vmlinux",
	}
}

// Run runs every check.
func Run(cfg Config) []Result {
	rs := []Result{kernel(), btf(cfg.BTF), xdp(cfg.Interface), bpffs(cfg.MountInfo), clock()}
	rs = append(rs, ports(cfg.Ports)...)
	if cfg.CertFile != "" {
		rs = append(rs, cert(cfg.CertFile, cfg.CAFile, cfg.ExpiryWarn, time.Now()))
	}
	return rs
}

// Failed reports whether any check failed.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// minKernel: CAP_BPF, CAP_PERFMON and BPF ring buffers arrived in 5.8,
// XDP through bpf_link in 5.9.
var minKernel = [2]int{5, 9}

func parseRelease(rel string) (int, int, bool) {
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	maj, err1 := strconv.Atoi(parts[0])
	minStr := parts[1]
	if i := strings.IndexFunc(minStr, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minStr = minStr[:i]
	}
	min, err2 := strconv.Atoi(minStr)
	return maj, min, err1 == nil && err2 == nil
}

func btf(path string) Result {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() == 0 {
		return Result{"btf", Fail, fmt.Sprintf("%s: %v", path, err), "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's and Ubuntu's are)"}
	}
	return Result{"btf", OK, fmt.Sprintf("%s (%d bytes)", path, fi.Size()), ""}
}

// xdp checks that the kernel runs XDP programs and that the interface is
// there and up. It does not attach to the interface: a native attach
// resets the link of some NICs, which a check must not do to a ward.
func xdp(ifname string) Result {
	if err := features.HaveProgramType(ebpf.XDP); err != nil {
		fix := "run as root (or with CAP_BPF): the check loads a small XDP program"
		if !errors.Is(err, os.ErrPermission) {
			fix = "enable CONFIG_XDP_SOCKETS/CONFIG_BPF_SYSCALL in the kernel"
		}
		return Result{"xdp", Fail, "the kernel does not load XDP programs: " + err.Error(), fix}
	}
	if ifname == "" {
		return Result{"xdp", OK, "the kernel loads XDP programs (give --interface to check one)", ""}
	}
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return Result{"xdp", Fail, fmt.Sprintf("interface %s: %v", ifname, err), "name an interface of this host (ip -br link)"}
	}
	if ifc.Flags&net.FlagUp == 0 {
		return Result{"xdp", Fail, ifname + " is down", "ip link set " + ifname + " up"}
	}
	if ifc.MTU > 3498 {
		return Result{"xdp", Warn, fmt.Sprintf("%s MTU %d: native XDP on most drivers takes at most ~3500", ifname, ifc.MTU), "lower the MTU, or the sensor attaches in generic mode"}
	}
	return Result{"xdp", OK, fmt.Sprintf("the kernel loads XDP programs; %s is up (MTU %d)", ifname, ifc.MTU), ""}
}

// bpffs finds a bpf file system at /sys/fs/bpf, where enforcers pin.
func bpffs(mountinfo string) Result {
	f, err := os.Open(mountinfo)
	if err != nil {
		return Result{"bpffs", Fail, err.Error(), ""}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint options ... - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		if fields[4] == "/sys/fs/bpf" && fields[sep+1] == "bpf" {
			return Result{"bpffs", OK, "mounted at /sys/fs/bpf", ""}
		}
	}
	return Result{"bpffs", Fail, "no bpf file system at /sys/fs/bpf: enforcers cannot pin their program and maps (they would stop enforcing when they exit)",
		"mount -t bpf bpf /sys/fs/bpf (systemd mounts it at boot; in a container, mount the host's /sys/fs/bpf)"}
}

func ports(ps []int) []Result {
	var rs []Result
	for _, p := range ps {
		name := fmt.Sprintf("port %d", p)
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			rs = append(rs, Result{name, Fail, "tcp: " + err.Error(), fmt.Sprintf("find the user with ss -ltnp 'sport = :%d' and stop it, or give medmesh another port", p)})
			continue
		}
		l.Close()
		if p == 7402 {
			u, err := net.ListenPacket("udp", ":7402")
			if err != nil {
				rs = append(rs, Result{name, Fail, "udp: " + err.Error(), "find the user with ss -lunp 'sport = :7402' (gossip uses UDP and TCP)"})
				continue
			}
			u.Close()
		}
		rs = append(rs, Result{name, OK, "free", ""})
	}
	return rs
}

// cert checks a certificate: readable PEM, valid now, not expiring within
// warn, and signed by the CA when one is given.
func cert(certFile, caFile string, warn time.Duration, now time.Time) Result {
	name := "certificate " + certFile
	b, err := os.ReadFile(certFile)
	if err != nil {
		return Result{name, Fail, err.Error(), "give --tls-cert the daemon's certificate (medmesh tls cert create)"}
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return Result{name, Fail, "no PEM certificate", "give --tls-cert a PEM certificate"}
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return Result{name, Fail, err.Error(), ""}
	}
	renew := "issue a new one: medmesh tls cert create --role ROLE --name NAME (and copy it over the old: daemons reload it)"
	switch {
	case now.Before(c.NotBefore):
		return Result{name, Fail, "not valid until " + c.NotBefore.UTC().Format(time.RFC3339), "check this host's clock, or " + renew}
	case now.After(c.NotAfter):
		return Result{name, Fail, "expired " + c.NotAfter.UTC().Format(time.RFC3339), renew}
	case c.NotAfter.Sub(now) < warn:
		return Result{name, Fail, fmt.Sprintf("expires %s, in %d days", c.NotAfter.UTC().Format(time.RFC3339), int(c.NotAfter.Sub(now).Hours()/24)), renew}
	}
	if caFile != "" {
		pool := x509.NewCertPool()
		cab, err := os.ReadFile(caFile)
		if err != nil || !pool.AppendCertsFromPEM(cab) {
			return Result{name, Fail, fmt.Sprintf("CA %s: unreadable (%v)", caFile, err), "give --tls-ca the campus CA certificate"}
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return Result{name, Fail, "not signed by " + caFile + ": " + err.Error(), "issue it from the campus CA, or give the CA that issued it"}
		}
	}
	ids := ""
	for _, u := range c.URIs {
		ids += " " + u.String()
	}
	return Result{name, OK, fmt.Sprintf("valid until %s (%d days);%s", c.NotAfter.UTC().Format("2006-01-02"), int(c.NotAfter.Sub(now).Hours()/24), ids), ""}
}

func listenTCP(port int) (net.Listener, error) { return net.Listen("tcp", fmt.Sprintf(":%d", port)) }
