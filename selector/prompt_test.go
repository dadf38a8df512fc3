package selector

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
)

// text returns n bytes that differ from block to block, the same every run.
func text(seed, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed*2654435761 + 1)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = 'a' + byte(x%26)
	}
	return b
}

func promptOf(block, keyBytes int, parts ...[]byte) *Prompt {
	p := new(Prompt)
	p.Reset(block, keyBytes, false)
	for _, b := range parts {
		p.Add(b)
	}
	p.Finish()
	return p
}

// TestPromptKeysFixed pins the keys: a change of the hash, of the chaining or
// of the block cut would move every prompt in a running fleet to a new
// upstream, and two gateways of different versions or architectures (the
// arm64 run of make test executes this too) would disagree.
func TestPromptKeysFixed(t *testing.T) {
	f := func(in string, block int, want []uint64, wantPlace uint64) {
		t.Helper()
		p := promptOf(block, 8, []byte(in))
		if !slices.Equal(p.Keys(), want) || p.Placement() != wantPlace {
			t.Errorf("keys of %q by %d = %#x place %#x, want %#x place %#x", in, block, p.Keys(), p.Placement(), want, wantPlace)
		}
	}
	f("", 4, nil, 0x602b0e2cd6662c8b)
	// the first block with seed 0 is plain XXH3-64: XXH3("abc") is the
	// reference implementation's 0x78af5f94892f3950
	f("abc", 4, []uint64{0x78af5f94892f3950}, 0xfc1ae99bb3de2336)
	f("abcd", 4, []uint64{0x6497a96f53a89890}, 0xef6d1e9afcecaf94)
	f("user\x1ehello world, this is a prompt\x1f", 16,
		[]uint64{0xfbed61ec8f24cc61, 0xaf3c58f0f28bc4ce, 0x948da9d36b189b93}, 0x44bcbc96cfa06246)
	// blocks over 240 bytes take xxh3's vector path (AVX2, SSE2, NEON or
	// scalar by CPU): every one must give these
	big := promptOf(1024, 2048, text(11, 3000))
	if want := []uint64{0xedc1fd13950bdaa0, 0x53f4e89407e91aa, 0x366a61b06c92777a}; !slices.Equal(big.Keys(), want) ||
		big.Placement() != 0x463bd07472468a0d {
		t.Errorf("keys of 3000 bytes by 1024 = %#x place %#x, want %#x place 0x463bd07472468a0d", big.Keys(), big.Placement(), want)
	}
}

// The keys depend on the bytes only, not on how they were written.
func TestPromptKeysIndependentOfWrites(t *testing.T) {
	whole := text(1, 10_000)
	ref := promptOf(1024, 4096, whole)
	for _, step := range []int{1, 7, 1000, 1024, 1025, 3000} {
		p := new(Prompt)
		p.Reset(1024, 4096, false)
		for b := whole; len(b) > 0; {
			n := min(step, len(b))
			p.Add(b[:n])
			b = b[n:]
		}
		p.Finish()
		if !slices.Equal(p.Keys(), ref.Keys()) || p.Placement() != ref.Placement() || p.Len() != len(whole) {
			t.Fatalf("writes of %d bytes: keys or placement differ from one write", step)
		}
	}
	if n := len(ref.Keys()); n != 10 {
		t.Fatalf("10000 bytes by 1024 gave %d keys, want 9 full + 1 partial", n)
	}
}

// Two prompts share exactly the keys of the blocks they share in full.
func TestPromptKeysSharedPrefix(t *testing.T) {
	a := text(2, 5000)
	b := append(slices.Clone(a[:3000]), text(3, 2000)...)
	pa, pb := promptOf(1000, 100, a), promptOf(1000, 100, b)
	ka, kb := pa.Keys(), pb.Keys()
	for i := range 5 {
		if (ka[i] == kb[i]) != (i < 3) {
			t.Fatalf("block %d: shared=%v, want %v", i, ka[i] == kb[i], i < 3)
		}
	}
	// a partial last block never equals the full block at its place
	pc := promptOf(1000, 100, a[:4500])
	if pc.Keys()[4] == ka[4] || pc.Keys()[3] != ka[3] {
		t.Fatal("a partial block's key equals the full one, or the full ones differ")
	}
}

