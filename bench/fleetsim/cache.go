package main

// kvPool is an engine's KV memory: a fixed number of blocks, each holding
// blockTokens tokens of one request. A block whose tokens are a computed
// prompt block carries that block's chain hash and can be found again by it
// (the prefix cache). Blocks no request holds wait in a free queue, least
// recently freed first; allocating takes the head of that queue and drops
// its hash, so cached blocks are evicted least recently used, as in vLLM's
// free block queue. The pool never grows: the number of blocks is the
// hard memory limit.
type kvPool struct {
	blocks []block
	byHash map[uint64]int32 // chain hash -> block; only blocks with hashed set
	head   int32            // free queue, -1 when empty
	tail   int32
	free   int // blocks in the free queue, cached ones included
}

type block struct {
	hash       uint64
	hashed     bool
	ref        int32 // requests holding it; 0 means it is in the free queue
	prev, next int32 // free queue links
}

func newKVPool(n int) *kvPool {
	p := &kvPool{blocks: make([]block, n), byHash: make(map[uint64]int32, n), head: -1, tail: -1}
	for i := range p.blocks {
		p.blocks[i].prev, p.blocks[i].next = -1, -1
		p.pushTail(int32(i))
	}
	return p
}

func (p *kvPool) size() int { return len(p.blocks) }

// used is the share of blocks held by requests, vLLM's kv_cache_usage_perc.
func (p *kvPool) used() float64 {
	if len(p.blocks) == 0 {
		return 0
	}
	return float64(len(p.blocks)-p.free) / float64(len(p.blocks))
}

// match is how many leading hashes of chain are cached. It changes nothing.
func (p *kvPool) match(chain []uint64) int {
	for i, h := range chain {
		if _, ok := p.byHash[h]; !ok {
			return i
		}
	}
	return len(chain)
}

// freeAfterPin is how many blocks would stay free if the first n blocks of
// chain (cached) were taken by a request.
func (p *kvPool) freeAfterPin(chain []uint64, n int) int {
	f := p.free
	for _, h := range chain[:n] {
		if p.blocks[p.byHash[h]].ref == 0 {
			f--
		}
	}
	return f
}

// pin takes the cached blocks of the first n hashes of chain for a request
// and appends them to dst.
func (p *kvPool) pin(dst []int32, chain []uint64, n int) []int32 {
	for _, h := range chain[:n] {
		b := p.byHash[h]
		if p.blocks[b].ref == 0 {
			p.unlink(b)
		}
		p.blocks[b].ref++
		dst = append(dst, b)
	}
	return dst
}

// alloc takes a free block, evicting what it cached, and appends it to dst;
// ok is false when none is free.
func (p *kvPool) alloc(dst []int32) (_ []int32, ok bool) {
	b := p.head
	if b < 0 {
		return dst, false
	}
	p.unlink(b)
	blk := &p.blocks[b]
	if blk.hashed {
		delete(p.byHash, blk.hash)
		blk.hashed = false
	}
	blk.ref = 1
	return append(dst, b), true
}

// remember marks block b as holding the computed prompt block with chain
// hash h. When another block already holds h (two requests computed it at
// once), b stays anonymous.
func (p *kvPool) remember(b int32, h uint64) {
	if _, ok := p.byHash[h]; ok {
		return
	}
	p.blocks[b].hash, p.blocks[b].hashed = h, true
	p.byHash[h] = b
}

// release gives back a request's blocks, last first, so that the tail of a
// prompt is evicted before its head, which other prompts more likely share.
func (p *kvPool) release(bs []int32) {
	for i := len(bs) - 1; i >= 0; i-- {
		b := bs[i]
		p.blocks[b].ref--
		switch {
		case p.blocks[b].ref == 0:
			p.pushTail(b)
		case p.blocks[b].ref < 0:
			panic("BUG: fleetsim: block released twice")
		}
	}
}

func (p *kvPool) pushTail(b int32) {
	blk := &p.blocks[b]
	blk.prev, blk.next = p.tail, -1
	if p.tail >= 0 {
		p.blocks[p.tail].next = b
	} else {
		p.head = b
	}
	p.tail = b
	p.free++
}

func (p *kvPool) unlink(b int32) {
	blk := &p.blocks[b]
	if blk.prev >= 0 {
		p.blocks[blk.prev].next = blk.next
	} else {
		p.head = blk.next
	}
	if blk.next >= 0 {
		p.blocks[blk.next].prev = blk.prev
	} else {
		p.tail = blk.prev
	}
	blk.prev, blk.next = -1, -1
	p.free--
}
