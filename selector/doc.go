// Package selector owns routing decisions: which configured upstreams match a
// model, in which order to try them, and each upstream's passive health.
//
// Matching is exact (case-sensitive equality) or keyword (ASCII
// case-insensitive substring); any one of an upstream's values is enough.
//
// Weighted upstreams are ordered by weighted random sampling without
// replacement, algorithm A-Res of P. S. Efraimidis and P. G. Spirakis,
// "Weighted random sampling with a reservoir", Information Processing
// Letters 97(5), 2006: each item draws u uniform in (0,1] and gets the key
// u^(1/w); sorting by key, highest first, yields a sample in which item i is
// first with probability w_i/Σw, and each later position follows the same rule
// over the items left. The keys are compared as log(u)/w, which orders the
// same way and avoids math.Pow. Standby upstreams (priority 0) follow every
// weighted one in config order, and upstreams in cooldown go after all others,
// ordered among themselves by the same rules, so that a request still has
// somewhere to go when everything is cooling.
//
// Route orders candidates as Order does and then lets the table's strategy
// (SPEC §4.7) pick which of the weighted candidates not in cooldown goes
// first: Weighted keeps A-Res; LeastLoaded takes the least loaded (Load:
// requests in flight plus the upstream's queue read from its metrics, over
// priority; ties by A-Res); Prefix takes the upstream that served the
// longest leading part of the prompt (Prompt cuts it into xxh3-chained
// block keys, Index remembers in bounded memory who served each), unless
// it is overloaded next to the least loaded, and places prompts it knows
// nothing binding about by weighted rendezvous hashing of their placement
// key (D. G. Thaler and C. V. Ravishankar, "Using name-based mappings to
// increase hit rates", IEEE/ACM ToN 6(1), 1998, with weights as in A-Res),
// so that every gateway with the same config agrees.
//
// Health counts consecutive failures and holds the cooldown deadline in
// atomics; the proxy keeps one Health per client name across config reloads.
//
// A Table is immutable after New and safe for concurrent use. Match and Order
// do not allocate for up to 64 candidates; randomness comes from the
// math/rand/v2 top-level functions, which are lock-free.
//
// The package knows nothing of HTTP or of the config format.
package selector
