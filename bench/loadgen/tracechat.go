package loadgen

import "strconv"

// BlockTokens is the tokens of one block id of a Mooncake trace.
const BlockTokens = 512

// turnEvery: on average, a chat message of a replayed trace ends after one
// block in turnEvery (see AppendTraceChat).
const turnEvery = 4

// AppendTraceChat appends the body of a streamed chat request for tr:
// model, the messages, max_tokens = tr.Output and stream_options asking
// for usage.
//
// The prompt is built from the block ids alone, so the same line always
// gives the same bytes and two requests sharing leading ids share that
// prompt prefix. Each id stands for a fixed text of about 512 tokens
// (BlockTokens words of 3 letters and a space, 4 bytes a token, picked by
// the id); the last block is cut to the request's input_length. The first
// block is the system message (in the Mooncake traces, block 0 is the
// system prompt nearly every request shares). The others are split into
// turns, user and assistant in alternation starting with the user: a turn
// ends after a block whose id says so (one in turnEvery, fixed per id).
// Since where a turn ends depends only on the ids before it, a later turn
// of a conversation, whose ids extend an earlier request's, gets the
// earlier request's messages and more: a prefix extension of its chat, as
// a real follow-up is, up to the earlier request's last block.
func AppendTraceChat(dst []byte, tr *TraceRequest, model string) []byte {
	dst = append(dst, `{"model":`...)
	dst = strconv.AppendQuote(dst, model)
	dst = append(dst, `,"messages":[{"role":"system","content":"`...)
	last := len(tr.Blocks) - 1
	tokens := func(i int) int {
		if i < last {
			return BlockTokens
		}
		return max(1, tr.Input-last*BlockTokens)
	}
	dst = appendBlockText(dst, tr.Blocks[0], tokens(0))
	dst = append(dst, `"}`...)
	user := true
	open := false
	for i := 1; i <= last; i++ {
		id := tr.Blocks[i]
		if !open {
			role := "assistant"
			if user {
				role = "user"
			}
			dst = append(dst, `,{"role":"`...)
			dst = append(dst, role...)
			dst = append(dst, `","content":"`...)
			open = true
		} else {
			dst = append(dst, ' ')
		}
		dst = appendBlockText(dst, id, tokens(i))
		if mix(uint64(id)^0x7475726e)%turnEvery == 0 || i == last {
			dst = append(dst, `"}`...)
			open = false
			user = !user
		}
	}
	dst = append(dst, `],"max_tokens":`...)
	dst = strconv.AppendInt(dst, int64(tr.Output), 10)
	return append(dst, `,"stream":true,"stream_options":{"include_usage":true}}`...)
}

// appendBlockText appends the first tokens words of block id's text, words
// separated by single spaces, nothing to escape in JSON.
func appendBlockText(dst []byte, id int64, tokens int) []byte {
	for j := range tokens {
		if j > 0 {
			dst = append(dst, ' ')
		}
		x := mix(uint64(id)*0x100000001b3 + uint64(j))
		dst = append(dst, byte('a'+x%26), byte('a'+(x>>8)%26), byte('a'+(x>>16)%26))
	}
	return dst
}

// mix is splitmix64's finaliser.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
