//go:build !linux

package xsk

import (
	"net/netip"
	"time"
)

// On other systems every constructor returns ErrUnsupported; the types
// exist so that code using them builds everywhere.

// UMEM is a region of frames shared with the kernel (Linux only).
type UMEM struct{}

// NewUMEM returns ErrUnsupported.
func NewUMEM(UMEMConfig) (*UMEM, error) { return nil, ErrUnsupported }

func (*UMEM) Frames() int          { return 0 }
func (*UMEM) FrameSize() int       { return 0 }
func (*UMEM) MaxFrameLen() int     { return 0 }
func (*UMEM) FreeFrames() int      { return 0 }
func (*UMEM) BadFrees() uint64     { return 0 }
func (*UMEM) Alloc([]uint64) int   { return 0 }
func (*UMEM) Free([]uint64)        {}
func (*UMEM) FreeDescs([]Desc)     {}
func (*UMEM) Frame(Desc) []byte    { return nil }
func (*UMEM) Buffer(uint64) []byte { return nil }
func (*UMEM) Close() error         { return nil }

// Socket is an AF_XDP socket (Linux only).
type Socket struct{}

// NewSocket returns ErrUnsupported.
func NewSocket(*UMEM, SocketConfig) (*Socket, error) { return nil, ErrUnsupported }

func (*Socket) Receive([]Desc) int               { return 0 }
func (*Socket) Transmit([]Desc) int              { return 0 }
func (*Socket) Fill([]uint64) int                { return 0 }
func (*Socket) FillFromUMEM(int) int             { return 0 }
func (*Socket) Complete([]uint64) int            { return 0 }
func (*Socket) TxQueued() int                    { return 0 }
func (*Socket) Frame(Desc) []byte                { return nil }
func (*Socket) FD() int                          { return -1 }
func (*Socket) UMEM() *UMEM                      { return nil }
func (*Socket) Info() Info                       { return Info{} }
func (*Socket) SameUMEM(*Socket) bool            { return false }
func (*Socket) Err() error                       { return nil }
func (*Socket) Poll(time.Duration) (bool, error) { return false, ErrUnsupported }
func (*Socket) Stats() (Stats, error)            { return Stats{}, ErrUnsupported }
func (*Socket) Close() error                     { return nil }

// Poller waits on several sockets (Linux only).
type Poller struct{}

// NewPoller returns a Poller whose Wait fails.
func NewPoller(...*Socket) *Poller { return &Poller{} }

func (*Poller) Wait(time.Duration) (int, error) { return 0, ErrUnsupported }
func (*Poller) Ready(int) bool                  { return false }

// Program is the XDP program of one port (Linux only).
type Program struct{}

// NewProgram returns ErrUnsupported.
func NewProgram(ProgramConfig) (*Program, error) { return nil, ErrUnsupported }

func (*Program) Attach(int, Mode) (Mode, error) { return ModeAuto, ErrUnsupported }
func (*Program) Mode() Mode                     { return ModeAuto }
func (*Program) Ifindex() int                   { return 0 }
func (*Program) Detach() error                  { return nil }
func (*Program) Register(int, *Socket) error    { return ErrUnsupported }
func (*Program) Unregister(int) error           { return ErrUnsupported }
func (*Program) Locals() *LocalAddrs            { return nil }
func (*Program) Routes() *Routes                { return nil }
func (*Program) Close() error                   { return nil }
func (*Program) Stats() (ProgramStats, error)   { return ProgramStats{}, ErrUnsupported }

// LocalAddrs is the map of the relay's own addresses (Linux only).
type LocalAddrs struct{}

// NewLocalAddrs returns ErrUnsupported.
func NewLocalAddrs(int) (*LocalAddrs, error) { return nil, ErrUnsupported }

func (*LocalAddrs) Add(netip.Addr) error              { return ErrUnsupported }
func (*LocalAddrs) Delete(netip.Addr) error           { return ErrUnsupported }
func (*LocalAddrs) Contains(netip.Addr) (bool, error) { return false, ErrUnsupported }
func (*LocalAddrs) Close() error                      { return nil }

// Routes is the map of routed prefixes (Linux only).
type Routes struct{}

// NewRoutes returns ErrUnsupported.
func NewRoutes(int) (*Routes, error) { return nil, ErrUnsupported }

func (*Routes) Add(netip.Prefix) error    { return ErrUnsupported }
func (*Routes) Delete(netip.Prefix) error { return ErrUnsupported }
func (*Routes) Contains(netip.Addr) bool  { return false }
func (*Routes) Len() int                  { return 0 }
func (*Routes) Windows() (int, int)       { return 0, 0 }
func (*Routes) Close() error              { return nil }

// Queues returns ErrUnsupported.
func Queues(string) (int, error) { return 0, ErrUnsupported }

// Driver returns ErrUnsupported.
func Driver(string) (string, error) { return "", ErrUnsupported }
