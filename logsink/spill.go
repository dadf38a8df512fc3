package logsink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
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
//	u64 KeyHash | [16]byte UID | byte Route | varint TsMs, Status, TTFTMs, LatencyMs |
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
	dst = binary.AppendVarint(dst, r.TTFTMs)
	dst = binary.AppendVarint(dst, r.LatencyMs)
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
	r.TsMs, r.Status, r.TTFTMs, r.LatencyMs = ints[0], int(ints[1]), ints[2], ints[3]
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

// spiller appends records to the current spill file. Its mutex is taken only
// on the overload path, when the queue is full.
type spiller struct {
	dir string

	mu     sync.Mutex
	f      *os.File
	name   string // current file, without extension
	size   int
	count  int
	seq    uint64
	buf    []byte
	sealed []string  // sealed files waiting for the writer
	closed bool      // the Sink is closed: seal after every record
	lost   []*Record // records the disk refused, for the writer
}

func newSpiller(dir string) (*spiller, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create spill dir %s: %w", dir, err)
	}
	return &spiller{dir: dir}, nil
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
	sp.mu.Lock()
	sp.sealed = append(sp.sealed, names...)
	sp.mu.Unlock()
	return nil
}

// write appends r to the current file, creating or sealing files as needed.
// When the disk refuses, r is kept in memory for the writer, so that it is
// still not lost; the error is returned for the log.
func (sp *spiller) write(r *Record) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	err := sp.writeLocked(r)
	if err != nil {
		sp.lost = append(sp.lost, r)
		return err
	}
	ReleaseRecord(r)
	if sp.closed || sp.size >= maxSpillBytes || sp.count >= maxSpillRecords {
		sp.sealLocked()
	}
	return nil
}

func (sp *spiller) writeLocked(r *Record) error {
	if sp.f == nil {
		sp.seq++
		// Fixed-width nanoseconds first so names sort by age.
		sp.name = filepath.Join(sp.dir, fmt.Sprintf("%020d-%d-%d", time.Now().UnixNano(), os.Getpid(), sp.seq))
		f, err := os.OpenFile(sp.name+spillOpenExt, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("cannot create spill file: %w", err)
		}
		sp.f, sp.size, sp.count = f, 0, 0
	}
	sp.buf = appendSpillFrame(sp.buf[:0], r)
	n, err := spillWrite(sp.f, sp.buf)
	sp.size += n
	if err != nil {
		if n > 0 {
			// A partial frame would end the file at replay: cut it
			// off, or if that fails too, seal the file before it.
			if terr := sp.f.Truncate(int64(sp.size - n)); terr == nil {
				sp.size -= n
			} else {
				sp.sealLocked()
			}
		}
		return fmt.Errorf("cannot write spill file %s: %w", sp.name+spillOpenExt, err)
	}
	sp.count++
	if cap(sp.buf) > 1<<20 {
		sp.buf = nil
	}
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

// take seals the current file and hands over every sealed file and every
// record kept in memory.
func (sp *spiller) take() (files []string, mem []*Record) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.sealLocked()
	files, mem = sp.sealed, sp.lost
	sp.sealed, sp.lost = nil, nil
	return files, mem
}

// pending says whether take has anything to hand over.
func (sp *spiller) pending() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.f != nil || len(sp.sealed) > 0 || len(sp.lost) > 0
}

// putBack returns files and records the writer could not finish, for a later
// take.
func (sp *spiller) putBack(files []string, mem []*Record) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.sealed = append(files, sp.sealed...)
	sp.lost = append(mem, sp.lost...)
}

// close makes every later write seal its file at once, so no file stays
// open once the Sink is closed; a later Open replays them.
func (sp *spiller) close() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.closed = true
	sp.sealLocked()
}

// badName is where a spill file with a damaged tail is kept for inspection.
func badName(name string) string {
	return strings.TrimSuffix(strings.TrimSuffix(name, spillSealedExt), spillOpenExt) + ".bad-" + strconv.FormatInt(time.Now().Unix(), 10)
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crcTable) }

// spillWrite writes to a spill file; tests and benchmarks replace it with a
// slow or failing disk.
var spillWrite = func(f *os.File, b []byte) (int, error) { return f.Write(b) }