func TestPromptPlacementKey(t *testing.T) {
	sys := text(4, 3000)
	user1 := text(5, 500)
	chat := func(user []byte, more ...[]byte) *Prompt {
		p := new(Prompt)
		p.Reset(1024, 2048, true)
		p.AddString("system\x1e")
		p.Add(sys)
		p.AddString("\x1fuser\x1e")
		p.StartKey()
		p.Add(user)
		p.EndKey()
		p.AddString("\x1f")
		for _, m := range more {
			p.Add(m)
		}
		p.Finish()
		return p
	}
	turn1 := chat(user1)
	turn2 := chat(user1, []byte("assistant\x1e"), text(6, 800), []byte("\x1fuser\x1e"), text(7, 300))
	other := chat(text(8, 500))
	if turn1.Placement() != turn2.Placement() {
		t.Error("turn 2 has another placement key than turn 1")
	}
	if turn1.Placement() == other.Placement() {
		t.Error("a conversation sharing only the system prompt has the same placement key")
	}
	if turn1.KeyLen() != len("system\x1e")+len(sys)+len("\x1fuser\x1e")+len(user1) {
		t.Errorf("key covers %d bytes, want through the first user message", turn1.KeyLen())
	}
	// a long first user message: the key stops KeyBytes into it
	long := text(9, 10_000)
	l1, l2 := chat(long[:6000]), chat(long)
	if l1.Placement() != l2.Placement() || l1.KeyLen() != len("system\x1e")+len(sys)+len("\x1fuser\x1e")+2048 {
		t.Errorf("capped key: same=%v len=%d", l1.Placement() == l2.Placement(), l1.KeyLen())
	}
	// no StartKey (completions, embeddings): the first KeyBytes bytes
	a, b := promptOf(1024, 2048, long[:3000]), promptOf(1024, 2048, long)
	if a.Placement() != b.Placement() || a.KeyLen() != 2048 {
		t.Errorf("plain key: same=%v len=%d", a.Placement() == b.Placement(), a.KeyLen())
	}
}

func TestPromptFirstPastKey(t *testing.T) {
	f := func(n, block, keyBytes, want int) {
		t.Helper()
		p := promptOf(block, keyBytes, text(10, n))
		if got := p.firstPastKey(); got != want {
			t.Errorf("firstPastKey(len %d, block %d, key %d) = %d, want %d", n, block, keyBytes, got, want)
		}
	}
	f(100, 10, 100, -1) // the key is the whole prompt
	f(100, 10, 95, 9)   // the last full block reaches past it
	f(100, 10, 90, 9)   // a block starting at the key's end
	f(105, 10, 100, 10) // only the partial block does
	f(105, 10, 103, 10)
	f(105, 10, 105, -1)
	f(10, 10, 1, 0)
	f(0, 10, 1, -1)
}

// Past MaxPromptBlocks a prompt is counted, not hashed.
func TestPromptHugeIsBounded(t *testing.T) {
	big := bytes.Repeat([]byte("x"), (MaxPromptBlocks+10)*64)
	p := promptOf(64, 128, big)
	if len(p.Keys()) != MaxPromptBlocks || p.Len() != len(big) {
		t.Fatalf("keys %d len %d, want %d and %d", len(p.Keys()), p.Len(), MaxPromptBlocks, len(big))
	}
}

func ExamplePrompt() {
	var p Prompt
	p.Reset(1024, 4096, true)
	p.AddString("system\x1eYou are helpful.\x1f")
	p.AddString("user\x1e")
	p.StartKey()
	p.AddString("Hello")
	p.EndKey()
	p.AddString("\x1f")
	p.Finish()
	fmt.Println(len(p.Keys()), p.KeyLen(), p.Len())
	// Output: 1 34 35
}
