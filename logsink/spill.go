package logsink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gptapi/gptapi/internal/throttle"
)

// Spill files hold records the queue had no room for. The current file ends
// in .open while Put appends to it; the writer seals it (renames it to
// .spill) when the queue is empty, inserts its records in one transaction and
// deletes it. Open replays both kinds: they are what a dead process left.
//
// A file is a sequence of frames:
//
//	u32 little-endian payload length | u32 CRC-32C of the payload | payload
//
// and a payload is one record:
//
//	byte version (2) | byte flags (HasKey, Stream, ChunksCut, RequestScanned,
//	RequestTools, RequestMultimodal; older files leave the last three 0) | byte Endpoint |
//	u64 KeyHash | [16]byte UID | byte Route | varint TsMs, Status, TTFT and Latency in ms |
//	uvarint length + bytes of RequestID, ClientIP, Model, ServedModel,
//	Upstream, Tried, Error, RequestBody, ResponseBody, Chunks
//
// Version 1 payloads, written before UID and Route existed, lack those two
// fields; they are still read (Route none, UID made afresh).
//
// A frame cut short by a crash, or one whose checksum fails, ends the file.
const (
	spillOpenExt   = ".open"
	spillSealedExt = ".spill"
	spillVersion   = 2

	// A file is sealed once it holds this many bytes or records, which
	// bounds the transaction it is replayed in.
	maxSpillBytes   = 8 << 20
	maxSpillRecords = 8192
)

var (
	errSpillCorrupt = errors.New("logsink: corrupt spill record")
	crcTable        = crc32.MakeTable(crc32.Castagnoli)
)

const (
	flagHasKey = 1 << iota
	flagStream
	flagChunksCut
	flagRequestScanned
	flagRequestTools
	flagRequestMultimodal
)

// appendSpillFrame appends r as one frame.
func appendSpillFrame(dst []byte, r *Record) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
	var flags byte
	if r.HasKey {
		flags |= flagHasKey
	}
	if r.Stream {
		flags |= flagStream
	}
	if r.ChunksCut {
		flags |= flagChunksCut
	}
	if r.RequestScanned {
		flags |= flagRequestScanned
	}
	if r.RequestTools {
		flags |= flagRequestTools
	}
	if r.RequestMultimodal {
		flags |= flagRequestMultimodal
	}
	dst = append(dst, spillVersion, flags, byte(r.Endpoint))
	dst = binary.LittleEndian.AppendUint64(dst, r.KeyHash)
	dst = append(dst, r.UID[:]...)
	dst = append(dst, byte(r.Route))
	dst = binary.AppendVarint(dst, r.TsMs)
	dst = binary.AppendVarint(dst, int64(r.Status))
	dst = binary.AppendVarint(dst, r.TTFT.Milliseconds())
	dst = binary.AppendVarint(dst, r.Latency.Milliseconds())
	for _, b := range [...][]byte{r.RequestID, r.ClientIP, r.Model, r.ServedModel, r.Upstream,
		r.Tried, r.Error, r.RequestBody, r.ResponseBody, r.Chunks} {
		dst = binary.AppendUvarint(dst, uint64(len(b)))
		dst = append(dst, b...)
	}
	payload := dst[start+8:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32c(payload))
	return dst
}

// nextSpillFrame decodes the first frame of b into r (which must be empty)
// and returns the rest of b. It returns errSpillCorrupt for a cut or damaged
// frame.
func nextSpillFrame(b []byte, r *Record) ([]byte, error) {
	if len(b) < 8 {
		return b, errSpillCorrupt
	}
	n := binary.LittleEndian.Uint32(b)
	sum := binary.LittleEndian.Uint32(b[4:])
	if uint64(n) > uint64(len(b)-8) {
		return b, errSpillCorrupt
	}
	p := b[8 : 8+n]
	if crc32c(p) != sum {
		return b, errSpillCorrupt
	}
	if err := decodeSpillPayload(p, r); err != nil {
		return b, err
	}
	return b[8+n:], nil
}

