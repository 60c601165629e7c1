package sim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Outcome is what the compromised device did and saw, for the scenario
// report. Times are Unix nanoseconds.
type Outcome struct {
	Probes           int    `json:"probes"`
	OpenPorts        int    `json:"open_ports"`
	LoginOK          bool   `json:"login_ok"`
	LoginError       string `json:"login_error,omitempty"`
	ExfilAttempts    int    `json:"exfil_attempts"`
	ExfilOK          int    `json:"exfil_ok"`
	ExfilBytes       int64  `json:"exfil_bytes"`
	FirstExternalNs  int64  `json:"first_external_ns"`
	LastExfilOKNs    int64  `json:"last_exfil_ok_ns"`
	FirstExfilFailNs int64  `json:"first_exfil_fail_ns"`
}

// Attack runs the compromised-device scenario: a TCP connect scan of the
// floor, a telnet login with default credentials, then repeated uploads of
// synthetic data to an internet host until ExfilFor passes.
func Attack(ctx context.Context, cfg Config, log *slog.Logger) (Outcome, error) {
	if err := cfg.validate(); err != nil {
		return Outcome{}, err
	}
	log = log.With("device", cfg.ID, "scenario", "compromised-device")
	var out Outcome
	out.Probes, out.OpenPorts = scan(ctx, cfg)
	log.Info("scan done", "probes", out.Probes, "open", out.OpenPorts)
	if cfg.Login != "" {
		err := telnetLogin(ctx, cfg.Login, "admin", "admin", 2*time.Second)
		out.LoginOK = err == nil
		if err != nil {
			out.LoginError = err.Error()
		}
		log.Info("default-credential login", "target", cfg.Login, "ok", out.LoginOK, "err", err)
	}
	if cfg.Exfil != "" {
		exfil(ctx, cfg, &out)
		log.Info("exfiltration done", "attempts", out.ExfilAttempts, "ok", out.ExfilOK, "bytes", out.ExfilBytes)
	}
	return out, nil
}

func scan(ctx context.Context, cfg Config) (probes, open int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, h := range cfg.Scan {
		for _, p := range cfg.ScanPorts {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				dl := net.Dialer{Timeout: cfg.DialTimeout}
				c, err := dl.DialContext(ctx, "tcp", net.JoinHostPort(h, strconv.Itoa(p)))
				mu.Lock()
				defer mu.Unlock()
				probes++
				if err == nil {
					open++
					c.Close()
				}
			})
		}
	}
	wg.Wait()
	return probes, open
}

// telnetLogin answers a login prompt with user and pass and checks for the
// shell prompt.
func telnetLogin(ctx context.Context, addr, user, pass string, timeout time.Duration) error {
	dl := net.Dialer{Timeout: timeout}
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("telnet: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if err := expect(r, "login: "); err != nil {
		return err
	}
	if _, err := io.WriteString(c, user+"\r\n"); err != nil {
		return err
	}
	if err := expect(r, "Password: "); err != nil {
		return err
	}
	if _, err := io.WriteString(c, pass+"\r\n"); err != nil {
		return err
	}
	if err := expect(r, "# "); err != nil {
		return fmt.Errorf("login refused: %w", err)
	}
	_, _ = io.WriteString(c, "exit\r\n")
	return nil
}

func expect(r *bufio.Reader, s string) error {
	var seen strings.Builder
	for !strings.HasSuffix(seen.String(), s) {
		b, err := r.ReadByte()
		if err != nil {
			return fmt.Errorf("telnet: waiting for %q: %w", s, err)
		}
		if seen.Len() > 4096 {
			return errors.New("telnet: prompt not found")
		}
		seen.WriteByte(b)
	}
	return nil
}

// exfil uploads 64 KiB of synthetic bytes per attempt, every 100 ms, so the
// first drop by an enforcer shows as a failed attempt within ~100 ms.
func exfil(ctx context.Context, cfg Config, out *Outcome) {
	chunk := syntheticDataset(64 << 10)
	end := time.Now().Add(cfg.ExfilFor)
	for time.Now().Before(end) && ctx.Err() == nil {
		out.ExfilAttempts++
		if out.FirstExternalNs == 0 {
			out.FirstExternalNs = time.Now().UnixNano()
		}
		err := func() error {
			dl := net.Dialer{Timeout: cfg.DialTimeout}
			c, err := dl.DialContext(ctx, "tcp", cfg.Exfil)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Second))
			n, err := c.Write(chunk)
			out.ExfilBytes += int64(n)
			return err
		}()
		now := time.Now().UnixNano()
		if err == nil {
			out.ExfilOK++
			out.LastExfilOKNs = now
		} else if out.FirstExfilFailNs == 0 {
			out.FirstExfilFailNs = now
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}
