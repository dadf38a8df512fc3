package main

import "time"

// Calibration. The defaults model one vLLM engine serving
// meta-llama/Llama-3.1-8B-Instruct (BF16) on one NVIDIA A100 40GB, from the
// published concurrency sweep "vLLM throughput-latency sweep on NVIDIA A100"
// (John Musgrave, johnmusgrave.com/p/vllm-throughput-latency-sweep-on;
// vLLM 0.23.0, default scheduling, `vllm bench serve` with 1024 input and
// 128 output tokens, --ignore-eos):
//
//   - decode at one request at a time: about 75 tokens/s, so one step with
//     one sequence takes 1/75 s = 13.33 ms;
//   - at concurrency 8: 6.6x that throughput, 495 tokens/s, so one step with
//     eight sequences takes 8/495 s = 16.16 ms.
//
// A step costs stepBase + decodeSeqs*perSeq when it only decodes, so
// perSeq = (16.16-13.33)/7 = 0.404 ms and stepBase = 12.93 ms: the weights
// read once per step, the rest per sequence.
//
// Two figures the sweep does not state are derived for the same model and
// GPU, and marked so:
//
//   - prefill rate 9,700 tokens/s: the A100's 312 TFLOP/s BF16 peak at 50%
//     utilisation over 2 x 8.03e9 FLOP per token. A step that prefills
//     takes max(stepBase, prefill/rate): the weights are read under the
//     compute, not after it.
//   - KV capacity 147,456 tokens (9,216 blocks of 16): 0.9 x 40 GiB
//     (vLLM's gpu_memory_utilization) less 14.96 GiB of weights and about
//     3 GiB of activations and CUDA graphs leaves 18 GiB, at 128 KiB a
//     token (32 layers x K and V x 8 KV heads x 128 dims x 2 bytes).
//
// The context limit is Llama 3.1's 131,072 tokens; the step budget and the
// batch limit are vLLM's defaults (max_num_batched_tokens 8192 with chunked
// prefill, max_num_seqs 256).
const (
	defaultStepBase    = 12930 * time.Microsecond
	defaultPerSeq      = 404 * time.Microsecond
	defaultPrefillRate = 9700.0
	defaultKVTokens    = 147456
	defaultMaxModelLen = 131072
	defaultStepTokens  = 8192
	defaultMaxSeqs     = 256
	defaultModel       = "meta-llama/Llama-3.1-8B-Instruct"
)

// Block geometry of the simulated prefix cache: vLLM's 16-token blocks over
// prompt text at about 4 bytes a token. Nothing here matches gptapi's own
// prefix index, on purpose.
const (
	blockTokens   = 16
	bytesPerToken = 4
	blockBytes    = blockTokens * bytesPerToken
)

// costModel is what one engine step costs in simulated time.
type costModel struct {
	StepBase    time.Duration // a step's floor: the weights read once
	PerSeq      time.Duration // added per decoding sequence
	PrefillRate float64       // prefill tokens per simulated second
}

// step is the duration of a step that prefills prefill tokens and decodes
// one token for each of decodes sequences.
func (c *costModel) step(prefill, decodes int) time.Duration {
	d := c.StepBase
	if prefill > 0 {
		d = max(d, time.Duration(float64(prefill)/c.PrefillRate*float64(time.Second)))
	}
	return d + time.Duration(decodes)*c.PerSeq
}

// Config is one engine's shape. defaultConfig gives the calibrated one.
type Config struct {
	Cost        costModel
	KVTokens    int // KV pool size in tokens, rounded down to whole blocks
	MaxModelLen int // prompt + max_tokens limit; larger requests get 400
	StepTokens  int // token budget of one step
	MaxSeqs     int // most running requests
	Model       string
	Seed        uint64 // picks the answer text
}

func defaultConfig() Config {
	return Config{
		Cost:        costModel{StepBase: defaultStepBase, PerSeq: defaultPerSeq, PrefillRate: defaultPrefillRate},
		KVTokens:    defaultKVTokens,
		MaxModelLen: defaultMaxModelLen,
		StepTokens:  defaultStepTokens,
		MaxSeqs:     defaultMaxSeqs,
		Model:       defaultModel,
	}
}