func decodeSpillPayload(p []byte, r *Record) error {
	if len(p) < 11 || p[0] < 1 || p[0] > spillVersion {
		return errSpillCorrupt
	}
	version := p[0]
	flags := p[1]
	r.HasKey = flags&flagHasKey != 0
	r.Stream = flags&flagStream != 0
	r.ChunksCut = flags&flagChunksCut != 0
	r.RequestScanned = flags&flagRequestScanned != 0
	r.RequestTools = flags&flagRequestTools != 0
	r.RequestMultimodal = flags&flagRequestMultimodal != 0
	r.Endpoint = Endpoint(p[2])
	r.KeyHash = binary.LittleEndian.Uint64(p[3:])
	p = p[11:]
	if version >= 2 {
		if len(p) < len(r.UID)+1 {
			return errSpillCorrupt
		}
		copy(r.UID[:], p)
		r.Route = Route(p[len(r.UID)])
		p = p[len(r.UID)+1:]
	}
	var ints [4]int64
	for i := range ints {
		v, k := binary.Varint(p)
		if k <= 0 {
			return errSpillCorrupt
		}
		ints[i], p = v, p[k:]
	}
	r.TsMs, r.Status = ints[0], int(ints[1])
	r.TTFT, r.Latency = time.Duration(ints[2])*time.Millisecond, time.Duration(ints[3])*time.Millisecond
	for _, f := range [...]*[]byte{&r.RequestID, &r.ClientIP, &r.Model, &r.ServedModel, &r.Upstream,
		&r.Tried, &r.Error, &r.RequestBody, &r.ResponseBody, &r.Chunks} {
		l, k := binary.Uvarint(p)
		if k <= 0 || l > uint64(len(p)-k) {
			return errSpillCorrupt
		}
		p = p[k:]
		*f = append((*f)[:0], p[:l]...)
		p = p[l:]
	}
	if len(p) != 0 {
		return errSpillCorrupt
	}
	return nil
}

// spiller takes the records the queue had no room for. Put only encodes a
// record as a frame into an in-memory buffer under mu (a copy, no system
// call); one goroutine, run, moves the buffer to spill files. While the disk
// refuses, frames wait in memory, at most maxPending bytes of them: past
// that a record is dropped and counted, and serving goes on.
type spiller struct {
	dir        string
	maxPending int64
	log        *slog.Logger

	pend    atomic.Int64  // bytes of frames in memory: buf, held and taken by the writer
	dropped atomic.Uint64 // records refused for want of room
	dropLog throttle.Log
	failLog throttle.Log

	mu     sync.Mutex
	buf    [][]byte // blocks of frames appended by write, not yet taken by the flusher
	free   [][]byte // emptied blocks for reuse
	closed bool     // the Sink is closed: write writes and seals at once

	kick    chan struct{} // wakes run; capacity 1
	quit    chan struct{}
	done    chan struct{}
	started bool // run was started (before any use)

	// ioMu is held while spill files are written or handed over; only
	// the flusher and the writer take it, never the request path.
	ioMu   sync.Mutex
	held   [][]byte // blocks taken from buf that are not yet in a file
	f      *os.File
	name   string // current file, without extension
	size   int
	count  int
	seq    uint64
	sealed []string // sealed files waiting for the writer
}

// Pacing of the flusher while the disk refuses.
const (
	spillRetryMin = 50 * time.Millisecond
	spillRetryMax = 2 * time.Second
)

func newSpiller(dir string, maxPending int64, log *slog.Logger) (*spiller, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create spill dir %s: %w", dir, err)
	}
	return &spiller{
		dir:        dir,
		maxPending: maxPending,
		log:        log,
		kick:       make(chan struct{}, 1),
		quit:       make(chan struct{}),
		done:       make(chan struct{}),
	}, nil
}

// start runs the flusher; close stops it.
func (sp *spiller) start() {
	sp.started = true
	go sp.run()
}

// leftovers lists the spill files already in the folder, oldest first, and
// queues them for the writer. Files of either extension count: a .open file
// belongs to a process that died before sealing it.
func (sp *spiller) leftovers() error {
	ents, err := os.ReadDir(sp.dir)
	if err != nil {
		return fmt.Errorf("cannot read spill dir %s: %w", sp.dir, err)
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if e.Type().IsRegular() && (strings.HasSuffix(n, spillOpenExt) || strings.HasSuffix(n, spillSealedExt)) {
			names = append(names, filepath.Join(sp.dir, n))
		}
	}
	slices.Sort(names) // names start with a fixed-width timestamp
	sp.ioMu.Lock()
	sp.sealed = append(sp.sealed, names...)
	sp.ioMu.Unlock()
	return nil
}

// frameBound is at least the size of r's frame.
func frameBound(r *Record) int64 {
	return int64(8+3+8+len(r.UID)+1+4*binary.MaxVarintLen64+10*binary.MaxVarintLen64+
		len(r.RequestID)+len(r.ClientIP)+len(r.Model)+len(r.ServedModel)+len(r.Upstream)+
		len(r.Tried)+len(r.Error)+len(r.RequestBody)+len(r.ResponseBody)) + int64(len(r.Chunks))
}

