package selector

import (
	"math"

	"github.com/zeebo/xxh3"
)

// MaxPromptBlocks is how many blocks of a prompt are keyed. Past it a prompt
// is not hashed further: two prompts equal over their first MaxPromptBlocks
// blocks route alike, and a 16 MB body costs no more than a 1 MB one.
const MaxPromptBlocks = 1024

// Salts keep the placement key and the conversation entry of the index apart
// from block keys computed over the same bytes.
const (
	placeSalt = 0x9e3779b97f4a7c15
	convSalt  = 0xc2b2ae3d27d4eb4f
)

// Prompt cuts a prompt, written to it in order, into blocks of BlockBytes and
// keys each block by hashing it with xxh3 seeded by the previous block's key:
// a block's key stands for the whole prompt up to its end, so two prompts
// share a key exactly when they share every byte up to it. A last partial
// block is keyed too (its length makes it differ from a full block).
//
// It also computes the placement key, the hash of the leading part of the
// prompt that identifies a conversation: by default the first KeyBytes bytes;
// when Reset was told the prompt is marked, everything up to StartKey plus up
// to KeyBytes more, ended early by EndKey. Chat requests call StartKey at the first user message's content
// and EndKey after it, so the key covers the system prompt and the first user
// message (at most KeyBytes of it), which every later turn repeats.
//
// Keys are the same on every platform and every run: xxh3 is specified on
// bytes, little-endian, whatever the CPU.
//
// A Prompt is reused: Reset, Add..., Finish. Add does not allocate; the block
// buffer and key array are allocated once, by the first Reset.
type Prompt struct {
	block    int // block size in bytes
	keyBytes int
	buf      []byte // bytes since the last block boundary; cap block
	keys     []uint64
	prev     uint64 // key of the last full block; 0 before the first
	off      int    // bytes written
	keyCap   int    // the placement key ends here at the latest
	keyEnd   int    // -1 until the placement key is fixed
	started  bool   // StartKey was called
	place    uint64
	partial  bool // the last key is of a partial block
}

// Reset prepares p for a new prompt with the given block size and placement
// key length (both at least 1). With marked, the placement key is not cut at
// KeyBytes from the start: StartKey will say where its last part begins
// (chat requests), and without a StartKey it covers the whole prompt.
func (p *Prompt) Reset(blockBytes, keyBytes int, marked bool) {
	if blockBytes < 1 || keyBytes < 1 {
		panic("BUG: selector.Prompt.Reset with a size below 1")
	}
	if cap(p.buf) < blockBytes {
		p.buf = make([]byte, 0, blockBytes)
	}
	if p.keys == nil {
		p.keys = make([]uint64, 0, MaxPromptBlocks)
	}
	p.block, p.keyBytes = blockBytes, keyBytes
	p.buf, p.keys = p.buf[:0], p.keys[:0]
	p.prev, p.off, p.place = 0, 0, 0
	p.keyCap, p.keyEnd = keyBytes, -1
	if marked {
		p.keyCap = math.MaxInt
	}
	p.started, p.partial = false, false
}

// Add appends b to the prompt.
func (p *Prompt) Add(b []byte) { add(p, b) }

// AddString appends s to the prompt.
func (p *Prompt) AddString(s string) { add(p, s) }

// add is Add for either form of bytes, so strings are hashed where they
// are, without a copy or a view through unsafe.
func add[T string | []byte](p *Prompt, b T) {
	for len(b) > 0 {
		if len(p.keys) == cap(p.keys) {
			p.off += len(b) // past MaxPromptBlocks: count, don't hash
			return
		}
		n := len(b)
		if p.keyEnd < 0 && p.off+n > p.keyCap {
			n = p.keyCap - p.off
		}
		if len(p.buf) == 0 && n >= p.block {
			// A whole block straight from b: no copy.
			p.keyBlock(hashSeed(b[:p.block], p.prev))
			b = b[p.block:]
			p.off += p.block
		} else {
			n = min(n, p.block-len(p.buf))
			p.buf = append(p.buf, b[:n]...)
			b = b[n:]
			p.off += n
			if len(p.buf) == p.block {
				p.keyBlock(xxh3.HashSeed(p.buf, p.prev))
				p.buf = p.buf[:0]
			}
		}
		if p.keyEnd < 0 && p.off == p.keyCap {
			p.fixKey()
		}
	}
}

// keyBlock records the key of the block just hashed.
func (p *Prompt) keyBlock(key uint64) {
	p.prev = key
	p.keys = append(p.keys, key)
}

func hashSeed[T string | []byte](b T, seed uint64) uint64 {
	if s, ok := any(b).(string); ok {
		return xxh3.HashStringSeed(s, seed)
	}
	return xxh3.HashSeed([]byte(b), seed)
}

// StartKey marks where the placement key's last part starts: it ends at most
// KeyBytes later. Only the first call counts, and none after the key is fixed.
func (p *Prompt) StartKey() {
	if p.started || p.keyEnd >= 0 {
		return
	}
	p.started = true
	p.keyCap = p.off + p.keyBytes
}

// EndKey ends the placement key here, if it is not fixed yet.
func (p *Prompt) EndKey() {
	if p.keyEnd < 0 {
		p.fixKey()
	}
}

// fixKey computes the placement key over everything written so far: the
// full blocks (through their chained key) and the partial block in buf.
func (p *Prompt) fixKey() {
	p.keyEnd = p.off
	p.place = xxh3.HashSeed(p.buf, p.prev^placeSalt)
}

// Finish keys the last partial block and fixes the placement key if nothing
// did before.
func (p *Prompt) Finish() {
	if p.keyEnd < 0 {
		p.fixKey()
	}
	if len(p.buf) > 0 && len(p.keys) < cap(p.keys) {
		p.keys = append(p.keys, xxh3.HashSeed(p.buf, p.prev))
		p.partial = true
	}
}

// Keys returns the block keys, valid until the next Reset.
func (p *Prompt) Keys() []uint64 { return p.keys }

// Placement returns the placement key.
func (p *Prompt) Placement() uint64 { return p.place }

// Len returns the prompt's length in bytes.
func (p *Prompt) Len() int { return p.off }

// KeyLen returns the length of the leading part the placement key covers.
func (p *Prompt) KeyLen() int { return p.keyEnd }

// firstPastKey returns the index of the first block that ends past the
// placement key, or -1 if none does: only a match reaching past the key can
// bind a prompt to an upstream, since placement already treats alike every
// prompt that shares the key.
func (p *Prompt) firstPastKey() int {
	j := p.keyEnd / p.block
	if j >= len(p.keys) {
		return -1
	}
	end := (j + 1) * p.block
	if p.partial && j == len(p.keys)-1 {
		end = p.off
	}
	if end <= p.keyEnd {
		return -1
	}
	return j
}
