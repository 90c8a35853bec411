package xsk

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The UMEM's allocator needs no privileges: these run everywhere on
// Linux.

func TestUMEMConfig(t *testing.T) {
	for _, c := range []struct {
		cfg UMEMConfig
		ok  bool
	}{
		{UMEMConfig{}, true},
		{UMEMConfig{Frames: 1, FrameSize: 4096}, true},
		{UMEMConfig{FrameSize: 1024}, false}, // below the kernel's 2048
		{UMEMConfig{FrameSize: 3000}, false}, // not a power of two
		{UMEMConfig{FrameSize: 1 << 16}, false},
		{UMEMConfig{Frames: -1}, false},
		{UMEMConfig{Headroom: 300}, false}, // 2048-256-300 < 1514
		{UMEMConfig{Headroom: 256}, true},
	} {
		u, err := NewUMEM(c.cfg)
		if (err == nil) != c.ok {
			t.Errorf("NewUMEM(%+v): %v, want ok=%v", c.cfg, err, c.ok)
		}
		if u != nil {
			u.Close()
		}
	}
}

func TestUMEMAlloc(t *testing.T) {
	u, err := NewUMEM(UMEMConfig{Frames: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if u.Frames() != 8 || u.FrameSize() != 2048 || u.MaxFrameLen() != 2048-256 || u.FreeFrames() != 8 {
		t.Fatalf("geometry: %d frames of %d, max %d, %d free", u.Frames(), u.FrameSize(), u.MaxFrameLen(), u.FreeFrames())
	}
	got := make([]uint64, 10)
	if n := u.Alloc(got); n != 8 {
		t.Fatalf("Alloc = %d, want 8", n)
	}
	seen := map[uint64]bool{}
	for _, a := range got[:8] {
		if a%2048 != 0 || a >= 8*2048 || seen[a] {
			t.Errorf("bad or repeated address %#x", a)
		}
		seen[a] = true
	}
	if got[0] != 0 {
		t.Errorf("first frame %#x, want 0 (low addresses first)", got[0])
	}
	if u.Alloc(got) != 0 || u.FreeFrames() != 0 {
		t.Fatal("empty UMEM handed out a frame")
	}
	// Free by an address inside the frame, as a received descriptor has.
	u.Free([]uint64{got[3] + 256 + 100})
	u.FreeDescs([]Desc{{Addr: got[4] + 256, Len: 60}})
	if u.FreeFrames() != 2 || u.BadFrees() != 0 {
		t.Fatalf("after two frees: %d free, %d bad", u.FreeFrames(), u.BadFrees())
	}
	// Double free and out of range are refused and counted.
	u.Free([]uint64{got[3], 8 * 2048, 1 << 40})
	if u.FreeFrames() != 2 || u.BadFrees() != 3 {
		t.Fatalf("after bad frees: %d free, %d bad", u.FreeFrames(), u.BadFrees())
	}
	if n := u.Alloc(got[:1]); n != 1 || (got[0] != got[4]&^2047 && got[0] != got[3]&^2047) {
		t.Errorf("Alloc after Free = %d %#x", n, got[0])
	}
	if a := testing.AllocsPerRun(100, func() {
		n := u.Alloc(got)
		u.Free(got[:n])
	}); a != 0 {
		t.Errorf("Alloc/Free allocate %.1f per run", a)
	}
}

func TestUMEMFrame(t *testing.T) {
	u, err := NewUMEM(UMEMConfig{Frames: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for _, c := range []struct {
		d    Desc
		want int // length, -1 for nil
	}{
		{Desc{Addr: 256, Len: 60}, 60},
		{Desc{Addr: 2048 + 256, Len: 1792}, 1792}, // to the end of frame 1
		{Desc{Addr: 2048 + 256, Len: 1793}, -1},   // crosses into frame 2
		{Desc{Addr: 3*2048 + 2000, Len: 100}, -1}, // past the UMEM
		{Desc{Addr: 1 << 62, Len: 1}, -1},
		{Desc{Addr: ^uint64(0) - 5, Len: 10}, -1}, // wraps
		{Desc{Addr: 100, Len: 0}, 0},
	} {
		f := u.Frame(c.d)
		if (f == nil && c.want != -1) || (f != nil && len(f) != c.want) {
			t.Errorf("Frame(%+v): len %d nil=%v, want %d", c.d, len(f), f == nil, c.want)
		}
		if f != nil && cap(f) != len(f) {
			t.Errorf("Frame(%+v): cap %d lets a caller write past the frame", c.d, cap(f))
		}
	}
	b := u.Buffer(2048 + 10)
	if len(b) != 2048-10 || cap(b) != len(b) {
		t.Errorf("Buffer: len %d cap %d", len(b), cap(b))
	}
	b[0] = 42
	if u.Frame(Desc{Addr: 2048 + 10, Len: 1})[0] != 42 {
		t.Error("Buffer and Frame disagree")
	}
	if u.Buffer(4*2048) != nil {
		t.Error("Buffer past the UMEM")
	}
	u.Close()
	if u.Frame(Desc{Addr: 0, Len: 1}) != nil || u.Buffer(0) != nil {
		t.Error("Frame or Buffer after Close")
	}
	if _, err := NewSocket(u, SocketConfig{Ifindex: 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("NewSocket on a closed UMEM: %v", err)
	}
}

func TestSocketConfig(t *testing.T) {
	for _, c := range []struct {
		cfg SocketConfig
		ok  bool
	}{
		{SocketConfig{Ifindex: 1}, true},
		{SocketConfig{Ifindex: 0}, false},
		{SocketConfig{Ifindex: 1, Queue: -1}, false},
		{SocketConfig{Ifindex: 1, RxSize: 1000}, false},
		{SocketConfig{Ifindex: 1, NoRx: true, NoTx: true}, false},
		{SocketConfig{Ifindex: 1, NoRx: true}, true},
	} {
		if _, err := c.cfg.withDefaults(); (err == nil) != c.ok {
			t.Errorf("%+v: %v, want ok=%v", c.cfg, err, c.ok)
		}
	}
}

// TestErrorCauses checks that attach and bind errors name their cause
// and still match their errno.
func TestErrorCauses(t *testing.T) {
	for _, c := range []struct {
		err  error
		mode Mode
		want string
	}{
		{unix.EPERM, ModeNative, "permission denied"},
		{unix.EOPNOTSUPP, ModeNative, "does not support native XDP"},
		{unix.EBUSY, ModeGeneric, "another XDP program"},
		{unix.ERANGE, ModeNative, "MTU too large"},
		{unix.ENOSPC, ModeNative, "fewer rx queues"},
	} {
		wrapped := fmt.Errorf("create link: %w", c.err)
		got := explainAttach(wrapped, c.mode)
		if !strings.Contains(got.Error(), c.want) || !errors.Is(got, c.err) {
			t.Errorf("explainAttach(%v) = %v; want %q and errors.Is", c.err, got, c.want)
		}
	}
	if err := explainAttach(unix.EPERM, ModeNative); !errors.Is(err, os.ErrPermission) {
		t.Errorf("EPERM does not match os.ErrPermission: %v", err)
	}
	if err := explainBind(unix.EOPNOTSUPP); !strings.Contains(err.Error(), "driver does not support") {
		t.Errorf("explainBind(EOPNOTSUPP) = %v", err)
	}
}