// write takes r (and releases it): its frame goes into memory for the
// flusher. It returns false when r was dropped: the frames waiting for a
// refusing disk already fill maxPending.
func (sp *spiller) write(r *Record) bool {
	n := frameBound(r)
	if sp.pend.Load()+n > sp.maxPending {
		ReleaseRecord(r)
		sp.drop(1)
		return false
	}
	sp.mu.Lock()
	k := len(sp.buf) - 1
	if k < 0 || int64(cap(sp.buf[k])-len(sp.buf[k])) < n {
		sp.buf = append(sp.buf, sp.blockLocked(n))
		k++
	}
	before := len(sp.buf[k])
	sp.buf[k] = appendSpillFrame(sp.buf[k], r)
	sp.pend.Add(int64(len(sp.buf[k]) - before))
	closed := sp.closed
	sp.mu.Unlock()
	ReleaseRecord(r)
	if closed {
		// No flusher any more: write it now, so that the next Open
		// finds it.
		sp.flush(true)
		return true
	}
	select {
	case sp.kick <- struct{}{}:
	default:
	}
	return true
}

// drop counts n dropped records and says so at most once per interval.
func (sp *spiller) drop(n int) {
	total := sp.dropped.Add(uint64(n))
	if ok, _ := sp.dropLog.Allow(time.Now(), failLogEvery); ok {
		sp.log.Error("request records dropped: the database and the spill folder refuse writes and memory for them is full",
			"dropped_total", total, "pending_bytes", sp.pend.Load(), "max_pending_bytes", sp.maxPending, "dir", sp.dir)
	}
}

// run moves frames from memory to spill files until close.
func (sp *spiller) run() {
	defer close(sp.done)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	backoff := spillRetryMin
	for {
		select {
		case <-sp.kick:
		case <-retry.C:
		case <-sp.quit:
			return
		}
		if err := sp.flush(false); err != nil {
			if ok, _ := sp.failLog.Allow(time.Now(), failLogEvery); ok {
				sp.log.Error("cannot write spill file; records wait in memory", "err", err,
					"pending_bytes", sp.pend.Load(), "max_pending_bytes", sp.maxPending)
			}
			retry.Reset(backoff)
			backoff = min(backoff*2, spillRetryMax)
			continue
		}
		backoff = spillRetryMin
	}
}

// flush writes every frame in memory to spill files; seal also seals the
// current file. On an error the frames not written stay in memory.
func (sp *spiller) flush(seal bool) error {
	sp.ioMu.Lock()
	defer sp.ioMu.Unlock()
	sp.grabLocked()
	err := sp.writeHeldLocked()
	if seal || sp.closedNow() {
		sp.sealLocked()
	}
	return err
}

func (sp *spiller) closedNow() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.closed
}

// spillBlock is the size of the blocks frames are appended to: a frame
// never moves once written (no growing buffer copied under the lock), and a
// larger frame gets a block of its own.
const (
	spillBlock    = 64 << 10
	maxFreeBlocks = 16
)

// blockLocked returns an empty block with room for n bytes.
func (sp *spiller) blockLocked(n int64) []byte {
	if n <= spillBlock {
		if k := len(sp.free); k > 0 {
			b := sp.free[k-1]
			sp.free = sp.free[:k-1]
			return b
		}
		return make([]byte, 0, spillBlock)
	}
	return make([]byte, 0, n)
}

// recycle keeps an emptied block for reuse.
func (sp *spiller) recycle(b []byte) {
	if cap(b) != spillBlock {
		return
	}
	sp.mu.Lock()
	if len(sp.free) < maxFreeBlocks {
		sp.free = append(sp.free, b[:0])
	}
	sp.mu.Unlock()
}

// grabLocked moves the blocks of buf behind held.
func (sp *spiller) grabLocked() {
	sp.mu.Lock()
	sp.held = append(sp.held, sp.buf...)
	clear(sp.buf)
	sp.buf = sp.buf[:0]
	sp.mu.Unlock()
}

