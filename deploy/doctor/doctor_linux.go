package doctor

import (
	"fmt"

	"golang.org/x/sys/unix"
)

func kernel() Result {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return Result{"kernel", Fail, err.Error(), ""}
	}
	rel := unix.ByteSliceToString(u.Release[:])
	maj, min, ok := parseRelease(rel)
	switch {
	case !ok:
		return Result{"kernel", Warn, "cannot read version " + rel, "run a Linux kernel 5.9 or newer (6.1+ recommended)"}
	case maj < minKernel[0] || maj == minKernel[0] && min < minKernel[1]:
		return Result{"kernel", Fail, rel + " is older than 5.9", "upgrade to a kernel 5.9 or newer (Debian 12's 6.1 works): CAP_BPF, ring buffers and XDP links need it"}
	}
	return Result{"kernel", OK, rel, ""}
}

// clock asks the kernel (adjtimex) whether the clock is synchronised:
// Raft leases and certificate checks need it.
func clock() Result {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return Result{"clock", Warn, "adjtimex: " + err.Error(), ""}
	}
	if state == unix.TIME_ERROR || tx.Status&unix.STA_UNSYNC != 0 {
		return Result{"clock", Warn, "the kernel says the clock is not synchronised (no NTP daemon disciplines it)",
			"install and enable an NTP client: apt-get install chrony (or systemctl enable --now systemd-timesyncd)"}
	}
	return Result{"clock", OK, fmt.Sprintf("synchronised, estimated error %d µs", tx.Esterror), ""}
}