// writeHeldLocked appends the frames in held to spill files, a file taking
// at most maxSpillBytes or maxSpillRecords (or one larger frame), sealed
// when full.
func (sp *spiller) writeHeldLocked() error {
	for len(sp.held) > 0 {
		blk := sp.held[0]
		if len(blk) == 0 {
			sp.recycle(blk[:cap(blk)])
			sp.held[0] = nil
			sp.held = sp.held[1:]
			continue
		}
		if sp.f == nil {
			sp.seq++
			// Fixed-width nanoseconds first so names sort by age.
			sp.name = filepath.Join(sp.dir, fmt.Sprintf("%020d-%d-%d", time.Now().UnixNano(), os.Getpid(), sp.seq))
			f, err := os.OpenFile(sp.name+spillOpenExt, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("cannot create spill file: %w", err)
			}
			sp.f, sp.size, sp.count = f, 0, 0
		}
		// whole frames that fit in this file
		n, k := 0, 0
		for n < len(blk) && sp.count+k < maxSpillRecords {
			l := 8 + int(binary.LittleEndian.Uint32(blk[n:]))
			if sp.size+n+l > maxSpillBytes && sp.size+n > 0 {
				break
			}
			n += l
			k++
		}
		if n > 0 {
			w, err := spillWrite(sp.f, blk[:n])
			if err != nil {
				if w > 0 {
					// A partial frame would end the file at replay:
					// cut it off, or if that fails too, seal the
					// file before it.
					if terr := sp.f.Truncate(int64(sp.size)); terr != nil {
						sp.sealLocked()
					}
				}
				return fmt.Errorf("cannot write spill file %s: %w", sp.name+spillOpenExt, err)
			}
			sp.size += n
			sp.count += k
			sp.held[0] = blk[n:]
			sp.pend.Add(-int64(n))
		}
		if sp.size >= maxSpillBytes || sp.count >= maxSpillRecords || len(sp.held[0]) > 0 {
			sp.sealLocked()
		}
	}
	sp.held = sp.held[:0]
	return nil
}

// sealLocked closes the current file and queues it for the writer.
func (sp *spiller) sealLocked() {
	if sp.f == nil {
		return
	}
	_ = sp.f.Close()
	sp.f = nil
	open, sealed := sp.name+spillOpenExt, sp.name+spillSealedExt
	if err := os.Rename(open, sealed); err != nil {
		sealed = open // replay it under the name it has
	}
	sp.sealed = append(sp.sealed, sealed)
}

// take writes the frames in memory to spill files, seals the current file
// and hands over every sealed file and the frames the disk refused, which
// the writer reads like a file. Frames go to disk first even when the
// flusher has not run yet: the writer may then wait on a locked database
// for a long time, and records it holds only in memory would not outlive
// the process.
func (sp *spiller) take() (files []string, mem [][]byte) {
	sp.ioMu.Lock()
	defer sp.ioMu.Unlock()
	sp.grabLocked()
	_ = sp.writeHeldLocked() // what the disk refuses stays in held
	sp.sealLocked()
	files, mem = sp.sealed, sp.held
	sp.sealed, sp.held = nil, nil
	sp.pend.Add(-blocksLen(mem))
	return files, mem
}

func blocksLen(bs [][]byte) int64 {
	var n int64
	for _, b := range bs {
		n += int64(len(b))
	}
	return n
}

// pending says whether take has anything to hand over.
func (sp *spiller) pending() bool {
	if sp.pend.Load() > 0 {
		return true
	}
	sp.ioMu.Lock()
	defer sp.ioMu.Unlock()
	return sp.f != nil || len(sp.sealed) > 0 || len(sp.held) > 0
}

// putBack returns files and frames the writer could not finish, for a
// later take; the frames go first, as they were taken first.
func (sp *spiller) putBack(files []string, mem [][]byte) {
	sp.ioMu.Lock()
	defer sp.ioMu.Unlock()
	sp.sealed = append(files, sp.sealed...)
	if len(mem) > 0 {
		sp.held = append(mem, sp.held...)
		sp.pend.Add(blocksLen(mem))
	}
}

// close stops the flusher and writes what memory holds to spill files,
// sealed; a later write goes to disk at once. Frames the disk still refuses
// are counted as dropped, and the error says so.
func (sp *spiller) close() error {
	sp.mu.Lock()
	already := sp.closed
	sp.closed = true
	sp.mu.Unlock()
	if !already {
		close(sp.quit)
		if sp.started {
			<-sp.done
		}
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = sp.flush(true); err == nil {
			return nil
		}
		time.Sleep(spillRetryMin << attempt)
	}
	sp.ioMu.Lock()
	n := 0
	for _, b := range sp.held {
		n += countFrames(b)
	}
	sp.pend.Add(-blocksLen(sp.held))
	sp.held = nil
	sp.ioMu.Unlock()
	sp.drop(n)
	return fmt.Errorf("%d request records lost: %w", n, err)
}

// countFrames is the number of frames in b.
func countFrames(b []byte) int {
	n := 0
	for len(b) >= 8 {
		l := 8 + int(binary.LittleEndian.Uint32(b))
		if l > len(b) {
			break
		}
		b = b[l:]
		n++
	}
	return n
}

// badName is where a spill file with a damaged tail is kept for inspection.
func badName(name string) string {
	return strings.TrimSuffix(strings.TrimSuffix(name, spillSealedExt), spillOpenExt) + ".bad-" + strconv.FormatInt(time.Now().Unix(), 10)
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crcTable) }

// spillWrite writes to a spill file; tests and benchmarks replace it with a
// slow or failing disk.
var spillWrite = func(f *os.File, b []byte) (int, error) { return f.Write(b) }
